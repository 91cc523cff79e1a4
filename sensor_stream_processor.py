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

import argparse
import logging
import math
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient
from quixstreams import Application
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.kafka.exceptions import KafkaBrokerUnavailableError, KafkaConsumerException
from quixstreams.models import Deserializer, SerializationContext, TimestampType
from quixstreams.models.topics.exceptions import TopicConfigurationMismatch
from quixstreams.state.exceptions import InvalidChangelogOffset, InvalidStoreChangelogOffset

from sensor_settings import (
    BrokerSettings,
    BrokerUnavailable,
    Stopped,
    TopicError,
    add_broker_settings,
    add_setting,
    client_logging,
    configure_logging,
    ensure_topic,
    json_object,
    non_negative_float,
    partitions_note,
    positive_int,
    raise_stopped_on_signals,
    raw_topic_config,
    wait_for_broker,
)

logger = logging.getLogger("sensor_stream_processor")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# What the processor needs on the embedded broker (embedded_broker.PROCESSOR_PRODUCER_CONFIG).
EMBEDDED_BROKER_PRODUCER_CONFIG = '{"batch.num.messages": 1}'


class Reading(TypedDict):
    ts: str
    value: NotRequired[float]  # absent in a watermark
    watermark: NotRequired[bool]


class WindowStats(TypedDict):
    count: int  # 0 for a window that only a watermark has touched
    min: float | None
    max: float | None
    sum: float
    # Neumaier compensation: the low-order bits that `sum` lost, so the mean
    # stays accurate even when large and small readings mix.
    compensation: float


class CannotRun(RuntimeError):
    """The processor cannot start or go on; the message says why and what to do."""


class DeadLetterError(RuntimeError):
    """A dead letter could not be written, so the processor must not commit past it."""


class InvalidReading(ValueError):
    """A message that is not a usable reading; `reason` is a short machine tag."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --- Validation: bytes in, a checked reading out -------------------------------


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
        return reading  # type: ignore[return-value]  # moves time; carries no value
    value = reading.get("value")
    # bool is an int subclass, but true is not a temperature.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        reason = "missing-value" if value is None else "non-numeric-value"
        raise InvalidReading(reason, f"'value' is {value!r}, not a finite number")
    return reading  # type: ignore[return-value]


def is_watermark(reading: Reading) -> bool:
    return reading.get("watermark") is True


class ReadingDeserializer(Deserializer):
    """Parses each message and remembers its bytes and headers.

    Quix Streams deserializes one message and runs the whole dataframe on it
    before it polls the next, so the steps after this one can dead-letter the
    current message exactly as it arrived.
    """

    def __init__(self, counters: Counter[str]) -> None:
        super().__init__()
        self.counters = counters
        self.current: tuple[bytes, Any] = (b"", None)

    def __call__(self, value: bytes, ctx: SerializationContext) -> Reading:
        self.current = (value, ctx.headers)
        self.counters["processed"] += 1
        reading = parse_reading(value)
        if is_watermark(reading):
            self.counters["watermarks"] += 1
        return reading


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
    # Integer arithmetic: float seconds can be one millisecond off.
    delta = moment - EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def extract_event_time(
    value: Reading, headers: Any, timestamp_ms: int, timestamp_type: TimestampType
) -> int:
    if value is None:  # a message without a value never reached the deserializer
        raise InvalidReading("invalid-json", "the message has no value")
    return parse_event_time(value["ts"])


# --- Aggregation: the window's initializer and reducer --------------------------


def initialize_stats(reading: Reading) -> WindowStats:
    if is_watermark(reading):
        return {"count": 0, "min": None, "max": None, "sum": 0.0, "compensation": 0.0}
    value = reading["value"]
    return {"count": 1, "min": value, "max": value, "sum": value, "compensation": 0.0}


def add_reading(stats: WindowStats, reading: Reading) -> WindowStats:
    if is_watermark(reading):
        return stats
    if stats["count"] == 0:
        return initialize_stats(reading)
    value = reading["value"]
    total = stats["sum"] + value
    if abs(stats["sum"]) >= abs(value):
        lost = (stats["sum"] - total) + value
    else:
        lost = (value - total) + stats["sum"]
    return {
        "count": stats["count"] + 1,
        "min": min(stats["min"], value),
        "max": max(stats["max"], value),
        "sum": total,
        "compensation": stats["compensation"] + lost,
    }


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


# --- What happens to readings that cannot be aggregated ------------------------


def format_ms(epoch_ms: int) -> str:
    return (EPOCH + timedelta(milliseconds=epoch_ms)).isoformat(timespec="milliseconds")


def dead_letter_headers(headers: Any, reason: str, detail: str) -> list[tuple[str, bytes]]:
    """The original headers, plus why the message could not be used."""
    kept = [(k, v) for k, v in (headers or []) if k not in ("error", "error_detail")]
    return [*kept, ("error", reason.encode()), ("error_detail", detail.encode())]


class DeadLetters:
    """Sends unusable messages, unchanged, to the dead-letter topic, and counts them.

    Each send is flushed before the processor moves on, so the raw message's
    offset is never committed before its dead letter is on the broker.
    """

    def __init__(self, producer: Producer, topic: str, deserializer: ReadingDeserializer) -> None:
        self.producer = producer
        self.topic = topic
        self.deserializer = deserializer
        self.counters = deserializer.counters

    def send(self, key: bytes | None, value: bytes, headers: Any, reason: str, detail: str) -> None:
        failures: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failures.append(err)

        self.producer.produce(
            self.topic,
            key=key,
            value=value,
            headers=dead_letter_headers(headers, reason, detail),
            on_delivery=on_delivery,
        )
        # Stop rather than commit past a message whose dead letter is not safe.
        if self.producer.flush(30) > 0 or failures:
            raise DeadLetterError(
                f"could not write to dead-letter topic {self.topic}: "
                f"{'; '.join(f.str() for f in failures) or 'not delivered within 30 s'}"
            )
        self.counters[f"dead-lettered {reason}"] += 1

    def on_consumer_error(self, exc: Exception, message: Any, _logger: logging.Logger) -> bool:
        """Bad bytes, JSON or fields: dead-letter and go on. Anything else stops the app."""
        if not isinstance(exc, InvalidReading) or message is None:
            return False
        logger.warning(
            "Dead-lettered %s[%s]@%s key=%r: %s",
            message.topic(), message.partition(), message.offset(), message.key(), exc,
        )  # fmt: skip
        self.send(message.key(), message.value(), message.headers(), exc.reason, exc.detail)
        return True

    def keep_if_keyed(self, value: Reading, key: str | None, timestamp: int, headers: Any) -> bool:
        if key:
            return True
        logger.warning("Dead-lettered a reading without a sensor key: %s", value)
        payload, headers = self.deserializer.current
        self.send(None, payload, headers, "no-key", "the message has no key (sensor id)")
        return False

    def on_late(
        self, value: Reading, key: str, timestamp_ms: int, late_by_ms: int, start: int, end: int,
        name: str, topic: str, partition: int, offset: int,
    ) -> bool:  # fmt: skip
        if is_watermark(value):
            return False  # an old watermark says nothing new
        detail = (
            f"reading at {format_ms(timestamp_ms)} is {late_by_ms} ms late for window "
            f"[{format_ms(start)}, {format_ms(end)}) of {key}"
        )
        logger.warning("Dead-lettered late reading %s[%s]@%s: %s", topic, partition, offset, detail)
        payload, headers = self.deserializer.current
        headers = [*(headers or []), ("window_start", str(start).encode()),
                   ("window_end", str(end).encode())]  # fmt: skip
        self.send(key.encode(), payload, headers, "late", detail)
        return False  # logged here; Quix Streams need not

    def count_window(self, window: dict[str, Any]) -> None:
        self.counters["windows emitted"] += 1
        self.counters["aggregated"] += window["temperature"]["count"]


def format_counters(counters: Counter[str]) -> str:
    names = ["processed", "aggregated", "windows emitted", "watermarks"]
    names += sorted(n for n in counters if n.startswith("dead-lettered"))
    return ", ".join(f"{name}={counters[name]}" for name in names)


@contextmanager
def periodic_summary(counters: Counter[str], interval: float) -> Iterator[None]:
    """Log the counters every `interval` seconds while the body runs, and once at the end."""
    stop = threading.Event()

    def log_every_interval() -> None:
        while not stop.wait(interval):
            logger.info("Summary: %s", format_counters(counters))

    thread = threading.Thread(target=log_every_interval, name="summary", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        logger.info("Final summary: %s", format_counters(counters))


def log_aggregate(value: dict[str, Any], key: str, timestamp: int, headers: Any) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return  # skip formatting the times when nobody reads them
    t = value["temperature"]
    logger.info(
        "%s [%s, %s) count=%d min=%.2f max=%.2f mean=%.4f",
        key,
        format_ms(value["start"]),
        format_ms(value["end"]),
        t["count"],
        t["min"],
        t["max"],
        t["mean"],
    )


# --- Wiring ---------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Aggregate raw temperature readings into tumbling windows per sensor.",
    )
    add_broker_settings(parser)
    add_setting(parser, "--agg-topic", "AGG_TOPIC", "agg-temperature", "topic of window aggregates")
    add_setting(
        parser,
        "--consumer-group",
        "CONSUMER_GROUP",
        "quix-stream-processor",
        "consumer group; processors in one group share the partitions",
    )
    add_setting(
        parser, "--window-seconds", "WINDOW_SECONDS", 10, "window length", type=positive_int
    )
    add_setting(
        parser,
        "--grace-seconds",
        "GRACE_SECONDS",
        1,
        "how long past a window's end a reading may still arrive",
        type=int,
    )
    add_setting(
        parser,
        "--auto-offset-reset",
        "AUTO_OFFSET_RESET",
        "earliest",
        "where a new consumer group starts",
        choices=("earliest", "latest"),
    )
    add_setting(parser, "--state-dir", "STATE_DIR", "state", "local directory for window state")
    add_setting(
        parser,
        "--log-level",
        "LOG_LEVEL",
        "INFO",
        "logging level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    )
    add_setting(
        parser,
        "--dlq-topic",
        "DLQ_TOPIC",
        None,
        "dead-letter topic for unusable and late messages; default <raw topic>-dlq",
    )
    add_setting(
        parser,
        "--processing-guarantee",
        "PROCESSING_GUARANTEE",
        "at-least-once",
        "at-least-once, or exactly-once with Kafka transactions",
        choices=("at-least-once", "exactly-once"),
    )
    parser.add_argument(
        "--exactly-once",
        dest="processing_guarantee",
        action="store_const",
        const="exactly-once",
        help="same as --processing-guarantee exactly-once",
    )
    add_setting(
        parser,
        "--commit-interval",
        "COMMIT_INTERVAL",
        5.0,
        "seconds between commits (and transactions, with exactly-once)",
        type=non_negative_float,
    )
    add_setting(
        parser,
        "--producer-config",
        "PRODUCER_CONFIG",
        "{}",
        "extra librdkafka settings for the output and changelog producer, as a JSON object",
        type=json_object,
    )
    add_setting(
        parser,
        "--summary-interval",
        "SUMMARY_INTERVAL",
        60.0,
        "seconds between counter summaries in the log",
        type=non_negative_float,
    )
    add_setting(
        parser,
        "--broker-outage-timeout",
        "BROKER_OUTAGE_TIMEOUT",
        120.0,
        "seconds the broker may be unreachable mid-run before the processor stops; 0 = never",
        type=non_negative_float,
    )
    args = parser.parse_args(argv)
    if args.grace_seconds < 0:
        parser.error("--grace-seconds must be zero or more")
    if args.summary_interval <= 0:
        parser.error("--summary-interval must be more than zero")
    args.dlq_topic = args.dlq_topic or f"{args.raw_topic}-dlq"
    return args


def make_application(args: argparse.Namespace, dead_letters: DeadLetters) -> Application:
    broker = BrokerSettings.from_args(args)
    return Application(
        broker_address=broker.connection(),
        consumer_group=args.consumer_group,
        auto_offset_reset=args.auto_offset_reset,
        state_dir=args.state_dir,
        processing_guarantee=args.processing_guarantee,
        commit_interval=args.commit_interval,
        on_consumer_error=dead_letters.on_consumer_error,
        # A 6 s session keeps group joins and failover quick on any broker.
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1500},
        producer_extra_config=args.producer_config,
        broker_availability_timeout=args.broker_outage_timeout,
        loglevel=None,  # use our log format
    )


def make_dead_letters(args: argparse.Namespace) -> DeadLetters:
    broker = BrokerSettings.from_args(args)
    producer = Producer(
        {**broker.librdkafka_config(), **client_logging(), "enable.idempotence": True}
    )
    return DeadLetters(producer, args.dlq_topic, ReadingDeserializer(Counter()))


def build_pipeline(
    app: Application, args: argparse.Namespace, dead_letters: DeadLetters
) -> StreamingDataFrame:
    """Raw topic -> tumbling window reduce -> agg topic; shared with the benchmarks."""
    topic_config = raw_topic_config(args.partitions)
    raw = app.topic(
        args.raw_topic,
        key_deserializer="string",
        value_deserializer=dead_letters.deserializer,
        timestamp_extractor=extract_event_time,
        config=topic_config,
    )
    aggregates = app.topic(
        args.agg_topic, key_serializer="string", value_serializer="json", config=topic_config
    )
    sdf = app.dataframe(raw)
    sdf = sdf.filter(dead_letters.keep_if_keyed, metadata=True)
    sdf = sdf.tumbling_window(
        timedelta(seconds=args.window_seconds),
        grace_ms=timedelta(seconds=args.grace_seconds),
        on_late=dead_letters.on_late,
    )
    # Close windows per sensor: a reading is late only against its own sensor's clock.
    sdf = sdf.reduce(reducer=add_reading, initializer=initialize_stats)
    sdf = sdf.final(closing_strategy="key")
    sdf = sdf.filter(has_readings)
    sdf = sdf.apply(summarize_window)
    sdf = sdf.update(log_aggregate, metadata=True)
    sdf = sdf.update(dead_letters.count_window)
    sdf = sdf.to_topic(aggregates)
    return sdf


# --- When things go wrong: checks before the start, and one line for each failure ---


def check_state_dir(args: argparse.Namespace) -> None:
    """Fail now, in one line, if the window state cannot be written under STATE_DIR."""
    try:
        Path(args.state_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=args.state_dir):
            pass
    except OSError as exc:
        raise CannotRun(
            f"cannot write window state under STATE_DIR {args.state_dir} "
            f"({exc.strerror or exc}); set STATE_DIR or --state-dir to a writable directory"
        ) from None


def group_state_dir(args: argparse.Namespace) -> Path:
    """Where Quix Streams keeps this consumer group's window state."""
    return Path(args.state_dir) / args.consumer_group


def changelogs_of_saved_state(args: argparse.Namespace) -> list[str]:
    """The changelog topic of every window store saved for the raw topic under STATE_DIR.

    Quix Streams keeps a store at <state dir>/<group>/<store>/<topic>/<partition>
    and names its changelog changelog__<group>--<topic>--<store>.
    """
    group_dir = group_state_dir(args)
    if not group_dir.is_dir():
        return []
    return [
        f"changelog__{args.consumer_group}--{args.raw_topic}--{store.name}"
        for store in sorted(group_dir.iterdir())
        if (store / args.raw_topic).is_dir()
        and any(p.is_dir() for p in (store / args.raw_topic).iterdir())
    ]


def check_saved_state_matches_broker(args: argparse.Namespace, broker: BrokerSettings) -> None:
    """Refuse saved window state whose changelog topic the broker does not have.

    That state belongs to a broker that was restarted empty (the embedded broker
    keeps nothing), or to a changelog topic someone deleted. Restored, it would
    judge new readings against old clocks, and Quix Streams would stop at the
    first commit with InvalidChangelogOffset.
    """
    saved = changelogs_of_saved_state(args)
    if not saved:
        return
    admin = AdminClient({**broker.librdkafka_config(), **client_logging()})
    try:
        topics = admin.list_topics(timeout=args.broker_timeout).topics
    except KafkaException as exc:
        raise BrokerUnavailable(f"could not list the topics at {broker.address}: {exc}") from None
    for changelog in saved:
        if changelog not in topics:
            raise CannotRun(
                f"the window state in {group_state_dir(args)} belongs to changelog topic "
                f"{changelog}, which the broker at {broker.address} does not have (it was "
                f"restarted empty, or the topic was deleted); remove {group_state_dir(args)} "
                "and start again"
            )


def explain(exc: Exception, args: argparse.Namespace) -> str | None:
    """One line saying what went wrong and what to do, for the failures we know; else None."""
    state = group_state_dir(args)
    if isinstance(exc, InvalidStoreChangelogOffset | InvalidChangelogOffset):
        return (
            f"the window state in {state} is ahead of its changelog topic at "
            f"{args.broker_address} ({type(exc).__name__}), so it cannot be restored: remove "
            f"{state} and start again. On the embedded broker (make broker) its high-watermark "
            "quirk causes this: run the processor there with "
            f"PRODUCER_CONFIG='{EMBEDDED_BROKER_PRODUCER_CONFIG}'"
        )
    if isinstance(exc, KeyError) and exc.args[:1] == ("retention.ms",):
        return (
            f"raw topic {args.raw_topic} at {args.broker_address} has no retention.ms setting, "
            "which Quix Streams needs for the changelog topic: another client created it "
            "without settings (the embedded broker creates any topic a client asks about, "
            "e.g. for a producer that ran across a broker restart). Delete the topic, or "
            "restart the embedded broker, and let the processor or producer create it"
        )
    if isinstance(exc, TopicConfigurationMismatch):
        return (
            f"raw topic {args.raw_topic} does not have as many partitions as this consumer "
            f"group's window state ({exc}); the topic was re-created with another partition "
            "count. Start with a new CONSUMER_GROUP, or delete that changelog topic and remove "
            f"{state}"
        )
    if isinstance(exc, KafkaBrokerUnavailableError):
        return (
            f"the broker at {args.broker_address} has been unreachable for more than "
            f"{args.broker_outage_timeout:g} s (BROKER_OUTAGE_TIMEOUT); start the processor "
            "again once it is back: it resumes from its last commit"
        )
    if isinstance(exc, KafkaConsumerException) and exc.code == KafkaError.UNKNOWN_TOPIC_OR_PART:
        return (
            f"a topic this processor uses is gone from the broker at {args.broker_address} "
            f"({exc.description}); if the broker was restarted empty, remove {state} and "
            "start again"
        )
    if isinstance(exc, DeadLetterError):
        return f"{exc}; stopped without committing past it, start again once the broker is back"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, broker_address=args.broker_address)
    raise_stopped_on_signals()  # until Quix Streams installs its own handlers
    try:
        return run(args)
    except Stopped:
        logger.info("Stopped before processing began")
        return 0
    except KeyboardInterrupt:  # a second Ctrl-C while Quix Streams was stopping
        logger.warning("Interrupted while stopping; the last checkpoint may not be committed")
        return 130
    except (CannotRun, BrokerUnavailable, TopicError) as exc:
        logger.error("%s", exc)
        return 1


def run(args: argparse.Namespace) -> int:
    broker = BrokerSettings.from_args(args)
    check_state_dir(args)
    wait_for_broker(broker, args.broker_timeout)
    partitions = ensure_topic(broker, args.raw_topic, args.partitions, args.broker_timeout)
    if note := partitions_note(args.raw_topic, partitions, args.partitions):
        logger.info("%s", note)
    for topic in (args.dlq_topic, args.agg_topic):
        ensure_topic(broker, topic, args.partitions, args.broker_timeout)
    check_saved_state_matches_broker(args, broker)
    dead_letters = make_dead_letters(args)
    app = make_application(args, dead_letters)
    try:
        build_pipeline(app, args, dead_letters)
    except (TopicConfigurationMismatch, KeyError) as exc:
        if (line := explain(exc, args)) is None:
            raise
        raise CannotRun(line) from None
    logger.info(
        "Aggregating %s into %ss windows on %s (%s); dead letters to %s",
        args.raw_topic, args.window_seconds, args.agg_topic, args.processing_guarantee,
        args.dlq_topic,
    )  # fmt: skip
    with periodic_summary(dead_letters.counters, args.summary_interval):
        try:
            app.run()
        except Exception as exc:
            if (line := explain(exc, args)) is None:
                raise  # not a failure we know: the traceback is the best report
            raise CannotRun(line) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
