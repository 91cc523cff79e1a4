"""Watch the window aggregates arrive: a live table, plain lines, or a chart.

Reads the aggregate topic from its beginning, so history shows at once, then
follows it. In a terminal it draws one row per sensor and refreshes it in place;
when stdout is not a terminal (or with --plain) it prints one line per aggregate:

    Sensor3 05:08:40-05:08:50 count=40 min=21.37 mean=21.81 max=22.50

On Ctrl-C or SIGTERM it first reads the topic to its end, so its last table (or
last lines) holds every window already written; a second Ctrl-C skips that.

With --plot it instead reads both topics up to their current end, draws each
sensor's raw readings against its windows' mean and min/max band, and exits.

    python sensor_stream_viewer.py
    python sensor_stream_viewer.py --plot chart.png     # or chart.html
"""

from __future__ import annotations

import argparse
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
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from sensor_settings import (
    BrokerSettings,
    BrokerUnavailable,
    add_broker_settings,
    add_setting,
    configure_logging,
    non_negative_float,
    wait_for_broker,
)
from sensor_stream_processor import InvalidReading, is_watermark, parse_event_time, parse_reading

if TYPE_CHECKING:  # the plotting libraries load only when --plot asks for them
    import plotly.graph_objects as go
    from matplotlib.figure import Figure

logger = logging.getLogger("sensor_stream_viewer")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 12  # recent window means per sensor; the table then fits 80 columns
MATPLOTLIB_SUFFIXES = (".png", ".svg", ".pdf")
PLOTLY_SUFFIXES = (".html",)
DRAIN_TIMEOUT = 10.0  # seconds a stopping viewer may spend reading the topic to its end


# --- An aggregate message, checked ----------------------------------------------


class MissingTopic(RuntimeError):
    """A topic the viewer must read does not exist."""


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


def _is_number(value: object) -> bool:
    # bool is an int subclass, but true is not a temperature.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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
    if not all(_is_number(number) for number in numbers.values()):
        raise InvalidAggregate(f"min/mean/max are not all numbers: {numbers}")
    return Aggregate(sensor, start, end, count, **numbers)


# --- The board: what the live view knows ----------------------------------------


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

    def add(self, aggregate: Aggregate) -> None:
        row = self.rows.setdefault(aggregate.sensor, SensorRow(aggregate))
        if aggregate.end_ms >= row.last.end_ms:
            row.last = aggregate
        row.means.append(aggregate.mean)
        row.windows += 1

    def newest_end_ms(self) -> int | None:
        return max((row.last.end_ms for row in self.rows.values()), default=None)

    def input_rate(self) -> float:
        """Readings per second of event time: each sensor's newest window, summed.

        With 5 sensors at a total of 4 readings/s and 10 s windows, each window
        holds 8 readings, so this is 5 * 8 / 10 = 4.0. It measures the rate the
        producer feeds the pipeline, and a backfill does not inflate it.
        """
        return sum(
            row.last.count / ((row.last.end_ms - row.last.start_ms) / 1000)
            for row in self.rows.values()
        )

    def lag_seconds(self, now: datetime) -> float | None:
        """How far the newest window's end trails `now`; never less than 0.

        A window closes when a reading past its end + grace arrives, so in a
        live pipeline this swings between about grace and window + grace. A
        producer's final watermark lies in the future and closes windows that
        end after `now`: that is no lag, not a negative one.
        """
        newest = self.newest_end_ms()
        if newest is None:
            return None
        return max(0.0, (now - from_epoch_ms(newest)).total_seconds())


# --- Rendering: pure functions of the board -------------------------------------


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


def from_epoch_ms(epoch_ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=epoch_ms)


def format_clock(epoch_ms: int) -> str:
    return from_epoch_ms(epoch_ms).strftime("%H:%M:%S")


def format_window(aggregate: Aggregate) -> str:
    return f"{format_clock(aggregate.start_ms)}-{format_clock(aggregate.end_ms)}"


def format_plain_line(aggregate: Aggregate) -> str:
    """The stable one-line form that plain mode prints (times are UTC)."""
    return (
        f"{aggregate.sensor} {format_window(aggregate)} count={aggregate.count}"
        f" min={aggregate.min:.2f} mean={aggregate.mean:.2f} max={aggregate.max:.2f}"
    )


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
    table = Table(
        title="Temperature per sensor, latest window",
        caption=format_footer(board, now),
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("Sensor", no_wrap=True)
    table.add_column("Window (UTC)", no_wrap=True)
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
            f"{last.min:.2f}",
            f"{last.mean:.2f}",
            f"{last.max:.2f}",
            sparkline(list(row.means), SPARK_WIDTH),
            str(row.windows),
        )
    return table


# --- Reading from Kafka ------------------------------------------------------------


def make_consumer(broker: BrokerSettings) -> Consumer:
    # The viewer assigns itself every partition rather than joining a group: it
    # shares work with nobody and commits nothing, so it needs no rebalance wait
    # and leaves no group behind. The group id is only a label librdkafka wants.
    return Consumer(
        {
            **broker.librdkafka_config(),
            "group.id": f"sensor-viewer-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # An event at each partition's true end, which a stopping viewer waits for.
            "enable.partition.eof": True,
            # New windows show within 0.1 s, also on a broker that holds a fetch
            # until its wait time is up.
            "fetch.wait.max.ms": 100,
        }
    )


def find_partitions(consumer: Consumer, topic: str, timeout: float) -> list[int]:
    """The topic's partition ids; empty if it does not exist (yet)."""
    # list_topics() without a topic name never auto-creates one.
    metadata = consumer.list_topics(timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return []
    return sorted(metadata.partitions)


def wait_for_partitions(
    consumer: Consumer, topic: str, stop: threading.Event, deadline: float
) -> list[int]:
    """Wait until `topic` exists (the processor creates it), or stop, or deadline."""
    announced = False
    while not (partitions := find_partitions(consumer, topic, timeout=10)):
        if not announced:
            logger.info("Waiting for topic %s to appear", topic)
            announced = True
        if stop.wait(0.5) or time.monotonic() >= deadline:
            return []
    return partitions


def assign_all(consumer: Consumer, topic: str, partitions: list[int], start_at: str) -> None:
    offset = OFFSET_BEGINNING if start_at == "earliest" else OFFSET_END
    consumer.assign([TopicPartition(topic, p, offset) for p in partitions])


def read_aggregate(message: Message, board: SensorBoard) -> Aggregate | None:
    """Parse one polled message; log and count it if it is not an aggregate."""
    if message.error():
        logger.warning("Consumer error: %s", message.error())
        return None
    try:
        return parse_aggregate(message.key(), message.value())
    except InvalidAggregate as exc:
        board.skipped += 1
        logger.warning(
            "Skipped malformed aggregate %s[%s]@%s: %s",
            message.topic(),
            message.partition(),
            message.offset(),
            exc,
        )
        return None


def is_partition_end(message: Message) -> bool:
    error = message.error()
    return error is not None and error.code() == KafkaError._PARTITION_EOF


@dataclass
class AggregateFeed:
    """The assigned aggregate topic as Aggregates, and where each partition's reading stands."""

    consumer: Consumer
    topic: str
    partitions: list[int]
    board: SensorBoard
    # partition -> offset of its latest end-of-partition event, while nothing newer came
    at_end: dict[int, int] = field(default_factory=dict)

    def poll(self, timeout: float) -> list[Aggregate]:
        aggregates = []
        for message in self.consumer.consume(num_messages=500, timeout=timeout):
            if is_partition_end(message):
                self.at_end[message.partition()] = message.offset()
                continue
            if not message.error():
                self.at_end.pop(message.partition(), None)
            if (aggregate := read_aggregate(message, self.board)) is not None:
                self.board.add(aggregate)
                aggregates.append(aggregate)
        return aggregates

    def end_offsets(self, timeout: float) -> dict[int, int]:
        """Each partition's high watermark, asked of the broker now."""
        return {
            p: self.consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=timeout, cached=False
            )[1]
            for p in self.partitions
        }

    def reached(self, ends: dict[int, int]) -> bool:
        """Whether every partition is read up to `ends`.

        An end-of-partition event at or past the high watermark asked for after
        the last write proves it. It also holds on the embedded broker, which
        reports the base offset of the last record batch plus one: the consumer
        gets that batch whole, and the event comes after its last record.
        """
        return all(self.at_end.get(p, -1) >= end for p, end in ends.items())


def poll_aggregates(
    feed: AggregateFeed, stop: threading.Event, hurry: threading.Event, deadline: float
) -> Iterator[Aggregate | None]:
    """Yield each aggregate as it arrives, and None at least every 0.25 s (to redraw).

    Follows the topic until `stop` or the deadline. After `stop` it reads on to
    the topic's end as it is now, so the last picture holds every window already
    written; `hurry` (a second Ctrl-C) or DRAIN_TIMEOUT cuts that short.
    """
    while not stop.is_set() and time.monotonic() < deadline:
        yield from feed.poll(0.25)
        yield None
    if not stop.is_set():
        return  # --duration is over: no need to catch up
    try:
        ends = feed.end_offsets(timeout=5)
    except KafkaException as exc:
        logger.warning("Could not find the end of %s (%s); showing what came", feed.topic, exc)
        return
    give_up = time.monotonic() + DRAIN_TIMEOUT
    while not feed.reached(ends):
        if hurry.is_set():
            return
        if time.monotonic() > give_up:
            logger.warning(
                "Read %s for %gs without reaching its end; showing what came",
                feed.topic,
                DRAIN_TIMEOUT,
            )
            return
        yield from feed.poll(0.25)
        yield None


# --- The two ways to watch: plain lines, or a live table ---------------------------


def print_plain(
    feed: AggregateFeed, stop: threading.Event, hurry: threading.Event, deadline: float
) -> None:
    for aggregate in poll_aggregates(feed, stop, hurry, deadline):
        if aggregate is not None:
            print(format_plain_line(aggregate), flush=True)


def show_live(
    feed: AggregateFeed, stop: threading.Event, hurry: threading.Event, deadline: float
) -> None:
    board = feed.board
    console = Console()
    with Live(render_table(board, datetime.now(UTC)), console=console, auto_refresh=False) as live:
        route_logs_above(live)
        last_draw = 0.0
        for _ in poll_aggregates(feed, stop, hurry, deadline):
            if time.monotonic() - last_draw >= 0.25:
                live.update(render_table(board, datetime.now(UTC)), refresh=True)
                last_draw = time.monotonic()
        live.update(render_table(board, datetime.now(UTC)), refresh=True)


def route_logs_above(live: Live) -> None:
    """Send log lines through rich's stderr proxy, so they print above the table."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)


# --- The chart: raw readings against the window band ---------------------------------


@dataclass
class SensorSeries:
    readings: list[tuple[datetime, float]] = field(default_factory=list)
    windows: list[Aggregate] = field(default_factory=list)


def read_topic_to_end(broker: BrokerSettings, topic: str, timeout: float) -> list[Message]:
    """Every message now in `topic`: read from the start up to the end offsets seen at start."""
    consumer = make_consumer(broker)
    try:
        partitions = find_partitions(consumer, topic, timeout)
        if not partitions:
            raise MissingTopic(f"topic {topic} does not exist at {broker.address}")
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout)[1]
            for p in partitions
        }
        waiting = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in waiting])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while waiting:
            if time.monotonic() > deadline:
                logger.warning(
                    "Read %s for %gs without reaching its end; charting what came", topic, timeout
                )
                break
            for message in consumer.consume(num_messages=1000, timeout=0.25):
                if not message.error():
                    messages.append(message)
            # position() also moves past transaction markers, which no message reports.
            positions = consumer.position([TopicPartition(topic, p) for p in waiting])
            waiting -= {tp.partition for tp in positions if tp.offset >= ends[tp.partition]}
        # Some brokers report an end offset short of a final multi-record batch;
        # whatever is already fetched past it still belongs to the chart.
        while batch := consumer.consume(num_messages=1000, timeout=0.5):
            messages.extend(m for m in batch if not m.error())
        return messages
    finally:
        consumer.close()


def collect_series(
    aggregate_messages: list[Message], raw_messages: list[Message]
) -> dict[str, SensorSeries]:
    """Group valid readings and aggregates by sensor; malformed ones are counted and skipped."""
    series: dict[str, SensorSeries] = {}
    skipped = 0
    for message in aggregate_messages:
        try:
            aggregate = parse_aggregate(message.key(), message.value())
        except InvalidAggregate:
            skipped += 1
            continue
        series.setdefault(aggregate.sensor, SensorSeries()).windows.append(aggregate)
    for message in raw_messages:
        try:
            reading = parse_reading(message.value() or b"")
            moment = from_epoch_ms(parse_event_time(reading["ts"]))
            sensor = message.key().decode()
        except (InvalidReading, AttributeError, UnicodeDecodeError):
            skipped += 1
            continue
        if is_watermark(reading):
            continue
        series.setdefault(sensor, SensorSeries()).readings.append((moment, reading["value"]))
    if skipped:
        logger.warning("Skipped %d malformed messages while charting", skipped)
    for one in series.values():
        one.readings.sort()
        one.windows.sort(key=lambda a: a.start_ms)
    return dict(sorted(series.items(), key=lambda item: sensor_order(item[0])))


def window_steps(
    windows: list[Aggregate],
) -> tuple[list[datetime], list[float], list[float], list[float]]:
    """Each window as a flat step from start to end; a NaN breaks the line at a gap."""
    times: list[datetime] = []
    mins: list[float] = []
    means: list[float] = []
    maxes: list[float] = []
    for previous, window in zip([None, *windows], windows, strict=False):
        if previous is not None and previous.end_ms < window.start_ms:
            times.append(from_epoch_ms(previous.end_ms))
            mins.append(math.nan)
            means.append(math.nan)
            maxes.append(math.nan)
        for edge in (window.start_ms, window.end_ms):
            times.append(from_epoch_ms(edge))
            mins.append(window.min)
            means.append(window.mean)
            maxes.append(window.max)
    return times, mins, means, maxes


def plot_matplotlib(series: dict[str, SensorSeries]) -> Figure:
    """One panel per sensor: readings as dots, the mean as a line in a min/max band."""
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 1.2 + 2.0 * len(series)), layout="constrained")
    axes = figure.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (sensor, one) in zip(axes, series.items(), strict=True):
        times, mins, means, maxes = window_steps(one.windows)
        ax.fill_between(times, mins, maxes, color="tab:blue", alpha=0.2, label="window min-max")
        ax.plot(times, means, color="tab:blue", linewidth=1.5, label="window mean")
        ax.scatter(
            [t for t, _ in one.readings],
            [v for _, v in one.readings],
            s=6,
            color="tab:orange",
            label="reading",
        )
        ax.set_title(
            f"{sensor}: {len(one.readings)} readings, {len(one.windows)} windows",
            loc="left",
            fontsize="medium",
        )
        ax.set_ylabel("°C")
        ax.grid(alpha=0.3)
    figure.suptitle("Readings and window mean inside the window's min-max band", x=0.01, ha="left")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
    axes[-1].set_xlabel("event time (UTC)")
    return figure


def plot_plotly(series: dict[str, SensorSeries]) -> go.Figure:
    """The same chart, interactive: four traces per sensor (band top, band, mean, readings)."""
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=len(series), cols=1, shared_xaxes=True, subplot_titles=list(series))
    for row, (sensor, one) in enumerate(series.items(), start=1):
        times, mins, means, maxes = window_steps(one.windows)
        first = row == 1
        band = {"mode": "lines", "line": {"width": 0}, "legendgroup": "band", "connectgaps": False}
        figure.add_scatter(
            x=times, y=maxes, name=f"{sensor} max", showlegend=False, row=row, col=1, **band
        )
        figure.add_scatter(
            x=times,
            y=mins,
            name="window min-max",
            fill="tonexty",
            fillcolor="rgba(31,119,180,0.2)",
            showlegend=first,
            row=row,
            col=1,
            **band,
        )
        figure.add_scatter(
            x=times,
            y=means,
            mode="lines",
            name="window mean",
            line={"color": "rgb(31,119,180)"},
            legendgroup="mean",
            showlegend=first,
            row=row,
            col=1,
        )
        figure.add_scatter(
            x=[t for t, _ in one.readings],
            y=[v for _, v in one.readings],
            mode="markers",
            name="reading",
            marker={"size": 4, "color": "rgb(255,127,14)"},
            legendgroup="reading",
            showlegend=first,
            row=row,
            col=1,
        )
        figure.update_yaxes(title_text="°C", row=row, col=1)
    figure.update_xaxes(title_text="event time (UTC)", row=len(series), col=1)
    figure.update_layout(height=200 + 220 * len(series), title="Readings and 10-second windows")
    return figure


def write_chart(series: dict[str, SensorSeries], path: Path) -> None:
    if path.suffix.lower() in PLOTLY_SUFFIXES:
        # include_plotlyjs=True embeds plotly.js, so the file opens offline.
        plot_plotly(series).write_html(path, include_plotlyjs=True)
    else:
        plot_matplotlib(series).savefig(path, dpi=100)


def chart_topics(args: argparse.Namespace, broker: BrokerSettings) -> int:
    aggregates = read_topic_to_end(broker, args.agg_topic, args.plot_timeout)
    readings = read_topic_to_end(broker, args.raw_topic, args.plot_timeout)
    series = collect_series(aggregates, readings)
    if not series:
        logger.error(
            "Nothing to chart: %s and %s hold no valid messages", args.agg_topic, args.raw_topic
        )
        return 1
    write_chart(series, args.plot)
    logger.info(
        "Wrote %s: %d sensors, %d readings, %d windows",
        args.plot,
        len(series),
        sum(len(one.readings) for one in series.values()),
        sum(len(one.windows) for one in series.values()),
    )
    return 0


# --- Wiring ---------------------------------------------------------------------------


def chart_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in MATPLOTLIB_SUFFIXES + PLOTLY_SUFFIXES:
        supported = ", ".join(MATPLOTLIB_SUFFIXES + PLOTLY_SUFFIXES)
        raise argparse.ArgumentTypeError(f"the chart file must end in one of {supported}")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Show window aggregates as a live table, plain lines, or a chart.",
    )
    add_broker_settings(parser, creates_topics=False)
    add_setting(parser, "--agg-topic", "AGG_TOPIC", "agg-temperature", "topic of window aggregates")
    add_setting(
        parser,
        "--start-at",
        "VIEWER_START_AT",
        "earliest",
        "earliest shows the topic's history first; latest shows only new windows",
        choices=("earliest", "latest"),
    )
    add_setting(
        parser,
        "--duration",
        "VIEWER_DURATION",
        0.0,
        "seconds to watch before exiting; 0 = until stopped",
        type=non_negative_float,
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="print one line per aggregate instead of a table (automatic when not a terminal)",
    )
    parser.add_argument(
        "--plot",
        type=chart_path,
        metavar="FILE",
        help="write a chart of both topics to FILE (.png, .svg, .pdf or .html) and exit",
    )
    add_setting(
        parser,
        "--plot-timeout",
        "VIEWER_PLOT_TIMEOUT",
        30.0,
        "seconds --plot may spend reading each topic",
        type=non_negative_float,
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    broker = BrokerSettings.from_args(args)
    try:
        wait_for_broker(broker, args.broker_timeout)
        if args.plot:
            return chart_topics(args, broker)
    except (BrokerUnavailable, MissingTopic) as exc:
        logger.error("%s", exc)
        return 1
    except KeyboardInterrupt:  # Ctrl-C while charting: write nothing
        return 130

    # The first Ctrl-C or SIGTERM stops following the topic; a second one stops
    # reading it to its end, too.
    stop, hurry = threading.Event(), threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        (hurry if stop.is_set() else stop).set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    deadline = time.monotonic() + args.duration if args.duration else math.inf

    consumer = make_consumer(broker)
    try:
        partitions = wait_for_partitions(consumer, args.agg_topic, stop, deadline)
        if partitions:
            assign_all(consumer, args.agg_topic, partitions, args.start_at)
            feed = AggregateFeed(consumer, args.agg_topic, partitions, SensorBoard())
            show = print_plain if args.plain or not sys.stdout.isatty() else show_live
            try:
                show(feed, stop, hurry, deadline)
            except OSError as exc:
                # The reader went away (`| head`) or the terminal closed: stop
                # quietly, as cat would.
                if exc.errno not in (errno.EPIPE, errno.EIO):
                    raise
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
