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


def format_ms(epoch_ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC text, to the millisecond."""
    return from_epoch_ms(epoch_ms).isoformat(timespec="milliseconds")


def parse_iso_ms(ts: object) -> int:
    """ISO-8601 text to epoch milliseconds; a time without an offset is UTC.

    Accepts `Z`, any UTC offset, and any number of fractional digits; raises
    ValueError for anything else, a date alone included (it is not a moment).
    """
    if isinstance(ts, str) and len(ts) > 10:
        try:
            moment = datetime.fromisoformat(ts)
        except ValueError:
            pass
        else:
            return to_epoch_ms(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    raise ValueError(f"'ts' is {ts!r}, not an ISO-8601 date and time")
