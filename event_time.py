"""Event time as every script writes it: aware UTC datetimes and epoch milliseconds.

Integer arithmetic on `timedelta` keeps each conversion exact; going through a
float `timestamp()` can be one millisecond off.
"""

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)


def to_epoch_ms(moment: datetime) -> int:
    """An aware datetime as whole milliseconds since the epoch, rounded down."""
    return (moment - EPOCH) // ONE_MS


def from_epoch_ms(epoch_ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return EPOCH + epoch_ms * ONE_MS
