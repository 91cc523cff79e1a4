"""The aggregate message, as the processor writes it and the viewer, chart and sink read it.

Key: the sensor id. Value: {"start": ms, "end": ms, "temperature": {"count", "min",
"max", "mean"}}. `parse_aggregate` checks all of it, so a reader never trips on a
message some other client wrote to the topic.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass


class InvalidAggregate(ValueError):
    """A message on the aggregate topic that is not a window aggregate; `reason` is a tag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Aggregate:
    """One sensor's closed window."""

    sensor: str
    start_ms: int
    end_ms: int
    count: int
    min: float
    mean: float
    max: float


def is_finite_number(value: object) -> bool:
    # An exact type check: bool is an int subclass, but true is not a temperature.
    return type(value) in (float, int) and math.isfinite(value)


def parse_aggregate(key: bytes | None, value: bytes | None) -> Aggregate:
    """Kafka key and value to an Aggregate, or InvalidAggregate saying what is wrong."""
    if not key:
        raise InvalidAggregate("no-key", "no sensor key")
    try:
        sensor = key.decode()
        message = json.loads(value) if value is not None else None
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidAggregate("invalid-json", f"not UTF-8 JSON ({exc})") from None
    if not isinstance(message, dict) or not isinstance(message.get("temperature"), dict):
        raise InvalidAggregate("not-an-aggregate", "not an object with a 'temperature' object")
    start, end, stats = message.get("start"), message.get("end"), message["temperature"]
    if not (type(start) is int and type(end) is int and start < end):
        raise InvalidAggregate("bad-window", f"bad window bounds start={start!r} end={end!r}")
    count = stats.get("count")
    if type(count) is not int or count <= 0:
        raise InvalidAggregate("bad-count", f"bad count {count!r}")
    numbers = {name: stats.get(name) for name in ("min", "mean", "max")}
    if not all(is_finite_number(number) for number in numbers.values()):
        raise InvalidAggregate("non-numeric-stats", f"min/mean/max are not all numbers: {numbers}")
    return Aggregate(sensor, start, end, count, **numbers)


def sensor_order(sensor: str) -> list[int | str]:
    """Sort Sensor2 before Sensor10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", sensor)]
