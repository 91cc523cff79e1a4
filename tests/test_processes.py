"""A stop signal stops us, whatever the main thread was doing when it came.

Python raises the KeyboardInterrupt wherever the main thread is. Inside a C callback
(confluent-kafka's) it can come out as another error, or be swallowed; where Python
cannot raise (an at-fork handler, a __del__) it is printed and dropped. The blocks
here must stop all the same, with no traceback, and an error with no signal stays an
error.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

from helpers import REPO, wait_until_stopped

pytestmark = pytest.mark.integration  # each test runs a block in a process of its own

BENCHMARK = """
def main():
    with exit_when_stopped("stopped; cleaned up"):
        try:
            {body}
        finally:
            print("block unwound", flush=True)
sys.exit(exit_status(main, logging.getLogger("benchmark")))
"""
SCRIPT = """
try:
    with StopSignals.install().interrupting():
        {body}
except KeyboardInterrupt:
    print("Stopped", flush=True)
"""
SIGNAL = "os.kill(os.getpid(), signal.{}); time.sleep(20)"
# What a C callback can do with it: swallow it whole, so the block runs on to its end.
SWALLOWED = f"try:\n    {SIGNAL}\nexcept KeyboardInterrupt:\n    pass"
# What a C callback can make of it: confluent-kafka's Consumer(), stopped while it reads
# its configuration, raises a TypeError in its place.
TURNED_INTO_A_TYPE_ERROR = f"""try:
    {SIGNAL}
except KeyboardInterrupt:
    raise TypeError("expected configuration property name as type unicode string")"""


def in_a_del(statement: str) -> str:
    """`statement` where Python cannot raise: it prints the exception and drops it."""
    return f"class Finalized:\n    def __del__(self):\n        {statement}\nFinalized()"


DROPPED = in_a_del(SIGNAL)


def run_block(block: str, body: str, **fields: object) -> subprocess.CompletedProcess[str]:
    code = "import logging, os, signal, sys, time\nfrom sensor_lib import settings\n"
    code += "from sensor_lib.broker import wait_for_broker\n"
    code += "from sensor_lib.children import start_child\n"
    code += "from sensor_lib.errors import exit_status\n"
    code += "from sensor_lib.stop_signals import StopSignals, exit_when_stopped\n"
    indent = " " * (12 if block is BENCHMARK else 8)
    code += block.format(body=textwrap.indent(body.format(**fields), indent).strip())
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30
    )


# A benchmark ends in one line, exit 1; a script's start-up sees KeyboardInterrupt.
STOPPED_BENCHMARK = (1, "block unwound\n", "stopped; cleaned up\n")
STOPPED_SCRIPT = (0, "Stopped\n", "")


@pytest.mark.parametrize(
    ("block", "body", "outcome"),
    [
        (BENCHMARK, SIGNAL.format("SIGTERM"), STOPPED_BENCHMARK),
        (BENCHMARK, SIGNAL.format("SIGHUP"), STOPPED_BENCHMARK),
        (BENCHMARK, TURNED_INTO_A_TYPE_ERROR.format("SIGTERM"), STOPPED_BENCHMARK),
        (BENCHMARK, SWALLOWED.format("SIGTERM"), STOPPED_BENCHMARK),
        (BENCHMARK, DROPPED.format("SIGTERM"), STOPPED_BENCHMARK),
        (SCRIPT, SIGNAL.format("SIGINT"), STOPPED_SCRIPT),
        (SCRIPT, SIGNAL.format("SIGTERM"), STOPPED_SCRIPT),
        (SCRIPT, TURNED_INTO_A_TYPE_ERROR.format("SIGINT"), STOPPED_SCRIPT),
        (SCRIPT, SWALLOWED.format("SIGTERM"), STOPPED_SCRIPT),
        (SCRIPT, DROPPED.format("SIGINT"), STOPPED_SCRIPT),
    ],
    ids=[
        "benchmark-sigterm",
        "benchmark-sighup",
        "benchmark-sigterm-turned-into-a-type-error",
        "benchmark-sigterm-swallowed",
        "benchmark-sigterm-dropped",
        "script-ctrl-c",
        "script-sigterm",
        "script-ctrl-c-turned-into-a-type-error",
        "script-sigterm-swallowed",
        "script-ctrl-c-dropped",
    ],
)
def test_a_stop_signal_stops_the_block_whatever_it_was_doing(
    block: str, body: str, outcome: tuple[int, str, str]
) -> None:
    done = run_block(block, body)
    assert (done.returncode, done.stdout, done.stderr) == outcome


@pytest.mark.parametrize("block", [BENCHMARK, SCRIPT], ids=["benchmark", "script"])
def test_an_error_without_a_stop_signal_keeps_its_traceback(block: str) -> None:
    done = run_block(block, 'raise TypeError("a real bug")')
    assert done.returncode == 1
    assert done.stderr.startswith("Traceback")
    assert done.stderr.endswith("TypeError: a real bug\n")


def test_an_error_python_drops_without_a_stop_is_still_printed() -> None:
    done = run_block(BENCHMARK, in_a_del('raise ValueError("a real bug")'))
    assert (done.returncode, done.stdout) == (0, "block unwound\n")
    assert done.stderr.startswith("Exception ignored in")
    assert done.stderr.endswith("ValueError: a real bug\n")


def test_waiting_for_the_broker_stops_even_when_the_interrupt_was_swallowed() -> None:
    # A port that takes connections and never answers: the wait would outlast run_block's 30 s.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        body = (
            SWALLOWED.format("SIGINT")
            + """
broker = settings.BrokerSettings(broker_address="127.0.0.1:{port}")
wait_for_broker(broker, 120)
print("the broker answered", flush=True)"""
        )
        done = run_block(SCRIPT, body, port=silent.getsockname()[1])
    assert (done.returncode, done.stdout) == (0, "Stopped\n")


def test_starting_a_child_runs_no_python_here_while_it_forks() -> None:
    # A KeyboardInterrupt raised in an at-fork handler (logging has one) is printed
    # ("Exception ignored in") and dropped. start_child runs none, so a stop that comes
    # while it starts a child is not lost there.
    body = """os.register_at_fork(after_in_parent=lambda: os.kill(os.getpid(), signal.SIGTERM))
print("the child exited with", start_child(["true"]).wait(), flush=True)"""
    done = run_block(BENCHMARK, body)
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        "the child exited with 0\nblock unwound\n",
        "",
    )


def test_a_child_started_here_is_stopped_when_we_are_killed() -> None:
    body = """child = start_child(["sleep", "60"])
while not open(f"/proc/{{child.pid}}/cmdline").read().startswith("sleep"):  # it has begun
    time.sleep(0.01)
print(child.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)"""
    done = run_block(BENCHMARK, body)
    child = int(done.stdout)
    wait_until_stopped([child], 5)
