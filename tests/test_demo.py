"""`make demo` as a new user runs it, bounded by DURATION, against the test broker."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
AGGREGATE_LINE = re.compile(r"^(Sensor\d+) \d\d:\d\d:\d\d-\d\d:\d\d:\d\d count=\d+ ")


@pytest.mark.integration
def test_make_demo_stops_by_itself_and_shows_every_sensor(
    broker_address: str, names, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "BROKER_ADDRESS": broker_address,
        "RAW_TOPIC": names.raw,
        "AGG_TOPIC": names.agg,
        "CONSUMER_GROUP": names.group,
        "DEMO_LOG_DIR": str(tmp_path),
    }
    result = subprocess.run(
        ["make", "demo", "DURATION=20"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Not a terminal here, so the viewer prints one plain line per aggregate.
    sensors = {
        m.group(1) for line in result.stdout.splitlines() if (m := AGGREGATE_LINE.match(line))
    }
    assert sensors == {"Sensor1", "Sensor2", "Sensor3", "Sensor4", "Sensor5"}
    assert f"using the broker at {broker_address}" in result.stderr
    assert "demo: stopped cleanly" in result.stderr
    assert "Final summary: processed=" in (tmp_path / "processor.log").read_text()
