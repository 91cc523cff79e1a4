"""Watch the window aggregates arrive: a live table, or plain lines.

Reads the aggregate topic from its beginning, so history shows at once, then
follows it. In a terminal it draws one row per sensor and refreshes it in place;
when stdout is not a terminal (or with --plain) it prints one line per aggregate:

    Sensor3 05:08:40-05:08:50 count=40 min=21.37 mean=21.81 max=22.50

On Ctrl-C or SIGTERM it first reads the topic to its end, so its last table (or
last lines) holds every window already written; a second Ctrl-C skips that.
sensor_stream_chart.py draws the same windows as a chart.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import sys
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from confluent_kafka import Message
from pydantic import Field, NonNegativeFloat
from rich import box
from rich.live import Live
from rich.table import Table

from sensor_lib.aggregates import Aggregate, InvalidAggregate, parse_aggregate, sensor_order
from sensor_lib.broker import start_up
from sensor_lib.consuming import follow
from sensor_lib.errors import exit_status
from sensor_lib.event_time import from_epoch_ms
from sensor_lib.polling import Deadline
from sensor_lib.settings import BrokerSettings, load_settings

logger = logging.getLogger("sensor_stream_viewer")

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 12  # recent window means per sensor; the table then fits 80 columns
DRAIN_TIMEOUT = 10.0  # seconds a stopping viewer may spend reading the topic to its end


class ViewerSettings(BrokerSettings):
    """Show window aggregates as a live table, or plain lines."""

    agg_topic: str = Field("agg-temperature", description="topic of window aggregates")
    start_at: Literal["earliest", "latest"] = Field(
        "earliest", description="earliest shows the topic's history first; latest only new windows"
    )
    duration: NonNegativeFloat = Field(0.0, description="seconds to watch; 0 = until stopped")
    plain: bool = Field(False, description="one line per aggregate (automatic when not a terminal)")


# --- The board: what the live view knows, and how it looks ------------------------------


@dataclass
class SensorRow:
    last: Aggregate
    complete: Aggregate | None = None  # the newest window a later one followed
    means: deque[float] = field(default_factory=lambda: deque(maxlen=SPARK_WIDTH))
    windows: int = 0


@dataclass
class SensorBoard:
    """Everything the table shows, updated one aggregate at a time."""

    rows: dict[str, SensorRow] = field(default_factory=dict)
    skipped: int = 0
    # The live display draws from its own thread while the main thread adds.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, aggregate: Aggregate) -> None:
        with self.lock:
            row = self.rows.setdefault(aggregate.sensor, SensorRow(aggregate))
            if aggregate.end_ms > row.last.end_ms:
                row.complete, row.last = row.last, aggregate
            elif aggregate.end_ms == row.last.end_ms:
                row.last = aggregate
            row.means.append(aggregate.mean)
            row.windows += 1

    def input_rate(self) -> float:
        """Readings per second of event time: each sensor's newest complete window, summed.

        With 5 sensors at 4 readings/s in all and 10 s windows, each window holds 8
        readings: 5 * 8 / 10 = 4.0. A backfill does not inflate it. The newest window
        counts only while it is a sensor's only one: a stop cuts it short.
        """
        windows = [row.complete or row.last for row in self.rows.values()]
        return sum(w.count * 1000 / (w.end_ms - w.start_ms) for w in windows)

    def lag_seconds(self, now: datetime) -> float | None:
        """How far the newest window's end trails `now`; never less than 0, since a
        producer's final watermark closes windows that end after `now`."""
        if not self.rows:
            return None
        newest = max(row.last.end_ms for row in self.rows.values())
        return max(0.0, (now - from_epoch_ms(newest)).total_seconds())


def sparkline(values: list[float], width: int) -> str:
    """The last `width` values as block characters, lowest ▁ to highest █."""
    recent = list(values)[-width:] if width > 0 else []
    if not recent:
        return ""
    low, high = min(recent), max(recent)
    if high == low:
        return SPARK_BLOCKS[len(SPARK_BLOCKS) // 2] * len(recent)
    top = len(SPARK_BLOCKS) - 1
    return "".join(SPARK_BLOCKS[round((v - low) / (high - low) * top)] for v in recent)


def format_window(a: Aggregate) -> str:
    return f"{from_epoch_ms(a.start_ms):%H:%M:%S}-{from_epoch_ms(a.end_ms):%H:%M:%S}"


def format_plain_line(a: Aggregate) -> str:
    """The stable one-line form that plain mode prints (times are UTC)."""
    stats = f"count={a.count} min={a.min:.2f} mean={a.mean:.2f} max={a.max:.2f}"
    return f"{a.sensor} {format_window(a)} {stats}"


def format_footer(board: SensorBoard, now: datetime) -> str:
    lag = board.lag_seconds(now)
    parts = [
        f"input {board.input_rate():.1f} readings/s",
        "lag -" if lag is None else f"lag {lag:.1f} s behind the newest window",
        f"{sum(row.windows for row in board.rows.values())} windows",
    ]
    if board.skipped:
        parts.append(f"{board.skipped} malformed skipped")
    return " · ".join(parts)


def render_table(board: SensorBoard, now: datetime) -> Table:
    with board.lock:
        table = Table(
            title="Temperature per sensor, latest window",
            caption=format_footer(board, now),
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            collapse_padding=True,
        )
        for name in ("Sensor", "Window (UTC)"):
            table.add_column(name, no_wrap=True)
        for name in ("Count", "Min", "Mean", "Max"):
            table.add_column(name, justify="right")
        table.add_column("Recent means")
        table.add_column("Windows", justify="right")
        for sensor in sorted(board.rows, key=sensor_order):
            row = board.rows[sensor]
            last = row.last
            table.add_row(
                sensor,
                format_window(last),
                str(last.count),
                *(f"{number:.2f}" for number in (last.min, last.mean, last.max)),
                sparkline(list(row.means), SPARK_WIDTH),
                str(row.windows),
            )
    return table


# --- Following the aggregate topic -------------------------------------------------------


def board_aggregates(messages: Iterator[Message], board: SensorBoard) -> Iterator[Aggregate]:
    """Each message as an aggregate on the board; a malformed one is logged and skipped."""
    for message in messages:
        try:
            aggregate = parse_aggregate(message.key(), message.value())
        except InvalidAggregate as exc:
            board.skipped += 1
            logger.warning(
                "Skipped malformed aggregate %s[%s]@%s: %s",
                message.topic(),
                message.partition(),
                message.offset(),
                exc,
            )
            continue
        board.add(aggregate)
        yield aggregate


def show_live(board: SensorBoard, aggregates: Iterator[Aggregate]) -> None:
    """The table, redrawn by rich four times a second while this thread reads the topic."""
    with Live(get_renderable=lambda: render_table(board, datetime.now(UTC))):
        # Log lines go through rich's stderr proxy, so they print above the table.
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(sys.stderr)
        for _ in aggregates:
            pass


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(ViewerSettings, argv)
    stop = start_up(settings, logger, "showing anything")
    # From here a first Ctrl-C reads the topic to its end and stops; a second one stops at once.
    messages = follow(
        settings,
        settings.agg_topic,
        stop,
        start_at=settings.start_at,
        deadline=Deadline(settings.duration or math.inf),
        drain_timeout=DRAIN_TIMEOUT,
    )
    board = SensorBoard()
    aggregates = board_aggregates(messages, board)
    try:
        if settings.plain or not sys.stdout.isatty():
            for aggregate in aggregates:
                print(format_plain_line(aggregate), flush=True)
        else:
            show_live(board, aggregates)
    except OSError as exc:
        # The reader went away (`| head`) or the terminal closed: stop quietly, as cat would.
        if exc.errno not in (errno.EPIPE, errno.EIO):
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        messages.close()


if __name__ == "__main__":
    sys.exit(exit_status(main, logger))
