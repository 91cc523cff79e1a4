"""Waiting with a bound (sensor_lib/polling.py): what a wait that times out says."""

from __future__ import annotations

import pytest

from sensor_lib.polling import wait_until


def test_a_wait_that_times_out_names_what_it_waited_for_and_what_it_saw() -> None:
    seen = []

    def ready() -> bool:
        seen.append(len(seen))
        return False

    with pytest.raises(TimeoutError) as timed_out:
        wait_until(ready, 0.05, interval=0.01, what="the board", explain=lambda: f"polls {seen}")
    assert str(timed_out.value) == f"the board: not within 0.05 s\npolls {seen}"
    assert len(seen) >= 2
