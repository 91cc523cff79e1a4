"""Event time conversions are exact to the millisecond, both ways."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from sensor_lib.event_time import from_epoch_ms, to_epoch_ms


def test_epoch_ms_is_exact_where_float_seconds_are_not() -> None:
    # round(moment.timestamp() * 1000) gives ...124 here: the float path rounds the
    # reading into the next millisecond, and at a window's edge into the next window.
    assert to_epoch_ms(datetime(2026, 11, 26, 4, 2, 49, 123999, tzinfo=UTC)) == 1_795_665_769_123
    assert to_epoch_ms(datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC)) == 1
    # Rounded down, also before the epoch: half a millisecond before it is -1, not 0.
    assert to_epoch_ms(datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=UTC)) == -1


def test_from_epoch_ms_is_aware_utc() -> None:
    assert from_epoch_ms(1_795_665_769_123) == datetime(2026, 11, 26, 4, 2, 49, 123000, tzinfo=UTC)
    assert from_epoch_ms(0).tzinfo is UTC


@given(st.integers(min_value=-(10**13), max_value=10**13))
def test_every_millisecond_survives_a_round_trip(epoch_ms: int) -> None:
    assert to_epoch_ms(from_epoch_ms(epoch_ms)) == epoch_ms
