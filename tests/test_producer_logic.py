"""The reading generator and message format, without a broker."""

from __future__ import annotations

import io
import itertools
import json
import logging
import random
import sys
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from sensor_lib.metrics import producer_metrics
from sensor_lib.producing import DeliveryReport
from sensor_lib.progress import ProgressLine, make_progress
from sensor_stream_producer import MAX_DRIFT, generate_readings, make_reading, make_sensors


def test_sensors_are_named_and_visited_in_turn() -> None:
    first = list(itertools.islice(generate_readings(3, random.Random(1)), 7))
    assert [sensor for sensor, _ in first] == [
        "Sensor1",
        "Sensor2",
        "Sensor3",
        "Sensor1",
        "Sensor2",
        "Sensor3",
        "Sensor1",
    ]


def test_same_seed_same_stream() -> None:
    a = list(itertools.islice(generate_readings(4, random.Random(42)), 100))
    b = list(itertools.islice(generate_readings(4, random.Random(42)), 100))
    c = list(itertools.islice(generate_readings(4, random.Random(43)), 100))
    assert a == b
    assert a != c


def test_each_sensor_walks_near_its_own_base() -> None:
    rng = random.Random(7)
    bases = {s.sensor_id: s.base for s in make_sensors(5, random.Random(7))}
    values: dict[str, list[float]] = {sensor: [] for sensor in bases}
    for sensor, value in itertools.islice(generate_readings(5, rng), 50_000):
        values[sensor].append(value)
    for sensor, series in values.items():
        assert all(abs(v - bases[sensor]) <= MAX_DRIFT + 0.005 for v in series)
        steps = [abs(b - a) for a, b in itertools.pairwise(series)]
        # A random walk moves a little each time; uniform noise would jump around.
        assert max(steps) < 1.0
        assert len(set(series)) > 50


def test_reading_is_one_json_object_with_utc_time() -> None:
    moment = datetime(2026, 11, 26, 4, 2, 49, 123456, tzinfo=UTC)
    payload = make_reading(moment, 21.37)
    assert json.loads(payload) == {"ts": "2026-11-26T04:02:49.123456+00:00", "value": 21.37}


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stderr", "quiet", "shown"),
    [(FakeTerminal, False, True), (FakeTerminal, True, False), (io.StringIO, False, False)],
    ids=["terminal", "quiet", "not-a-terminal"],
)
def test_progress_shows_only_on_a_terminal_and_not_when_quiet(
    monkeypatch: pytest.MonkeyPatch, stderr: type[io.StringIO], quiet: bool, shown: bool
) -> None:
    monkeypatch.setattr(sys, "stderr", stderr())
    with make_progress(10, quiet) as progress:
        task = progress.add_task("readings", total=10, deliveries="delivered 4")
        progress.update(task, completed=4)
    printed = sys.stderr.getvalue()
    assert ("4/10" in printed and "/s" in printed and "delivered 4" in printed) == shown


def test_the_rate_shown_is_the_last_seconds_not_the_average_since_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 600 readings of history in the first second, then 20/s for 30 s. The rate shows
    # the burst while it is in the last 5 s, then 20/s; an average since the start
    # would still show 39/s at the end.
    monkeypatch.setattr(sys, "stderr", FakeTerminal())
    clock = [0.0]
    shown = []
    with make_progress(0, quiet=False) as progress:
        progress.get_time = lambda: clock[0]
        task = progress.add_task("readings", total=None, deliveries="")
        produced = 0
        for tick in range(1, 31 * 20 + 1):
            clock[0] = tick / 20
            produced += 600 // 20 if tick <= 20 else 1
            progress.update(task, completed=produced)
            if tick % 100 == 0:  # what the line shows: its columns, rendered
                line = " ".join(
                    str(column.render(progress.tasks[0])) for column in progress.columns
                )
                shown.extend(word for word in line.split() if word.endswith("/s"))
    assert shown == ["131/s", "20/s", "20/s", "20/s", "20/s", "20/s"]


def test_the_rate_metric_is_the_rate_of_the_last_seconds_the_progress_line_shows() -> None:
    # 40 readings/s for 5 s, then 10/s for 5 s, on a fake clock: the gauge reads rich's
    # estimate over the last 5 s (10/s; the average since the start is 25/s), and the
    # totals read the delivery reports.
    delivered = DeliveryReport(logging.getLogger("test"))
    sensors = SimpleNamespace(produced=0, readings=delivered, watermarks=DeliveryReport(None))
    line = ProgressLine(0, quiet=True)
    clock = [0.0]
    line.progress.get_time = lambda: clock[0]
    collect = producer_metrics(sensors, line)
    for tick in range(1, 201):
        clock[0] = tick / 20
        sensors.produced += 2 if tick <= 100 else tick % 2
        delivered.delivered = sensors.produced - 1
        line.show(sensors.produced, delivered, now=True)
    found = {m.name: m.samples[0].value for m in collect()}
    assert found == {
        "sensor_producer_readings": 250,
        "sensor_producer_readings_delivered": 249,
        "sensor_producer_delivery_failures": 0,
        "sensor_producer_watermarks": 0,
        "sensor_producer_rate_readings_per_second": pytest.approx(10.0, rel=0.05),
    }
