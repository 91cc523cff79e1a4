"""Waiting with a bound: the one place a deadline is computed.

Every wait in the scripts, the launchers, the benchmarks and the tests either
polls a condition with `wait_until`, or, where it does work of its own between
checks (a consume loop), counts down a `Deadline`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Deadline:
    """A point `seconds` from now on the monotonic clock (never moved by the wall clock)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def left(self) -> float:
        """Seconds until the deadline; 0 once it has passed."""
        return max(self.at - time.monotonic(), 0.0)


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    *,
    interval: float = 0.1,
    what: str = "the condition",
    explain: Callable[[], str] | None = None,
) -> T:
    """Call `condition` every `interval` seconds until it returns something truthy, and
    return that. After `timeout` seconds, raise TimeoutError naming `what`, followed by
    `explain()` if given: what was seen meanwhile, for whoever reads the failure."""
    deadline = Deadline(timeout)
    while True:
        if result := condition():
            return result
        if deadline.passed():
            seen = f"\n{explain()}" if explain else ""
            raise TimeoutError(f"{what}: not within {timeout:g} s{seen}")
        time.sleep(min(interval, deadline.left()) or interval)
