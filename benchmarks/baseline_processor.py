"""The fixed reference: a minimal tutorial-style tumbling-window processor.

This is what the original tutorial's processor does once its bugs are fixed
(the extractor attached before the dataframe, a four-argument extractor, one
JSON encoding, aware UTC times): Quix Streams' "json" deserializer, the payload
timestamp parsed with `datetime.fromisoformat`, a reducer that builds a new
dict per reading, and the mean as a plain sum / count. Application settings are
the defaults, except the 6 s session timeout, which only shortens the consumer
group join that no measurement includes. The topics must exist.

    python benchmarks/baseline_processor.py --broker-address A --raw-topic T \
        --agg-topic S --consumer-group G --state-dir D

Do not optimise this file: the throughput benchmark divides by its rate.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

from quixstreams import Application
from quixstreams.models import TimestampType

SESSION = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1500}


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


def arguments(description: str) -> argparse.ArgumentParser:
    """The processor's flags for where to read, write and keep state."""
    parser = argparse.ArgumentParser(description=description)
    for flag in ("--broker-address", "--raw-topic", "--agg-topic", "--consumer-group"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--state-dir", default="state")
    return parser


def main(argv: list[str] | None = None) -> None:
    opts = arguments(__doc__.splitlines()[0]).parse_args(argv)
    app = Application(
        broker_address=opts.broker_address,
        consumer_group=opts.consumer_group,
        auto_offset_reset="earliest",
        state_dir=opts.state_dir,
        consumer_extra_config=SESSION,
    )
    raw = app.topic(
        opts.raw_topic, value_deserializer="json", timestamp_extractor=extract_timestamp
    )
    output = app.topic(opts.agg_topic, value_serializer="json")
    sdf = app.dataframe(raw)
    sdf = sdf.tumbling_window(timedelta(seconds=10), grace_ms=timedelta(seconds=1))
    sdf = sdf.reduce(reducer=reducer, initializer=initializer).final()
    sdf = sdf.apply(to_output)
    sdf = sdf.to_topic(output)
    app.run()


if __name__ == "__main__":
    main()
