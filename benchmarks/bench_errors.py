"""The benchmarks' typed error, and their summary's FAIL lines. Like every CannotRun,
sensor_lib.errors.exit_status turns the error into its message at ERROR and exit status
1, in each benchmark script's `__main__`."""

from __future__ import annotations

import json
from typing import Any

from sensor_lib.errors import CannotRun


class BenchmarkError(CannotRun):
    """A measurement could not complete; the message says why (and shows the log)."""


def print_summary(summary: dict[str, Any], problems: list[str], what: str) -> int:
    """Print a benchmark's summary line, then `problems` (the first 20) after a FAIL line
    that counts them as `what`; return the exit status, 1 if there are any."""
    print(json.dumps(summary), flush=True)
    if problems:
        print(f"FAIL: {len(problems)} {what}:", *problems[:20], sep="\n")
        return 1
    return 0
