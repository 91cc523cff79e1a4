"""Watch the window aggregates arrive: a live table, plain lines, or a chart.

Reads the aggregate topic from its beginning, so history shows at once, then
follows it. In a terminal it draws one row per sensor and refreshes it in place;
when stdout is not a terminal (or with --plain) it prints one line per aggregate:

    Sensor3 05:08:40-05:08:50 count=40 min=21.37 mean=21.81 max=22.50

On Ctrl-C or SIGTERM it first reads the topic to its end, so its last table (or
last lines) holds every window already written; a second Ctrl-C skips that.
`--plot chart.png` (or .svg, .pdf) instead reads both topics to their end, draws
each sensor's readings against its windows' mean and min-max band, and exits.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from pydantic import Field, NonNegativeFloat, PositiveFloat, field_validator
from rich import box
from rich.live import Live
from rich.table import Table

import kafka_io
import launcher
from event_time import from_epoch_ms
from sensor_settings import BrokerSettings, configure_logging, load_settings
from sensor_stream_processor import (
    InvalidReading,
    is_finite_number,
    parse_event_time,
    parse_reading,
)

if TYPE_CHECKING:
    from confluent_kafka import Message
    from matplotlib.figure import Figure  # matplotlib loads only when --plot asks for it

logger = logging.getLogger("sensor_stream_viewer")

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 12  # recent window means per sensor; the table then fits 80 columns
CHART_SUFFIXES = (".png", ".svg", ".pdf")  # what matplotlib writes with nothing else installed
DRAIN_TIMEOUT = 10.0  # seconds a stopping viewer may spend reading the topic to its end
METADATA_TIMEOUT = 10.0  # seconds to ask the broker for a topic's partitions


class ViewerSettings(BrokerSettings):
    """Show window aggregates as a live table, plain lines, or a chart."""

    raw_topic: str = Field("raw-temperature", description="topic of raw readings, for --plot")
    agg_topic: str = Field("agg-temperature", description="topic of window aggregates")
    start_at: Literal["earliest", "latest"] = Field(
        "earliest", description="earliest shows the topic's history first; latest only new windows"
    )
    duration: NonNegativeFloat = Field(0.0, description="seconds to watch; 0 = until stopped")
    plain: bool = Field(False, description="one line per aggregate (automatic when not a terminal)")
    plot: Path | None = Field(None, description="write a chart to this .png, .svg or .pdf and exit")
    plot_timeout: PositiveFloat = Field(30.0, description="seconds --plot may read each topic")

    @field_validator("plot")
    @classmethod
    def _chart_type(cls, path: Path | None) -> Path | None:
        if path is not None and path.suffix.lower() not in CHART_SUFFIXES:
            raise ValueError(f"the chart file must end in one of {', '.join(CHART_SUFFIXES)}")
        return path


# --- An aggregate message, checked ----------------------------------------------


class InvalidAggregate(ValueError):
    """A message on the aggregate topic that is not a window aggregate."""


@dataclass(frozen=True)
class Aggregate:
    """One sensor's closed window, as sensor_stream_processor.py emits it."""

    sensor: str
    start_ms: int
    end_ms: int
    count: int
    min: float
    mean: float
    max: float


def parse_aggregate(key: bytes | None, value: bytes | None) -> Aggregate:
    """Kafka key and value to an Aggregate, or InvalidAggregate saying what is wrong."""
    if not key:
        raise InvalidAggregate("no sensor key")
    try:
        sensor = key.decode()
        message = json.loads(value) if value is not None else None
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidAggregate(f"not UTF-8 JSON ({exc})") from None
    if not isinstance(message, dict) or not isinstance(message.get("temperature"), dict):
        raise InvalidAggregate("not an object with a 'temperature' object")
    start, end, stats = message.get("start"), message.get("end"), message["temperature"]
    if not (isinstance(start, int) and isinstance(end, int) and start < end):
        raise InvalidAggregate(f"bad window bounds start={start!r} end={end!r}")
    count = stats.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
        raise InvalidAggregate(f"bad count {count!r}")
    numbers = {name: stats.get(name) for name in ("min", "mean", "max")}
    if not all(is_finite_number(number) for number in numbers.values()):
        raise InvalidAggregate(f"min/mean/max are not all numbers: {numbers}")
    return Aggregate(sensor, start, end, count, **numbers)


# --- The board: what the live view knows, and how it looks ------------------------------


@dataclass
class SensorRow:
    last: Aggregate
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
            if aggregate.end_ms >= row.last.end_ms:
                row.last = aggregate
            row.means.append(aggregate.mean)
            row.windows += 1

    def input_rate(self) -> float:
        """Readings per second of event time: each sensor's newest window, summed.

        With 5 sensors at 4 readings/s in all and 10 s windows, each window holds 8
        readings: 5 * 8 / 10 = 4.0. A backfill does not inflate it.
        """
        rows = self.rows.values()
        return sum(row.last.count * 1000 / (row.last.end_ms - row.last.start_ms) for row in rows)

    def lag_seconds(self, now: datetime) -> float | None:
        """How far the newest window's end trails `now`; never less than 0.

        In a live pipeline it swings between about grace and window + grace. A producer's
        final watermark lies in the future and closes windows that end after `now`: no lag.
        """
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


def sensor_order(sensor: str) -> list[int | str]:
    """Sort Sensor2 before Sensor10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", sensor)]


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
            title="Temperature per sensor, latest window", caption=format_footer(board, now),
            box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
        )  # fmt: skip
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
                sensor, format_window(last), str(last.count),
                *(f"{number:.2f}" for number in (last.min, last.mean, last.max)),
                sparkline(list(row.means), SPARK_WIDTH), str(row.windows),
            )  # fmt: skip
    return table


# --- Following the aggregate topic -------------------------------------------------------


def find_partitions(consumer: Consumer, topic: str) -> list[int]:
    """The topic's partition ids; empty if it does not exist yet, or the broker is away
    for now (the client's log says so)."""
    try:
        # list_topics() without a topic name never auto-creates one.
        metadata = consumer.list_topics(timeout=METADATA_TIMEOUT).topics.get(topic)
    except KafkaException:
        return []
    return [] if metadata is None or metadata.error is not None else sorted(metadata.partitions)


@dataclass
class AggregateFeed:
    """Aggregates onto the board. A first Ctrl-C or SIGTERM sets `stop`, a second `hurry`."""

    consumer: Consumer
    topic: str
    partitions: list[int]
    start: int  # OFFSET_BEGINNING or OFFSET_END
    deadline: float
    stop: threading.Event
    hurry: threading.Event
    board: SensorBoard = field(default_factory=SensorBoard)
    next_offsets: dict[int, int] = field(default_factory=dict)  # partition -> where we stand
    at_end: set[int] = field(default_factory=set)  # partitions that reported their end

    def poll(self) -> Iterator[Aggregate]:
        for message in self.consumer.consume(num_messages=500, timeout=0.25):
            if (error := message.error()) is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self.at_end.add(message.partition())
                    self.next_offsets.setdefault(message.partition(), message.offset())
                else:
                    logger.warning("Consumer error: %s", error)
                continue
            self.next_offsets[message.partition()] = message.offset() + 1
            try:
                aggregate = parse_aggregate(message.key(), message.value())
            except InvalidAggregate as exc:
                self.board.skipped += 1
                logger.warning(
                    "Skipped malformed aggregate %s[%s]@%s: %s",
                    message.topic(), message.partition(), message.offset(), exc,
                )  # fmt: skip
                continue
            self.board.add(aggregate)
            yield aggregate

    def follow(self) -> Iterator[Aggregate]:
        """Each aggregate as it arrives; after a stop, on to the topic's end as it is now."""
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            yield from self.poll()
        if not self.stop.is_set():
            return  # --duration is over: nobody waits for more
        # The end by kafka_io.read_to_end's rule: each partition, fetched again from where
        # it stands after the stop, until it reports its end.
        at = self.next_offsets
        self.consumer.assign(
            [TopicPartition(self.topic, p, at.get(p, self.start)) for p in self.partitions]
        )
        self.at_end.clear()
        give_up = time.monotonic() + DRAIN_TIMEOUT
        while len(self.at_end) < len(self.partitions) and not self.hurry.is_set():
            if time.monotonic() > give_up:
                logger.warning(
                    "Read %s for %gs without reaching its end", self.topic, DRAIN_TIMEOUT
                )
                return
            yield from self.poll()


def show_live(feed: AggregateFeed) -> None:
    """The table, redrawn by rich four times a second while this thread reads the topic."""
    with Live(get_renderable=lambda: render_table(feed.board, datetime.now(UTC))):
        # Log lines go through rich's stderr proxy, so they print above the table.
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(sys.stderr)
        for _ in feed.follow():
            pass


# --- The chart: raw readings against the window band ---------------------------------


@dataclass
class SensorSeries:
    readings: list[tuple[datetime, float]] = field(default_factory=list)
    windows: list[Aggregate] = field(default_factory=list)


def collect_series(
    aggregate_messages: list[Message], raw_messages: list[Message]
) -> dict[str, SensorSeries]:
    """Group valid readings and aggregates by sensor; malformed ones are counted and skipped."""
    series: defaultdict[str, SensorSeries] = defaultdict(SensorSeries)
    skipped = 0
    for message in aggregate_messages:
        try:
            aggregate = parse_aggregate(message.key(), message.value())
            series[aggregate.sensor].windows.append(aggregate)
        except InvalidAggregate:
            skipped += 1
    for message in raw_messages:
        try:
            reading = parse_reading(message.value() or b"")
            moment = from_epoch_ms(parse_event_time(reading["ts"]))
            if reading["value"] is not None:  # a watermark is no reading
                series[message.key().decode()].readings.append((moment, reading["value"]))
        except (InvalidReading, AttributeError, UnicodeDecodeError):
            skipped += 1
    if skipped:
        logger.warning("Skipped %d malformed messages while charting", skipped)
    for one in series.values():
        one.readings.sort()
        one.windows.sort(key=lambda a: a.start_ms)
    return dict(sorted(series.items(), key=lambda item: sensor_order(item[0])))


def window_stairs(windows: list[Aggregate]) -> tuple[list[datetime], list[tuple[float, ...]]]:
    """The edges and the (min, mean, max) steps between them that `Axes.stairs` draws.

    Windows come sorted by start. A gap between two is a NaN step, which stays blank.
    """
    edges, steps = [windows[0].start_ms], []
    for window in windows:
        if window.start_ms < edges[-1]:
            continue  # overlaps the window before: a repeat, after a processor restart
        if window.start_ms > edges[-1]:
            edges.append(window.start_ms)
            steps.append((math.nan, math.nan, math.nan))
        edges.append(window.end_ms)
        steps.append((window.min, window.mean, window.max))
    return [from_epoch_ms(edge) for edge in edges], steps


def chart_figure(series: dict[str, SensorSeries]) -> Figure:
    """One panel per sensor: readings as dots, the mean as a step line in a min-max band."""
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 1.2 + 2.0 * len(series)), layout="constrained")
    axes = figure.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (sensor, one) in zip(axes, series.items(), strict=True):
        if one.windows:
            edges, steps = window_stairs(one.windows)
            mins, means, maxes = zip(*steps, strict=True)
            ax.stairs(maxes, edges, baseline=mins, fill=True, color="tab:blue", alpha=0.2,
                      label="window min-max")  # fmt: skip
            # baseline=None draws the mean as a line alone, with no sides down to 0.
            ax.stairs(means, edges, baseline=None, color="tab:blue", linewidth=1.5,
                      label="window mean")  # fmt: skip
        readings = list(zip(*one.readings, strict=True)) or [[], []]
        ax.scatter(*readings, s=6, color="tab:orange", label="reading")
        ax.set_title(f"{sensor}: {len(one.readings)} readings, {len(one.windows)} windows",
                     loc="left", fontsize="medium")  # fmt: skip
        ax.set_ylabel("°C")
        ax.grid(alpha=0.3)
    figure.suptitle("Readings and window mean inside the window's min-max band", x=0.01, ha="left")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
    axes[-1].set_xlabel("event time (UTC)")
    return figure


def write_chart(settings: ViewerSettings) -> int:
    topics = (settings.agg_topic, settings.raw_topic)
    messages = []
    for topic in topics:
        try:
            messages.append(kafka_io.read_to_end(settings, topic, timeout=settings.plot_timeout))
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise
            logger.error("Topic %s does not exist at %s", topic, settings.broker_address)
            return 1
    if not (series := collect_series(*messages)):
        logger.error("Nothing to chart: %s and %s hold no valid messages", *topics)
        return 1
    chart_figure(series).savefig(settings.plot, dpi=100)
    logger.info(
        "Wrote %s: %d sensors, %d readings, %d windows", settings.plot, len(series),
        sum(len(one.readings) for one in series.values()),
        sum(len(one.windows) for one in series.values()),
    )  # fmt: skip
    return 0


# --- Wiring ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    settings = load_settings(ViewerSettings, argv)
    configure_logging("INFO", kafka_io.BrokerOutageLog(settings.broker_address))
    try:
        with launcher.interrupted_by_stop_signals():  # while we wait for the broker
            kafka_io.wait_for_broker(settings, settings.broker_timeout)
            if settings.plot:
                return write_chart(settings)
        # From here the first Ctrl-C or SIGTERM stops following the topic; a second
        # one stops reading it to its end, too.
        stop, hurry = threading.Event(), threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(
                signum, lambda *_: launcher.set_from_handler(hurry if stop.is_set() else stop)
            )
    except KeyboardInterrupt:
        logger.info(
            "Stopped before %s", "writing the chart" if settings.plot else "showing anything"
        )
        return 0
    except (kafka_io.BrokerUnavailable, TimeoutError) as exc:
        logger.error("%s", exc)
        return 1

    # The viewer assigns itself every partition rather than join a group: it shares work with
    # nobody and commits nothing, so it needs no rebalance wait and leaves no group behind.
    consumer = Consumer({
        **settings.librdkafka_config(),
        **kafka_io.client_logging(),
        "group.id": f"sensor-viewer-{uuid.uuid4().hex}",
        "auto.offset.reset": settings.start_at,
        "enable.auto.commit": False,
        "enable.partition.eof": True,  # an event at each partition's end, for the stop
        "fetch.wait.max.ms": 100,  # new windows show within 0.1 s on any broker
    })  # fmt: skip
    deadline = time.monotonic() + settings.duration if settings.duration else math.inf
    try:
        if not (partitions := find_partitions(consumer, settings.agg_topic)):
            logger.info("Waiting for topic %s to appear", settings.agg_topic)
        while not partitions:  # the processor creates it
            consumer.poll(0)  # serves the client's log: an outage meanwhile is one line
            if stop.wait(0.5) or time.monotonic() >= deadline:
                return 0
            partitions = find_partitions(consumer, settings.agg_topic)
        # An explicit start offset: a committed one would be asked of a group coordinator,
        # which a broker that has just started may not have yet.
        start = OFFSET_BEGINNING if settings.start_at == "earliest" else OFFSET_END
        consumer.assign([TopicPartition(settings.agg_topic, p, start) for p in partitions])
        feed = AggregateFeed(consumer, settings.agg_topic, partitions, start, deadline, stop, hurry)
        if settings.plain or not sys.stdout.isatty():
            for aggregate in feed.follow():
                print(format_plain_line(aggregate), flush=True)
        else:
            show_live(feed)
    except OSError as exc:
        # The reader went away (`| head`) or the terminal closed: stop quietly, as cat would.
        if exc.errno not in (errno.EPIPE, errno.EIO):
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
