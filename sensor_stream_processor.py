"""Aggregate raw temperature readings into 10-second windows per sensor.

Reads {"ts", "value"} readings keyed by sensor id from the raw topic, assigns
each to an epoch-aligned tumbling window by its event time (the payload's `ts`),
and when a window closes emits one message per sensor and window:

    {"start": <ms>, "end": <ms>, "temperature": {"count", "min", "max", "mean"}}

Nothing is dropped silently: a message that is not a usable reading, or a
reading that arrives after its window closed, goes unchanged to the dead-letter
topic with an `error` header saying why. Watermark messages from the producer,
{"ts": ..., "watermark": true}, move a sensor's event time forward without
counting as readings, so the last window closes when the producer stops.

    python sensor_stream_processor.py
"""

from __future__ import annotations

import gc
import logging
import math
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypedDict

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from pydantic import Field, Json, NonNegativeInt, PositiveFloat, PositiveInt, model_validator
from quixstreams import Application, message_context
from quixstreams.checkpointing.exceptions import CheckpointConsumerCommitError
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.error_callbacks import default_on_processing_error
from quixstreams.kafka.exceptions import KafkaBrokerUnavailableError, KafkaConsumerException
from quixstreams.models import Deserializer, SerializationContext, TimestampType, TopicConfig
from quixstreams.models.topics.exceptions import TopicConfigurationMismatch, TopicNotFoundError
from quixstreams.state.exceptions import InvalidChangelogOffset, InvalidStoreChangelogOffset
from quixstreams.state.rocksdb import RocksDBOptions

import launcher
from embedded_broker import PROCESSOR_PRODUCER_CONFIG
from event_time import from_epoch_ms, to_epoch_ms
from kafka_io import (
    TOPIC_RETENTION,
    BrokerOutageLog,
    BrokerUnavailable,
    TopicError,
    client_logging,
    ensure_topic,
    wait_for_broker,
)
from sensor_settings import LogLevel, RawTopicSettings, configure_logging, load_settings

logger = logging.getLogger("sensor_stream_processor")

# A 6 s session keeps group joins and failover quick on any broker. A fetch waits at
# most 50 ms: some brokers (the embedded one) hold it that long even when readings
# are there, and librdkafka's default 500 ms would then be most of a window's latency.
CONSUMER_DEFAULTS = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1500,
    "fetch.wait.max.ms": 50,
}


# The window store serializes its state on every read and write. Quix Streams' default
# wraps orjson in a Python function; orjson's own functions write the same bytes for
# the numbers a window holds, without that call per reading.
STATE_OPTIONS = RocksDBOptions(dumps=orjson.dumps, loads=orjson.loads)


class ProcessorSettings(RawTopicSettings):
    """Aggregate raw temperature readings into tumbling windows per sensor."""

    agg_topic: str = Field("agg-temperature", description="topic of window aggregates")
    dlq_topic: str = Field("", description="dead-letter topic; default <raw topic>-dlq")
    consumer_group: str = Field(
        "quix-stream-processor", description="processors in one group share the partitions"
    )
    window_seconds: PositiveInt = Field(10, description="window length")
    grace_seconds: NonNegativeInt = Field(
        1, description="how long past a window's end a reading may still arrive"
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a new consumer group starts"
    )
    state_dir: Path = Field(Path("state"), description="local directory for window state")
    processing_guarantee: Literal["at-least-once", "exactly-once"] = Field(
        "at-least-once", description="exactly-once uses Kafka transactions"
    )
    exactly_once: bool = Field(False, description="same as --processing-guarantee exactly-once")
    commit_interval: float = Field(
        5.0, ge=0, description="seconds between commits (and transactions, with exactly-once)"
    )
    consumer_config: Json[dict[str, Any]] = Field(
        "{}", description="extra librdkafka settings for the input consumer, a JSON object"
    )
    producer_config: Json[dict[str, Any]] = Field(
        "{}", description="extra librdkafka settings for the output producer, a JSON object"
    )
    summary_interval: PositiveFloat = Field(60.0, description="seconds between counter summaries")
    broker_outage_timeout: float = Field(
        120.0, ge=0, description="seconds the broker may be away mid-run before we stop; 0 = never"
    )
    log_level: LogLevel = Field("INFO", description="logging level")

    @model_validator(mode="after")
    def fill_in(self) -> ProcessorSettings:
        self.dlq_topic = self.dlq_topic or f"{self.raw_topic}-dlq"
        if self.exactly_once:
            self.processing_guarantee = "exactly-once"
        return self

    @property
    def group_state_dir(self) -> Path:
        """Where Quix Streams keeps this consumer group's window state."""
        return self.state_dir / self.consumer_group


# --- Validation: bytes in, a checked reading out -------------------------------


class Reading(TypedDict):
    ts: str
    value: float | None  # None in a watermark, which moves time and carries no value


class InvalidReading(ValueError):
    """A message that is not a usable reading; `reason` is a short machine tag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


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


def is_finite_number(value: object) -> bool:
    # An exact type check: bool is an int subclass, but true is not a temperature.
    return type(value) in (float, int) and math.isfinite(value)


class CurrentMessage:
    """The raw bytes, headers and event time of the message being processed.

    It is safe to keep them here: Quix Streams runs the whole dataframe on one
    message before it polls the next, so later steps see the message they handle.
    """

    __slots__ = ("event_ms", "headers", "payload")

    def __init__(self) -> None:
        self.payload: bytes = b""
        self.headers: Any = None
        self.event_ms: int = 0


current = CurrentMessage()


class ReadingDeserializer(Deserializer):
    """Parses each message and its event time, counts it, and keeps it as `current`.

    A message that is not a usable reading comes out as its InvalidReading, for the
    dataframe's first step to dead-letter. Raised here, the error would have Quix
    Streams skip the message without storing its offset, and a bad message last on
    its partition would stay uncommitted, to be dead-lettered again after a restart.
    """

    def __init__(self, counters: Counters) -> None:
        super().__init__()
        self.counters = counters

    def __call__(self, value: bytes, ctx: SerializationContext) -> Reading | InvalidReading:
        current.payload, current.headers = value, ctx.headers
        self.counters.processed += 1
        try:
            reading = parse_reading(value)
            current.event_ms = parse_event_time(reading["ts"])
        except InvalidReading as invalid:
            return invalid
        if reading["value"] is None:
            self.counters.watermarks += 1
        return reading


# --- Event time: the payload's `ts`, to the millisecond -------------------------


def parse_event_time(ts: object) -> int:
    """ISO-8601 text to epoch milliseconds; a time without an offset is UTC."""
    if not isinstance(ts, str) or len(ts) <= 10:  # a date alone is not a moment
        raise InvalidReading("bad-ts", f"'ts' is {ts!r}, not an ISO-8601 date and time")
    try:
        moment = datetime.fromisoformat(ts)
    except ValueError:
        raise InvalidReading("bad-ts", f"'ts' is {ts!r}, not an ISO-8601 date and time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_epoch_ms(moment)


def extract_event_time(
    value: object, headers: Any, timestamp_ms: int, timestamp_type: TimestampType
) -> int:
    """The time the deserializer read from `ts`. A message that is not a reading keeps its
    Kafka timestamp: it is dead-lettered before any window sees it."""
    return current.event_ms if type(value) is dict else timestamp_ms


# --- Aggregation: the window's initializer and reducer --------------------------


class WindowStats(TypedDict):
    count: int  # 0 for a window that only a watermark has touched
    min: float | None
    max: float | None
    sum: float
    # The low-order bits that `sum` lost (compensated summation), so the mean
    # stays accurate even when large and small readings mix.
    compensation: float


def initialize_stats(reading: Reading) -> WindowStats:
    value = reading["value"]
    if value is None:  # a watermark
        return {"count": 0, "min": None, "max": None, "sum": 0.0, "compensation": 0.0}
    return {"count": 1, "min": value, "max": value, "sum": value, "compensation": 0.0}


def add_reading(stats: WindowStats, reading: Reading) -> WindowStats:
    value = reading["value"]
    if value is None:  # a watermark
        return stats
    count, low, high, old = stats["count"], stats["min"], stats["max"], stats["sum"]
    if count == 0:
        return initialize_stats(reading)
    total = old + value
    # Knuth's 2Sum: exactly what rounding took from `total`, whichever addend is larger.
    part = total - old
    lost = (old - (total - part)) + (value - part)
    return {
        "count": count + 1,
        "min": value if value < low else low,
        "max": value if value > high else high,
        "sum": total,
        "compensation": stats["compensation"] + lost,
    }


# --- Output: one message per closed window ---------------------------------------


def has_readings(window: dict[str, Any]) -> bool:
    """A window that only watermarks touched is not emitted."""
    return window["value"]["count"] > 0


def summarize_window(window: dict[str, Any]) -> dict[str, Any]:
    """Turn Quix Streams' {"start", "end", "value": stats} into the output message."""
    stats: WindowStats = window["value"]
    return {
        "start": window["start"],
        "end": window["end"],
        "temperature": {
            "count": stats["count"],
            "min": stats["min"],
            "max": stats["max"],
            "mean": (stats["sum"] + stats["compensation"]) / stats["count"],
        },
    }


def format_ms(epoch_ms: int) -> str:
    return from_epoch_ms(epoch_ms).isoformat(timespec="milliseconds")


def log_aggregate(value: dict[str, Any], key: bytes, timestamp: int, headers: Any) -> None:
    if logger.isEnabledFor(logging.INFO):  # skip formatting the times when nobody reads them
        t = value["temperature"]
        logger.info(
            "%s [%s, %s) count=%d min=%.2f max=%.2f mean=%.4f",
            key.decode(errors="replace"), format_ms(value["start"]), format_ms(value["end"]),
            t["count"], t["min"], t["max"], t["mean"],
        )  # fmt: skip


# --- Dead letters: what cannot be aggregated goes, unchanged, to its own topic ---


class DeadLetterError(RuntimeError):
    """A dead letter could not be written, so the processor must not commit past it."""


class DeadLetterSink:
    """Produces one dead letter and waits until the broker has it.

    Flushing each one means the raw message's offset is never committed before
    its dead letter is safe.
    """

    def __init__(self, producer: Producer, topic: str, counters: Counters) -> None:
        self.producer, self.topic, self.counters = producer, topic, counters

    @classmethod
    def connect(cls, settings: ProcessorSettings, counters: Counters) -> DeadLetterSink:
        config = {**settings.librdkafka_config(), **client_logging(), "enable.idempotence": True}
        return cls(Producer(config), settings.dlq_topic, counters)

    def send(self, key: bytes | None, value: bytes | None, headers: Any, reason: str, detail: str,
             extra: list[tuple[str, bytes]] = ()) -> None:  # fmt: skip
        failures: list[KafkaError] = []
        kept = [(k, v) for k, v in (headers or []) if k not in ("error", "error_detail")]
        self.producer.produce(
            self.topic,
            key=key,
            value=value,
            headers=[*kept, *extra, ("error", reason.encode()), ("error_detail", detail.encode())],
            on_delivery=lambda err, msg: failures.append(err) if err else None,
        )
        if self.producer.flush(30) > 0 or failures:
            raise DeadLetterError(
                f"could not write to dead-letter topic {self.topic}: "
                f"{'; '.join(f.str() for f in failures) or 'not delivered within 30 s'}"
            )
        self.counters.dead_lettered[reason] += 1


class DeadLetterCallbacks:
    """The two places where the pipeline hands over a message it cannot aggregate."""

    def __init__(self, sink: DeadLetterSink) -> None:
        self.sink = sink

    def keep_readings(self, value: object, key: bytes | None, timestamp: int, headers: Any) -> bool:
        """The first step: a reading with a sensor key goes on; anything else is
        dead-lettered, and its offset committed like any other message's."""
        if key and type(value) is dict:
            return True
        if isinstance(value, InvalidReading):
            reason, detail = value.reason, value.detail
        elif value is None:  # a message without a value never reached the deserializer
            reason, detail = "invalid-json", "the message has no value"
        else:
            reason, detail = "no-key", "the message has no key (sensor id)"
        payload = None if value is None else current.payload  # a null value stays null
        self.dead_letter(key, payload, headers, reason, detail)
        return False

    def on_late(self, value: Reading, key: bytes, timestamp_ms: int, late_by_ms: int, start: int,
                end: int, *where: Any) -> bool:  # fmt: skip
        if value["value"] is None:
            return False  # an old watermark says nothing new
        detail = (
            f"reading at {format_ms(timestamp_ms)} is {late_by_ms} ms late for window "
            f"[{format_ms(start)}, {format_ms(end)}) of {key.decode(errors='replace')}"
        )
        window = [("window_start", str(start).encode()), ("window_end", str(end).encode())]
        self.dead_letter(key, current.payload, current.headers, "late", detail, window)
        return False  # logged by dead_letter; Quix Streams need not

    def dead_letter(self, key: bytes | None, value: bytes | None, headers: Any, reason: str,
                    detail: str, extra: list[tuple[str, bytes]] = ()) -> None:  # fmt: skip
        """One log line, saying where the message was, and the dead letter itself."""
        where = message_context()
        logger.warning(
            "Dead-lettered %s[%s]@%s key=%r: %s: %s",
            where.topic, where.partition, where.offset, key, reason, detail,
        )  # fmt: skip
        self.sink.send(key, value, headers, reason, detail, extra)


# --- Counters: what happened, every SUMMARY_INTERVAL and at the end ---------------


@dataclass(slots=True)
class Counters:
    """Plain attributes: a few instructions to add to, where a Counter's item costs more."""

    processed: int = 0
    aggregated: int = 0
    windows_emitted: int = 0
    watermarks: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)  # by reason

    def __str__(self) -> str:
        counts = [
            ("processed", self.processed),
            ("aggregated", self.aggregated),
            ("windows emitted", self.windows_emitted),
            ("watermarks", self.watermarks),
        ]
        counts += [(f"dead-lettered {why}", n) for why, n in sorted(self.dead_lettered.items())]
        return ", ".join(f"{name}={n}" for name, n in counts)


def count_window(counters: Counters, window: dict[str, Any]) -> None:
    counters.windows_emitted += 1
    counters.aggregated += window["temperature"]["count"]


@contextmanager
def periodic_summary(counters: Counters, interval: float) -> Iterator[None]:
    """Log the counters every `interval` seconds while the body runs, and once at the end."""
    stop = threading.Event()

    def log_every_interval() -> None:
        while not stop.wait(interval):
            logger.info("Summary: %s", counters)

    thread = threading.Thread(target=log_every_interval, name="summary", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        logger.info("Final summary: %s", counters)


# --- Starting: checks first, then the Application ------------------------------


class CannotRun(RuntimeError):
    """The processor cannot start or go on; the message says why and what to do."""


def check_state_dir(settings: ProcessorSettings) -> None:
    """Fail now, in one line, if the window state cannot be written under STATE_DIR."""
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=settings.state_dir).close()
    except OSError as exc:
        raise CannotRun(
            f"cannot write window state under STATE_DIR {settings.state_dir} "
            f"({exc.strerror or exc}); set STATE_DIR or --state-dir to a writable directory"
        ) from None


def check_saved_state_matches_broker(settings: ProcessorSettings) -> None:
    """Refuse saved window state whose changelog topic the broker does not have.

    That state belongs to a broker that was restarted empty (the embedded broker
    keeps nothing), or to a changelog topic someone deleted. Restored, it would
    judge new readings against old clocks. Quix Streams keeps a store at
    <state dir>/<group>/<store>/<topic>/<partition>, with the changelog
    changelog__<group>--<topic>--<store>.
    """
    group_dir, raw = settings.group_state_dir, settings.raw_topic
    stores = sorted(group_dir.iterdir()) if group_dir.is_dir() else []
    saved = [s.name for s in stores if (s / raw).is_dir() and any((s / raw).iterdir())]
    if not saved:
        return
    try:
        admin = AdminClient(settings.librdkafka_config())
        topics = admin.list_topics(timeout=settings.broker_timeout).topics
    except KafkaException as exc:  # the broker went away since it answered
        raise CannotRun(
            f"could not list the topics at {settings.broker_address}: {exc.args[0].str()}"
        ) from None
    for store in saved:
        if (changelog := f"changelog__{settings.consumer_group}--{raw}--{store}") not in topics:
            raise CannotRun(
                f"the window state in {group_dir} belongs to changelog topic {changelog}, "
                f"which the broker at {settings.broker_address} does not have (it was restarted "
                f"empty, or the topic was deleted); remove {group_dir} and start again"
            )


def prepare_to_run(settings: ProcessorSettings) -> None:
    """What can fail before Quix Streams starts, each with a one-line error."""
    check_state_dir(settings)
    wait_for_broker(settings, settings.broker_timeout)
    for topic in (settings.raw_topic, settings.dlq_topic, settings.agg_topic):
        ensure_topic(settings, topic, settings.partitions, settings.broker_timeout)
    check_saved_state_matches_broker(settings)


def build_application(
    settings: ProcessorSettings, counters: Counters, dead: DeadLetterCallbacks
) -> Application:
    """The Application with its pipeline, built again while the broker does not yet
    list the changelog topic Quix Streams has just created (Kafka can lag a moment)."""
    deadline = time.monotonic() + settings.broker_timeout
    while True:
        app = Application(
            broker_address=settings.connection(),
            consumer_group=settings.consumer_group,
            auto_offset_reset=settings.auto_offset_reset,
            state_dir=settings.state_dir,
            rocksdb_options=STATE_OPTIONS,
            processing_guarantee=settings.processing_guarantee,
            commit_interval=settings.commit_interval,
            on_consumer_error=stop_on_consumer_error,
            on_processing_error=stop_on_processing_error,
            consumer_extra_config={**CONSUMER_DEFAULTS, **settings.consumer_config},
            producer_extra_config=settings.producer_config,
            broker_availability_timeout=settings.broker_outage_timeout,
            loglevel=None,  # use our log format
        )
        try:
            build_pipeline(app, settings, counters, dead)
            return app
        except TopicNotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# How a commit fails once the broker has restarted: it has forgotten the group's members,
# or the group's coordinator is not back yet.
AFTER_A_BROKER_RESTART = (
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError._WAIT_COORD,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
)


def run_application(settings: ProcessorSettings, counters: Counters) -> None:
    """Run the Application until it stops. After a broker restart the next commit can
    fail: join the group again from the last commit, as a restarted processor would (the
    readings since are aggregated again, never lost; with exactly-once, Quix Streams has
    aborted the transaction)."""
    dead = DeadLetterCallbacks(DeadLetterSink.connect(settings, counters))
    while True:
        app = build_application(settings, counters, dead)
        # The libraries' objects live as long as the process: keep the garbage collector
        # from scanning them again and again while readings stream through.
        gc.freeze()
        try:
            return app.run()
        except (CheckpointConsumerCommitError, KafkaException) as exc:  # exactly-once: the latter
            error = exc.error if isinstance(exc, CheckpointConsumerCommitError) else exc.args[0]
            if not isinstance(error, KafkaError) or error.code() not in AFTER_A_BROKER_RESTART:
                raise
            logger.warning(
                "A commit to the broker at %s failed (%s), as after a broker restart; "
                "joining group %s again from the last commit",
                settings.broker_address, error.str(), settings.consumer_group,
            )  # fmt: skip


# --- When things go wrong: one line saying what happened and what to do ----------


def stop_on_consumer_error(exc: Exception, message: Any, quix_logger: logging.Logger) -> bool:
    """Stop the app (a bad message never raises: this is the broker or the window state),
    without Quix Streams' traceback: main() explains the failures it knows in one line."""
    return False


def stop_on_processing_error(exc: Exception, row: Any, quix_logger: logging.Logger) -> bool:
    """Stop the app; a dead letter that could not be written without Quix Streams'
    traceback (main() explains it), anything else with Quix Streams' report."""
    if isinstance(exc, DeadLetterError):
        return False
    return default_on_processing_error(exc, row, quix_logger)


def explain(exc: Exception, settings: ProcessorSettings) -> str | None:
    """One line for the failures we know, else None (a traceback is the better report)."""
    state, at = settings.group_state_dir, settings.broker_address
    if isinstance(exc, InvalidStoreChangelogOffset | InvalidChangelogOffset):
        return (
            f"the window state in {state} is ahead of its changelog topic at {at} "
            f"({type(exc).__name__}), so it cannot be restored: remove {state} and start again. "
            "On the embedded broker (make broker) its high-watermark quirk causes this: run "
            f"the processor there with PRODUCER_CONFIG='{PROCESSOR_PRODUCER_CONFIG}'"
        )
    if isinstance(exc, KeyError) and exc.args[:1] == ("retention.ms",):
        return (
            f"raw topic {settings.raw_topic} at {at} has no retention.ms setting, which Quix "
            "Streams needs for the changelog topic: another client created it without "
            "settings (the embedded broker creates any topic a client asks about). Delete the "
            "topic, or restart the embedded broker, and let the processor or producer create it"
        )
    if isinstance(exc, TopicConfigurationMismatch):
        return (
            f"raw topic {settings.raw_topic} does not have as many partitions as this consumer "
            f"group's window state ({exc}); the topic was re-created with another partition "
            f"count. Start with a new CONSUMER_GROUP, or delete that changelog topic and "
            f"remove {state}"
        )
    if isinstance(exc, KafkaBrokerUnavailableError):
        return (
            f"the broker at {at} has been unreachable for more than "
            f"{settings.broker_outage_timeout:g} s (BROKER_OUTAGE_TIMEOUT); start the "
            "processor again once it is back: it resumes from its last commit"
        )
    if isinstance(exc, KafkaConsumerException) and exc.code == KafkaError.UNKNOWN_TOPIC_OR_PART:
        return (
            f"a topic this processor uses is gone from the broker at {at} ({exc.description}); "
            f"if the broker was restarted empty, remove {state} and start again"
        )
    if isinstance(exc, DeadLetterError):
        return f"{exc}; stopped without committing past it, start again once the broker is back"
    return None


# --- The pipeline, and main() ----------------------------------------------------


def build_pipeline(
    app: Application, settings: ProcessorSettings, counters: Counters, dead: DeadLetterCallbacks
) -> StreamingDataFrame:
    """Raw topic -> tumbling window reduce per sensor -> aggregate topic."""
    config = TopicConfig(settings.partitions, 1, extra_config=dict(TOPIC_RETENTION))
    raw = app.topic(
        settings.raw_topic,
        key_deserializer="bytes",  # sensor ids stay bytes: no decoding per reading
        value_deserializer=ReadingDeserializer(counters),
        timestamp_extractor=extract_event_time,  # attached before the dataframe is built
        config=config,
    )
    aggregates = app.topic(
        settings.agg_topic, key_serializer="bytes", value_serializer="json", config=config
    )
    sdf = app.dataframe(raw)
    sdf = sdf.filter(dead.keep_readings, metadata=True)
    sdf = sdf.tumbling_window(
        timedelta(seconds=settings.window_seconds),
        grace_ms=timedelta(seconds=settings.grace_seconds),
        on_late=dead.on_late,
    )
    sdf = sdf.reduce(reducer=add_reading, initializer=initialize_stats)
    # Close windows per sensor: a reading is late only against its own sensor's clock.
    sdf = sdf.final(closing_strategy="key")
    sdf = sdf.filter(has_readings).apply(summarize_window)
    sdf = sdf.update(log_aggregate, metadata=True).update(partial(count_window, counters))
    return sdf.to_topic(aggregates)


def main(argv: list[str] | None = None) -> int:
    settings = load_settings(ProcessorSettings, argv)
    configure_logging(settings.log_level, BrokerOutageLog(settings.broker_address))
    counters = Counters()
    try:
        with launcher.interrupted_by_stop_signals():  # until Quix Streams installs its own
            prepare_to_run(settings)
            logger.info(
                "Aggregating %s into %ss windows on %s (%s); dead letters to %s",
                settings.raw_topic, settings.window_seconds, settings.agg_topic,
                settings.processing_guarantee, settings.dlq_topic,
            )  # fmt: skip
            with periodic_summary(counters, settings.summary_interval):
                run_application(settings, counters)
    except KeyboardInterrupt:  # Ctrl-C before Quix Streams ran, or a second one as it stopped
        logger.info("Stopped" if counters.processed else "Stopped before processing began")
        return 0
    except (CannotRun, BrokerUnavailable, TopicError) as exc:
        logger.error("%s", exc)
        return 1
    except Exception as exc:
        if (line := explain(exc, settings)) is None:
            raise  # not a failure we know: the traceback is the best report
        logger.error("%s", line)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
