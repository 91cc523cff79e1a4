"""An independent model of what the processor must emit, for the integration tests.

It restates the documented rules in the plainest way, sharing no code with the
processor: windows are [start, start + W) aligned to the epoch; per sensor, a
reading is late when its window ended at or before (latest event time seen for
that sensor) - grace; a window is emitted once that same condition holds for it.
A watermark, given as a reading whose value is None, moves time without a value.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Expected:
    windows: dict[tuple[str, int], dict[str, object]] = field(default_factory=dict)
    open_windows: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    late: list[tuple[str, int, float]] = field(default_factory=list)


def expected_windows(
    readings: list[tuple[str, int, float | None]], window_ms: int, grace_ms: int
) -> Expected:
    """readings: (sensor, event time ms, value or None) in the order the processor sees them."""
    latest: dict[str, int] = {}
    values: dict[tuple[str, int], list[float]] = defaultdict(list)
    result = Expected()
    for sensor, ts, value in readings:
        start = ts - ts % window_ms
        if sensor in latest and start + window_ms <= latest[sensor] - grace_ms:
            if value is not None:
                result.late.append((sensor, ts, value))
            continue
        latest[sensor] = max(latest.get(sensor, ts), ts)
        if value is not None:
            values[(sensor, start)].append(value)
    for (sensor, start), window_values in values.items():
        if start + window_ms <= latest[sensor] - grace_ms:
            result.windows[(sensor, start)] = {
                "start": start,
                "end": start + window_ms,
                "temperature": {
                    "count": len(window_values),
                    "min": min(window_values),
                    "max": max(window_values),
                    "mean": statistics.mean(window_values),
                },
            }
        else:
            result.open_windows[(sensor, start)] = window_values
    return result
