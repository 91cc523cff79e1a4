"""Validation of raw readings and the event-time extractor."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
from quixstreams.models import SerializationContext

from sensor_lib.application import stop_on_processing_error
from sensor_lib.dead_letters import DeadLetterError
from sensor_lib.event_time import parse_iso_ms
from sensor_stream_processor import (
    InvalidReading,
    Reading,
    ReadingDeserializer,
    extract_event_time,
    parse_reading,
)

# 2026-11-26T04:02:49.123Z in epoch milliseconds, computed once by hand:
# 56 years with 14 leap days, plus 329 days into 2026: 20,783 days, + 4 h 2 min 49.123 s.
T = 20_783 * 86_400_000 + (4 * 3600 + 2 * 60 + 49) * 1000 + 123


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-11-26T04:02:49.123Z", T),
        ("2026-11-26T04:02:49.123+00:00", T),
        ("2026-11-26T04:02:49.123456+00:00", T),  # microseconds floor to the millisecond
        ("2026-11-26T04:02:49.123999+00:00", T),
        ("2026-11-26T06:02:49.123+02:00", T),  # offsets are converted, not dropped
        ("2026-11-25T22:32:49.123-05:30", T),
        ("2026-11-26T04:02:49.123", T),  # no offset means UTC
        ("2026-11-26T04:02:49Z", T - 123),  # no fraction
        ("2026-11-26T04:02:49", T - 123),
        ("2026-11-26 04:02:49.123+00:00", T),
        ("1969-12-31T23:59:59.999Z", -1),  # before the epoch floors, too
    ],
)
def test_event_time_formats(ts: str, expected: int) -> None:
    assert parse_iso_ms(ts) == expected


@pytest.mark.parametrize(
    "ts",
    [
        "",
        "yesterday",
        "2026-11-26",
        "2026-13-01T00:00:00Z",
        "2026-11-26T25:00:00",
        1764129769,
        None,
    ],
)
def test_event_time_rejects(ts: object) -> None:
    with pytest.raises(ValueError, match="not an ISO-8601 date and time"):
        parse_iso_ms(ts)


@pytest.mark.parametrize("ts", ["2026-11-26", "yesterday", None])
def test_a_reading_with_a_bad_time_comes_out_as_bad_ts(ts: object) -> None:
    bad = deserialize(json.dumps({"ts": ts, "value": 1.0}).encode())
    assert isinstance(bad, InvalidReading)
    assert (bad.reason, bad.detail) == ("bad-ts", f"'ts' is {ts!r}, not an ISO-8601 date and time")


def deserialize(payload: bytes) -> Reading | InvalidReading:
    return ReadingDeserializer()(payload, SerializationContext("raw", "value"))


def test_extractor_takes_the_time_the_deserializer_read_not_the_kafka_timestamp() -> None:
    reading = deserialize(b'{"ts": "2026-11-26T04:02:49.123Z", "value": 1.0}')
    assert extract_event_time(reading, None, 0, 0) == T


def test_a_message_that_is_no_reading_comes_out_as_its_error_and_keeps_its_kafka_time() -> None:
    # Raised, the error would have Quix Streams skip the message without storing its offset.
    deserialize(b'{"ts": "2026-11-26T04:02:49.123Z", "value": 1.0}')
    bad = deserialize(b'{"ts": "26/11/2026 04:02", "value": 1.0}')
    assert isinstance(bad, InvalidReading)
    assert bad.reason == "bad-ts"
    assert extract_event_time(bad, None, 42, 0) == 42
    assert extract_event_time(None, None, 43, 0) == 43  # no value: never deserialized


@pytest.mark.parametrize(
    ("payload", "parsed"),
    [
        (
            b'{"ts": "2026-11-26T04:02:49.123Z", "value": -3.5, "unit": "C"}',
            {"ts": "2026-11-26T04:02:49.123Z", "value": -3.5, "unit": "C"},
        ),
        (  # a watermark needs no value, and carries None
            b'{"ts": "2026-11-26T04:02:49.123Z", "value": 3.5, "watermark": true}',
            {"ts": "2026-11-26T04:02:49.123Z", "value": None},
        ),
    ],
    ids=["a-reading-as-is", "a-watermark-without-its-value"],
)
def test_a_reading_parses_to_itself_and_a_watermark_to_its_time(payload: bytes, parsed) -> None:
    assert parse_reading(payload) == parsed


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe not json", "invalid-json"),
        (b"", "invalid-json"),
        (b'"{\\"ts\\": \\"2026-11-26T04:02:49Z\\", \\"value\\": 1}"', "not-an-object"),
        (b"[1, 2]", "not-an-object"),
        (b"21.5", "not-an-object"),
        (b'{"value": 1}', "missing-ts"),
        (b'{"ts": "2026-11-26T04:02:49Z"}', "missing-value"),
        (b'{"ts": "2026-11-26T04:02:49Z", "value": null}', "missing-value"),
        (b'{"ts": "2026-11-26T04:02:49Z", "value": "21.5"}', "non-numeric-value"),
        (b'{"ts": "2026-11-26T04:02:49Z", "value": true}', "non-numeric-value"),
        (b'{"ts": "2026-11-26T04:02:49Z", "value": NaN}', "invalid-json"),  # not strict JSON
        (b'{"ts": "2026-11-26T04:02:49Z", "value": Infinity}', "invalid-json"),
        (b'{"ts": "2026-11-26T04:02:49Z", "value": [1]}', "non-numeric-value"),
        # Only a true watermark flag excuses a missing value.
        (b'{"ts": "2026-11-26T04:02:49.123Z", "watermark": "yes"}', "missing-value"),
    ],
)
def test_invalid_readings_are_named(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidReading) as info:
        parse_reading(payload)
    assert info.value.reason == reason


def test_a_dead_letter_that_cannot_be_written_stops_the_app_without_a_quix_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # main() explains a DeadLetterError in one line; any other error keeps Quix's report.
    quix = logging.getLogger("quixstreams")
    row = SimpleNamespace(topic="raw", partition=0, offset=7)
    with caplog.at_level(logging.DEBUG):
        assert stop_on_processing_error(DeadLetterError("away"), row, quix) is False
        assert caplog.records == []
        assert stop_on_processing_error(ValueError("bug"), row, quix) is False
    assert [r.getMessage() for r in caplog.records] == [
        'Failed to process a Row: partition="raw[0]" offset="7"'
    ]
