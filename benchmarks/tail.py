"""A live tail, for timing: every partition of some topics from the start, read as it grows.

It is neither a read to the end (sensor_lib.consuming.read_to_end, which the benchmarks
use to read a topic back) nor sensor_lib.consuming.follow: a timing loop polls it with
a timeout of its own on every turn, and its fetch wait is 10 ms unless a benchmark sets
another, so that the reader adds little to a latency.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from bench_broker import unique_name
from bench_errors import BenchmarkError
from sensor_lib.polling import wait_until
from sensor_lib.topics import partitions_of


def reader(address: str, topics: Iterable[str], **config: Any) -> Consumer:
    """A consumer assigned every partition of `topics` from the start (no group), which a
    timing loop polls through `records()` until it has seen what it waits for. It never
    stops by itself, and the loop counts records as they arrive, without waiting for a
    partition's end."""
    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "group.id": unique_name("reader"),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
            # A cluster's node may not know a topic just made yet: where asking it for the
            # start fails, start from the start again, never from the end.
            "auto.offset.reset": "earliest",
            **config,
        }
    )
    consumer.assign(
        [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in partitions(consumer, t)]
    )
    return consumer


def partitions(consumer: Consumer, topic: str, timeout: float = 30.0) -> list[int]:
    """The partitions of `topic`, once the broker's metadata lists them (Kafka may answer
    without them just after the topic was created)."""
    try:
        what = f"the partitions of {topic} in the metadata"
        return wait_until(lambda: partitions_of(consumer, topic), timeout, what=what)
    except TimeoutError as exc:
        raise BenchmarkError(str(exc)) from None


def records(messages: Iterable[Message]) -> list[Message]:
    """The records among a live tail's `messages`; partition ends dropped, any other error
    raised."""
    kept = []
    for msg in messages:
        if msg.error() is None:
            kept.append(msg)
        elif msg.error().code() != KafkaError._PARTITION_EOF:
            raise KafkaException(msg.error())
    return kept
