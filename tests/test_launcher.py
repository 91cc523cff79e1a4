"""launcher.exit_when_stopped: a stop signal ends the block in one line, whatever
the main thread was doing when it came; an error without one is still an error."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

RUN_BLOCK = """
import os, signal, sys, time
import launcher

with launcher.exit_when_stopped("stopped; cleaned up"):
    try:
        {body}
    finally:
        print("block unwound", flush=True)
"""


def run_block(body: str) -> subprocess.CompletedProcess[str]:
    code = RUN_BLOCK.format(body=textwrap.indent(body, " " * 8).strip())
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    "body",
    [
        "os.kill(os.getpid(), signal.SIGTERM); time.sleep(20)",
        "os.kill(os.getpid(), signal.SIGHUP); time.sleep(20)",
        # What confluent-kafka's Consumer() did with a SIGTERM that came while it
        # read its configuration: the KeyboardInterrupt came out as a TypeError.
        """try:
    os.kill(os.getpid(), signal.SIGTERM); time.sleep(20)
except KeyboardInterrupt:
    raise TypeError("expected configuration property name as type unicode string")""",
    ],
    ids=["sigterm", "sighup", "sigterm-turned-into-another-error"],
)
def test_a_stop_signal_unwinds_the_block_and_ends_in_one_line(body: str) -> None:
    done = run_block(body)
    assert (done.returncode, done.stdout, done.stderr) == (
        1,
        "block unwound\n",
        "stopped; cleaned up\n",
    )


def test_an_error_without_a_stop_signal_keeps_its_traceback() -> None:
    done = run_block('raise TypeError("a real bug")')
    assert (done.returncode, done.stdout) == (1, "block unwound\n")
    assert done.stderr.startswith("Traceback")
    assert done.stderr.endswith("TypeError: a real bug\n")
