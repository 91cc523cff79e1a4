"""The fixed reference: a minimal tutorial-style tumbling-window processor.

This is what the original tutorial's processor does once its bugs are fixed
(the extractor attached before the dataframe, a four-argument extractor, one
JSON encoding, aware UTC times): Quix Streams' "json" deserializer, the payload
timestamp parsed with `datetime.fromisoformat`, a reducer that builds a new
dict per reading, and the mean as a plain sum / count. Application settings are
the defaults, except the 6 s session timeout, which only shortens the consumer
group join that no measurement includes.

Do not optimise this file: the throughput benchmark divides by its rate.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from quixstreams import Application
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.models import TimestampType, TopicConfig

from sensor_settings import TOPIC_RETENTION


def extract_timestamp(
    value: dict[str, Any], headers: Any, timestamp_ms: int, timestamp_type: TimestampType
) -> int:
    moment = datetime.fromisoformat(value["ts"])
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def initializer(value: dict[str, Any]) -> dict[str, Any]:
    temperature = value["value"]
    return {"count": 1, "min": temperature, "max": temperature, "sum": temperature}


def reducer(aggregated: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    temperature = value["value"]
    return {
        "count": aggregated["count"] + 1,
        "min": min(aggregated["min"], temperature),
        "max": max(aggregated["max"], temperature),
        "sum": aggregated["sum"] + temperature,
    }


def to_output(window: dict[str, Any]) -> dict[str, Any]:
    stats = window["value"]
    return {
        "start": window["start"],
        "end": window["end"],
        "temperature": {
            "count": stats["count"],
            "min": stats["min"],
            "max": stats["max"],
            "mean": stats["sum"] / stats["count"],
        },
    }


def make_baseline(
    broker_address: str,
    raw_topic: str,
    agg_topic: str,
    consumer_group: str,
    state_dir: str,
    partitions: int,
) -> tuple[Application, StreamingDataFrame]:
    app = Application(
        broker_address=broker_address,
        consumer_group=consumer_group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1500},
    )
    config = TopicConfig(
        num_partitions=partitions, replication_factor=1, extra_config=dict(TOPIC_RETENTION)
    )
    raw = app.topic(
        raw_topic, value_deserializer="json", timestamp_extractor=extract_timestamp, config=config
    )
    output = app.topic(agg_topic, value_serializer="json", config=config)
    sdf = app.dataframe(raw)
    sdf = sdf.tumbling_window(timedelta(seconds=10), grace_ms=timedelta(seconds=1))
    sdf = sdf.reduce(reducer=reducer, initializer=initializer).final()
    sdf = sdf.apply(to_output)
    sdf = sdf.to_topic(output)
    return app, sdf
