"""The raw reading, as the producer writes it and the processor and chart read it.

Key: the sensor id. Value: {"ts": ISO 8601 time, "value": temperature}, or a
watermark {"ts": ..., "watermark": true}. `parse_reading` checks all of it but the
time, which sensor_lib/event_time.py parses.
"""

from __future__ import annotations

from typing import TypedDict

import orjson

from sensor_lib.aggregates import is_finite_number


class Reading(TypedDict):
    ts: str
    value: float | None  # None in a watermark, which moves time and carries no value


class InvalidReading(ValueError):
    """A message that is not a usable reading; `reason` is a short machine tag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def parse_reading(payload: bytes) -> Reading:
    try:
        reading = orjson.loads(payload)  # strict JSON, several times faster than json
    except orjson.JSONDecodeError as exc:
        raise InvalidReading("invalid-json", f"not JSON ({exc})") from None
    if not isinstance(reading, dict):
        raise InvalidReading("not-an-object", f"JSON {type(reading).__name__}, not an object")
    if "ts" not in reading:
        raise InvalidReading("missing-ts", "no 'ts' field")
    if reading.get("watermark") is True:
        return {"ts": reading["ts"], "value": None}
    value = reading.get("value")
    if not is_finite_number(value):
        reason = "missing-value" if value is None else "non-numeric-value"
        raise InvalidReading(reason, f"'value' is {value!r}, not a finite number")
    return reading  # type: ignore[return-value]
