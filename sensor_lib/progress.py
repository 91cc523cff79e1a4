"""The producer's progress line: readings so far, the rate over the last seconds, deliveries."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
)
from rich.text import Text

from sensor_lib.producing import DeliveryReport

RATE_SECONDS = 5.0


class RecentRateColumn(ProgressColumn):
    """Readings per second over the last RATE_SECONDS, so a burst of history or a stall
    shows at once; an average since the start would hide both for minutes."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f}/s" if task.speed is not None else "-/s")


def make_progress(total: int, quiet: bool) -> Progress:
    """A bar when `total` is set, a running counter otherwise; stderr, and only on a terminal.

    A task's `deliveries` field is shown after the rate."""
    console = Console(stderr=True)
    columns: list[str | ProgressColumn] = [TextColumn("[bold]readings")]
    if total:
        columns += [BarColumn(), MofNCompleteColumn()]
    else:
        columns += [TextColumn("{task.completed:,.0f}")]
    columns += [RecentRateColumn(), TextColumn("{task.fields[deliveries]}")]
    disable = quiet or not console.is_terminal
    return Progress(*columns, console=console, disable=disable, speed_estimate_period=RATE_SECONDS)


class ProgressLine:
    """make_progress's line for the producer's readings, redrawn at most ten times a second."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.progress = make_progress(total, quiet)
        self.task = self.progress.add_task("readings", total=total or None, deliveries="")
        self.shown_at = 0.0

    def show(self, produced: int, report: DeliveryReport, *, now: bool = False) -> None:
        clock = time.monotonic()
        if now or clock - self.shown_at > 0.1:
            deliveries = f"delivered {report.delivered:,} failed {report.failed:,}"
            self.progress.update(self.task, completed=produced, deliveries=deliveries)
            self.shown_at = clock

    def __enter__(self) -> ProgressLine:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
