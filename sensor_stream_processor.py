"""Aggregate raw temperature readings into 10-second windows per sensor.

Reads {"ts", "value"} readings keyed by sensor id, puts each into a tumbling window
by its event time (`ts`), and when a window closes emits one message per sensor:

    {"start": <ms>, "end": <ms>, "temperature": {"count", "min", "max", "mean"}}

A message that is not a usable reading, or a reading that comes after its window
closed, goes unchanged to the dead-letter topic with an `error` header saying why.
The producer's watermarks, {"ts": ..., "watermark": true}, move a sensor's event
time on without counting as readings, so the last window closes when it stops.

    python sensor_stream_processor.py
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypedDict

from prometheus_client import Histogram
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator
from quixstreams import Application
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.models import Deserializer, SerializationContext, TimestampType, TopicConfig

from sensor_lib import metrics
from sensor_lib.application import quix_defaults
from sensor_lib.changelogs import replicate_changelogs
from sensor_lib.dead_letters import DeadLetterSink, current
from sensor_lib.errors import exit_status
from sensor_lib.event_time import format_ms, parse_iso_ms
from sensor_lib.metrics import ConsumerLag
from sensor_lib.quix_script import running
from sensor_lib.readings import InvalidReading, Reading, parse_reading
from sensor_lib.rejoin import rejoining
from sensor_lib.settings import QuixAppSettings, RawTopicSettings, load_settings
from sensor_lib.summary import summary_line
from sensor_lib.topics import topic_config

logger = logging.getLogger("sensor_stream_processor")


class ProcessorSettings(RawTopicSettings, QuixAppSettings):
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

    @model_validator(mode="after")
    def _default_dlq_topic(self) -> ProcessorSettings:
        self.dlq_topic = self.dlq_topic or f"{self.raw_topic}-dlq"
        return self


# --- Parsing: bytes in, a checked reading and its event time out ------------------


class ReadingDeserializer(Deserializer):
    """Parses each message and reads its event time, keeping both in `current`. A message
    that is not a usable reading comes out as its InvalidReading, for the first step to
    dead-letter: raised here, it would be skipped without its offset being stored."""

    def __call__(self, value: bytes, ctx: SerializationContext) -> Reading | InvalidReading:
        current.payload, current.headers = value, ctx.headers
        try:
            reading = parse_reading(value)
            current.event_ms = parse_iso_ms(reading["ts"])
        except InvalidReading as invalid:
            return invalid
        except ValueError as bad_time:
            return InvalidReading("bad-ts", str(bad_time))
        return reading


def extract_event_time(value: object, headers: Any, timestamp_ms: int, kind: TimestampType) -> int:
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


def has_readings(window: dict[str, Any]) -> bool:
    """A window that only watermarks touched is not emitted."""
    return window["value"]["count"] > 0


def summarize_window(window: dict[str, Any]) -> dict[str, Any]:
    """Turn Quix Streams' {"start", "end", "value": stats} into the output message."""
    stats: WindowStats = window["value"]
    mean = (stats["sum"] + stats["compensation"]) / stats["count"]
    temperature = {"count": stats["count"], "min": stats["min"], "max": stats["max"], "mean": mean}
    return {"start": window["start"], "end": window["end"], "temperature": temperature}


# --- Dead letters: what cannot be aggregated goes, unchanged, to its own topic ---


class DeadLetters:
    """The two places where the pipeline hands over a message it cannot aggregate."""

    def __init__(self, sink: DeadLetterSink, counters: Counters) -> None:
        self.sink, self.counters = sink, counters

    def keep_readings(self, value: object, key: bytes | None, timestamp: int, headers: Any) -> bool:
        """The first step: a reading with a sensor key goes on; anything else is
        dead-lettered, and its offset committed like any other message's. Each message
        is counted once here: a reading, a watermark or a dead letter."""
        self.counters.processed += 1
        if key and type(value) is dict:
            if value["value"] is None:
                self.counters.watermarks += 1
            return True
        if isinstance(value, InvalidReading):
            reason, detail = value.reason, value.detail
        elif value is None:  # a message without a value never reached the deserializer
            reason, detail = "invalid-json", "the message has no value"
        else:
            reason, detail = "no-key", "the message has no key (sensor id)"
        payload = None if value is None else current.payload  # a null value stays null
        self.sink.send(key, payload, headers, reason, detail)
        return False

    def on_late(
        self,
        value: Reading,
        key: bytes,
        timestamp_ms: int,
        late_by_ms: int,
        start: int,
        end: int,
        *where: Any,
    ) -> bool:
        if value["value"] is None:
            return False  # an old watermark says nothing new
        detail = (
            f"reading at {format_ms(timestamp_ms)} is {late_by_ms} ms late for window "
            f"[{format_ms(start)}, {format_ms(end)}) of {key.decode(errors='replace')}"
        )
        window = [("window_start", str(start).encode()), ("window_end", str(end).encode())]
        self.sink.send(key, current.payload, current.headers, "late", detail, window)
        return False  # logged by the sink; Quix Streams need not


# --- Counters: a summary line every SUMMARY_INTERVAL and at the end ---------------


@dataclass(slots=True)
class Counters:
    """Plain attributes: a few instructions to add to, where a Counter's item costs more.
    /metrics reads them when scraped (sensor_lib/metrics.py)."""

    grace_ms: int
    processed: int = 0
    aggregated: int = 0
    windows_emitted: int = 0
    watermarks: int = 0
    close_to_emit: Histogram = field(default_factory=metrics.window_delay_histogram)

    def report_window(self, window: dict[str, Any], key: bytes, ts: int, headers: Any) -> None:
        self.windows_emitted += 1
        self.aggregated += (t := window["temperature"])["count"]
        self.close_to_emit.observe(max(0.0, time.time() - (window["end"] + self.grace_ms) / 1000))
        if logger.isEnabledFor(logging.INFO):  # skip formatting the times when nobody reads them
            sensor, start, end = key.decode(errors="replace"), window["start"], window["end"]
            logger.info(
                "%s [%s, %s) count=%d min=%.2f max=%.2f mean=%.4f",
                sensor,
                format_ms(start),
                format_ms(end),
                t["count"],
                t["min"],
                t["max"],
                t["mean"],
            )

    def summary(self, dead: DeadLetterSink) -> str:
        return summary_line(
            dead.counts,
            processed=self.processed,
            aggregated=self.aggregated,
            windows_emitted=self.windows_emitted,
            watermarks=self.watermarks,
        )


# --- The pipeline, and main() ----------------------------------------------------


def build_pipeline(
    app: Application, settings: ProcessorSettings, counters: Counters, dead: DeadLetters
) -> StreamingDataFrame:
    """Raw topic -> tumbling window reduce per sensor -> aggregate topic."""
    config = TopicConfig(
        settings.partitions, settings.replication_factor, extra_config=topic_config(settings)
    )
    raw = app.topic(
        settings.raw_topic,
        key_deserializer="bytes",  # sensor ids stay bytes: no decoding per reading
        value_deserializer=ReadingDeserializer(),
        timestamp_extractor=extract_event_time,  # attached before the dataframe is built
        config=config,
    )
    aggregates = app.topic(settings.agg_topic, value_serializer="json", config=config)
    window = timedelta(seconds=settings.window_seconds)
    grace = timedelta(seconds=settings.grace_seconds)

    sdf = app.dataframe(raw)
    sdf = sdf.filter(dead.keep_readings, metadata=True)
    sdf = sdf.tumbling_window(window, grace_ms=grace, on_late=dead.on_late)
    sdf = sdf.reduce(reducer=add_reading, initializer=initialize_stats)
    # Close windows per sensor: a reading is late only against its own sensor's clock.
    sdf = sdf.final(closing_strategy="key")
    sdf = sdf.filter(has_readings).apply(summarize_window)
    sdf = sdf.update(counters.report_window, metadata=True)
    return sdf.to_topic(aggregates)


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(ProcessorSettings, argv)
    counters = Counters(grace_ms=settings.grace_seconds * 1000)
    dead = DeadLetters(DeadLetterSink(settings, settings.dlq_topic), counters)
    lag = ConsumerLag()
    with running(  # checks first, then a summary; one line per known failure (sensor_lib)
        settings,
        logger,
        topics=[settings.raw_topic, settings.agg_topic],
        dead_letter_topics=[settings.dlq_topic],
        source=settings.raw_topic,
        summary=lambda: counters.summary(dead.sink),
        metrics=metrics.processor_metrics(counters, dead.sink, current, lag),
        histograms=[counters.close_to_emit],
    ):
        logger.info(
            "Aggregating %s into %ds windows on %s (%s); dead letters to %s",
            settings.raw_topic,
            settings.window_seconds,
            settings.agg_topic,
            settings.processing_guarantee,
            settings.dlq_topic,
        )
        for attempt in rejoining(settings, logger):  # a new app if a broker restart needs one
            with attempt:
                app = Application(
                    broker_address=settings.connection(),
                    consumer_group=settings.consumer_group,
                    auto_offset_reset=settings.auto_offset_reset,
                    processing_guarantee=settings.processing_guarantee,
                    state_dir=settings.state_dir,
                    commit_interval=settings.commit_interval,
                    **quix_defaults(settings, lag),
                )
                build_pipeline(app, settings, counters, dead)
                replicate_changelogs(settings)  # Quix Streams copies only their retention
                app.run()


if __name__ == "__main__":
    sys.exit(exit_status(main, logger))
