"""Pieces the benchmarks share: a broker, a synthetic workload, topics, sink reading.

The workload is deterministic: M sensors each send one reading every
`sensor_interval_ms` of *event* time, in rounds (Sensor1..SensorM, then again).
The start time is chosen so that the last round lands exactly `grace` past a
window end: the last reading of every sensor closes a window, so "first reading
consumed to last aggregate produced" covers every reading in the topic.
"""

from __future__ import annotations

import json
import os
import random
import resource
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition  # noqa: E402

from embedded_broker import EmbeddedBroker  # noqa: E402
from kafka_broker import KafkaBroker  # noqa: E402
from sensor_settings import BrokerSettings, ensure_topic  # noqa: E402
from sensor_stream_producer import (  # noqa: E402
    encode_reading,
    generate_readings,
    make_reading,
    to_epoch_ms,
)

# An epoch-aligned origin for event times: results do not depend on the host clock.
ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Workload:
    readings: int
    sensors: int
    sensor_interval_ms: int = 1000
    window_ms: int = 10_000
    grace_ms: int = 1_000
    seed: int = 7

    @property
    def rounds(self) -> int:
        return -(-self.readings // self.sensors)

    @property
    def total(self) -> int:
        """Readings actually produced: whole rounds, so every sensor ends together."""
        return self.rounds * self.sensors

    @property
    def start_ms(self) -> int:
        last_round_offset = (self.rounds - 1) * self.sensor_interval_ms
        shift = (self.grace_ms - last_round_offset) % self.window_ms
        return to_epoch_ms(ORIGIN) + shift

    def event_time_ms(self, index: int) -> int:
        round_, slot = divmod(index, self.sensors)
        return (
            self.start_ms
            + round_ * self.sensor_interval_ms
            + slot * self.sensor_interval_ms // self.sensors
        )


def synthetic_messages(workload: Workload) -> Iterator[tuple[bytes, bytes, int]]:
    """(key, value, timestamp ms) in production order, in the producer's own format."""
    readings = generate_readings(workload.sensors, random.Random(workload.seed))
    for index in range(workload.total):
        sensor_id, value = next(readings)
        ts_ms = workload.event_time_ms(index)
        moment = EPOCH + timedelta(milliseconds=ts_ms)
        yield sensor_id.encode(), encode_reading(make_reading(moment, value)), ts_ms


def expected_closed_windows(workload: Workload) -> int:
    """Windows that per-key closing must emit: end <= that sensor's last time - grace."""
    closed = 0
    for slot in range(workload.sensors):
        first = workload.event_time_ms(slot)
        last = workload.event_time_ms((workload.rounds - 1) * workload.sensors + slot)
        first_start = first - first % workload.window_ms
        # Window starts first_start, first_start + W, ... whose end <= last - grace.
        latest_end = last - workload.grace_ms
        if latest_end >= first_start + workload.window_ms:
            closed += (latest_end - first_start) // workload.window_ms
    return closed


@contextmanager
def broker_address(address: str | None = None) -> Iterator[str]:
    """BROKER_ADDRESS (or `address`) if set, else a fresh broker of kind BENCH_BROKER:
    `embedded` (the default) or `kafka` (Apache Kafka, kafka_broker.py)."""
    address = address or os.environ.get("BROKER_ADDRESS")
    if address:
        yield address
        return
    kind = os.environ.get("BENCH_BROKER", "embedded")
    if kind not in ("embedded", "kafka"):
        raise SystemExit(f"BENCH_BROKER must be embedded or kafka, not {kind!r}")
    with (KafkaBroker() if kind == "kafka" else EmbeddedBroker()) as broker:
        yield broker.address


def unique_name(prefix: str) -> str:
    return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"


def create_topic(address: str, name: str, partitions: int) -> None:
    ensure_topic(BrokerSettings(address), name, partitions, timeout=30)


def produce_workload(address: str, topic: str, partitions: int, workload: Workload) -> None:
    create_topic(address, topic, partitions)
    producer = Producer({"bootstrap.servers": address, "linger.ms": 50})
    failures: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    for key, value, ts_ms in synthetic_messages(workload):
        while True:
            try:
                producer.produce(topic, value, key, timestamp=ts_ms, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    undelivered = producer.flush(60)
    if failures or undelivered:
        raise RuntimeError(f"{len(failures)} failed and {undelivered} undelivered readings")


def plain_consumer(address: str, **extra: Any) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": address,
            "group.id": unique_name("reader"),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **extra,
        }
    )


def assign_from_start(consumer: Consumer, topic: str) -> None:
    """Assign every partition of `topic` from its first offset.

    (No watermark arithmetic: the embedded broker's ListOffsets answers 1 for
    the high watermark of a topic in memory storage, whatever it holds.)
    """
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])


def read_all(
    address: str, topic: str, expected: int, timeout: float = 60.0, settle: float = 1.0
) -> list[tuple[str, Any, int]]:
    """`expected` messages of `topic`, plus any that arrive within `settle` s after.

    Each as (key, JSON value, Kafka timestamp ms). Extra messages are returned,
    not dropped, so a caller can see duplicates.
    """
    consumer = plain_consumer(address)
    try:
        assign_from_start(consumer, topic)
        records: list[tuple[str, Any, int]] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"read {len(records)} of {expected} messages of {topic}")
            records += decode(consumer.consume(1000, 0.5))
        records += decode(consumer.consume(1000, settle))
        return records
    finally:
        consumer.close()


def decode(messages: list[Any]) -> list[tuple[str, Any, int]]:
    return [
        (msg.key().decode(), json.loads(msg.value()), msg.timestamp()[1])
        for msg in messages
        if msg.error() is None
    ]


def peak_rss_mib() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
