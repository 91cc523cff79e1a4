"""The scripts under test as child processes, and waiting on them.

The benchmarks drive the project's scripts as a user would: each one is a child
process started with the flags the README documents, never imported, that never
outlives the benchmark (sensor_lib.children). A wait fails at once if one of the
processes it depends on exits, and ends on a stop signal.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench_errors import BenchmarkError
from repo import REPO
from sampling import ProcessUsage
from sensor_lib import polling
from sensor_lib.children import start_child, stop_child
from sensor_lib.stop_signals import raise_if_stopped


class Child(ProcessUsage):
    """A script of this repository run as a process that never outlives the benchmark,
    with its CPU time and memory (ProcessUsage)."""

    def __init__(
        self,
        script: str,
        flags: Sequence[str],
        log: Path,
        wrapper: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.log = log
        self.started = time.monotonic()
        command = [*wrapper, sys.executable, str(REPO / script), *flags]
        self.process = start_child(command, log=log, cwd=REPO, env=env)
        super().__init__(self.process.pid)
        self.terminated = False

    def check(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise BenchmarkError(f"{self.log.name}: exited with {self.process.returncode}:\n{tail}")

    def wait(self, timeout: float) -> float:
        """Wait for a clean exit; return its peak RSS in MiB (sampled while it runs)."""

        def exited() -> bool:
            self.rss_mib()
            return self.process.poll() is not None

        wait_until(exited, f"exit of {self.log.name}", timeout, interval=0.01)
        if self.process.returncode != 0:
            self.check()
        return self.peak_rss_mib

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM, once: a second one would hurry its shutdown); stop()
        waits for it. Several processes asked at once stop in parallel."""
        if not self.terminated and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.terminated = True

    def stop(self, timeout: float = 15.0) -> None:
        """Stop it (SIGTERM unless asked already), then SIGKILL after `timeout` seconds."""
        # Signal 0 sends nothing: once asked, it is only waited for.
        stop_child(self.process, timeout, signum=0 if self.terminated else signal.SIGTERM)
        self.terminated = True


def wait_until(
    condition: Callable[[], bool],
    what: str,
    timeout: float,
    children: Sequence[Child] = (),
    interval: float = 0.02,
) -> float:
    """Poll `condition` until it holds; return that moment (time.monotonic()).

    Fails at once if one of `children` exits, and after `timeout` seconds.
    """

    def holds() -> float | None:
        if condition():
            return time.monotonic()
        raise_if_stopped()
        for child in children:
            child.check()
        return None

    try:
        return polling.wait_until(holds, timeout, interval=interval, what=what)
    except TimeoutError:
        raise BenchmarkError(f"no {what} within {timeout:g} s") from None
