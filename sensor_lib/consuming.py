"""Consuming a topic: to its end now (right on every broker), or as it grows (following)."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from sensor_lib.logs import client_logging
from sensor_lib.polling import Deadline
from sensor_lib.settings import BrokerSettings
from sensor_lib.stop_signals import StopSignals
from sensor_lib.topics import partitions_of, wait_for_partitions


def read_to_end(
    broker: BrokerSettings,
    topic: str,
    *,
    timeout: float = 60.0,
    isolation: str = "read_uncommitted",
    keep: Callable[[Message], bool] = lambda message: True,
    start: Mapping[int, int] | None = None,
    give_up: threading.Event | None = None,
) -> list[Message]:
    """Every message on `topic` now, partition by partition, in offset order.

    Reads from the beginning (or from `start`, partition -> offset) until each
    partition reports end-of-partition. That is right on every broker here, where
    high watermarks are not: the embedded broker under-reports them, but a fetch
    returns whole batches, and the end-of-partition event comes after the last one.
    With `give_up` set meanwhile, it returns what it has read so far.
    """
    consumer = Consumer(
        {
            **broker.librdkafka_config(),
            **client_logging(),
            "group.id": f"read-to-end-{uuid.uuid4().hex}",  # assign() only; nothing is committed
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
            "fetch.wait.max.ms": 100,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        waiting = set(metadata.partitions)
        offsets = start or {}
        consumer.assign(
            [TopicPartition(topic, p, offsets.get(p, OFFSET_BEGINNING)) for p in waiting]
        )
        messages: list[Message] = []
        deadline = Deadline(timeout)
        while waiting and not (give_up and give_up.is_set()):
            if deadline.passed():
                raise TimeoutError(f"{topic}: partitions {sorted(waiting)} not read to the end")
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                if (error := message.error()) is None:
                    if keep(message):
                        messages.append(message)
                elif error.code() == KafkaError._PARTITION_EOF:
                    waiting.discard(message.partition())
        return sorted(messages, key=lambda m: (m.partition(), m.offset()))
    finally:
        consumer.close()


def follow(
    broker: BrokerSettings,
    topic: str,
    stop: StopSignals,
    *,
    start_at: str = "earliest",
    deadline: Deadline | None = None,
    drain_timeout: float = 10.0,
) -> Iterator[Message]:
    """Each message of `topic` as it arrives, from its beginning (or its end) on, until
    a stop or `deadline`; after a stop, on to the topic's end as it is then (read_to_end,
    from where it stands), unless a second stop hurries it. Waits for the topic to appear.

    It assigns itself every partition rather than join a group: it shares work with
    nobody and commits nothing, so it needs no rebalance wait and leaves no group behind.
    """
    consumer = Consumer(
        {
            **broker.librdkafka_config(),
            **client_logging(),
            "group.id": f"follow-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,  # a new message shows within 0.1 s on any broker
        }
    )
    try:
        if not (partitions := wait_for_partitions(consumer, topic, stop, deadline)):
            return
        # An explicit start offset: a committed one would be asked of a group coordinator,
        # which a broker that has just started may not have yet.
        start = OFFSET_BEGINNING if start_at == "earliest" else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in partitions])
        here: dict[int, int] = {}
        while not stop.requested.is_set() and not (deadline and deadline.passed()):
            for message in consumer.consume(num_messages=500, timeout=0.25):
                if message.error() is None:
                    here[message.partition()] = message.offset() + 1
                    yield message
                elif message.error().code() != KafkaError._PARTITION_EOF:
                    logging.getLogger(__name__).warning("Consumer error: %s", message.error())
        if not stop.requested.is_set() or stop.hurry.is_set():
            return  # the deadline, or a hurried stop: nobody waits for more
        if not partitions_of(consumer, topic, timeout=2):  # the broker is gone with us
            logging.getLogger(__name__).warning("The broker is away: %s not read to its end", topic)
            return
        here = {p: here.get(p, start) for p in partitions}
        try:
            yield from read_to_end(
                broker, topic, timeout=drain_timeout, start=here, give_up=stop.hurry
            )
        except (TimeoutError, KafkaException) as exc:
            logging.getLogger(__name__).warning("Could not read %s to its end: %s", topic, exc)
    finally:
        consumer.close()


def committed_offsets(broker: BrokerSettings, group: str, topic: str) -> dict[int, int]:
    """The offset `group` has committed on each partition of `topic`, 0 where none yet.
    It only asks: it never joins the group and never commits."""
    consumer = Consumer({**broker.librdkafka_config(), **client_logging(), "group.id": group})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        wanted = [TopicPartition(topic, p) for p in metadata.partitions]
        return {tp.partition: max(tp.offset, 0) for tp in consumer.committed(wanted, timeout=10)}
    finally:
        consumer.close()
