"""Topics: made the way Quix Streams needs them, and found without creating them."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from sensor_lib.errors import CannotRun
from sensor_lib.logs import silent_logger
from sensor_lib.polling import Deadline
from sensor_lib.settings import BrokerSettings
from sensor_lib.stop_signals import StopSignals

# Every topic gets explicit retention: some Kafka-compatible brokers report only
# the configs given at creation, and Quix Streams reads retention.ms from the
# source topic when it creates changelog topics.
TOPIC_RETENTION = {"retention.ms": str(7 * 24 * 3600 * 1000), "retention.bytes": "-1"}


class TopicError(CannotRun):
    """The broker answered but would not create a topic."""


def ensure_topic(
    broker: BrokerSettings,
    name: str,
    partitions: int,
    timeout: float,
    config: Mapping[str, str] = TOPIC_RETENTION,
) -> int:
    """Create `name` with `config` unless it exists, and return its partition count.

    An existing topic is never reconfigured; if its partition count differs from
    `partitions`, that is logged once.
    """
    admin = AdminClient({**broker.librdkafka_config(), "logger": silent_logger()})  # we raise
    try:
        existing = admin.list_topics(timeout=timeout).topics.get(name)
        if existing is None:
            futures = admin.create_topics(
                [NewTopic(name, partitions, replication_factor=1, config=dict(config))],
                request_timeout=timeout,
            )
            try:
                futures[name].result(timeout=timeout)
                return partitions
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # not a lost race
                    raise
            existing = admin.list_topics(name, timeout=timeout).topics[name]
    except KafkaException as exc:  # refused, or the broker went away since it answered
        raise TopicError(
            f"could not create topic {name!r} at {broker.broker_address}: {exc.args[0].str()}"
        ) from None
    if (found := len(existing.partitions)) != partitions:
        logging.getLogger(__name__).info(
            "Topic %s already exists with %d partition%s; PARTITIONS=%d applies only to a "
            "topic a script creates",
            name,
            found,
            "s" * (found != 1),
            partitions,
        )
    return found


def partitions_of(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[int]:
    """The topic's partition ids; empty if it does not exist yet, or the broker is away
    for now (the client's log says so). It never makes the broker create the topic."""
    try:
        metadata = consumer.list_topics(timeout=timeout).topics.get(topic)  # all: no auto-create
    except KafkaException:
        return []
    return [] if metadata is None or metadata.error is not None else sorted(metadata.partitions)


def wait_for_partitions(
    consumer: Consumer, topic: str, stop: StopSignals, deadline: Deadline | None = None
) -> list[int]:
    """The topic's partitions once it exists; empty after a stop or at `deadline`."""
    if not (partitions := partitions_of(consumer, topic)):
        logging.getLogger(__name__).info("Waiting for topic %s to appear", topic)
    while not partitions:
        consumer.poll(0)  # serves the client's log: an outage meanwhile is one line
        if stop.requested.wait(0.5) or (deadline and deadline.passed()):
            return []
        partitions = partitions_of(consumer, topic)
    return partitions
