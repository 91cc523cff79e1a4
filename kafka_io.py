"""What the scripts, the benchmarks and the tests need from Kafka, in one place.

Is a broker there (one clear line if not), make a topic the way Quix Streams
needs it, read a topic to its end correctly on every broker, and keep the
clients' logs to one line while the broker is away.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

import launcher
from sensor_settings import BrokerSettings

HOW_TO_START_A_BROKER = (
    "start one with `docker compose up -d` (Redpanda, needs Docker), `make broker` "
    "(embedded, no Docker) or `make kafka` (Apache Kafka, needs Java 17)"
)
# Every topic gets explicit retention: some Kafka-compatible brokers report only
# the configs given at creation, and Quix Streams reads retention.ms from the
# source topic when it creates changelog topics.
TOPIC_RETENTION = {"retention.ms": str(7 * 24 * 3600 * 1000), "retention.bytes": "-1"}


class BrokerUnavailable(RuntimeError):
    """No broker answered at the configured address."""


class TopicError(RuntimeError):
    """The broker answered but would not create a topic."""


def wait_for_broker(broker: BrokerSettings, timeout: float) -> None:
    """Return once a broker answers a metadata request, or raise BrokerUnavailable.

    The message names the address and, when the client learned one, why: a
    refused login reads differently from nothing listening. It asks in short
    rounds, so Ctrl-C is served within a second.
    """
    reasons: list[str] = []
    admin = AdminClient({
        **broker.librdkafka_config(),
        "logger": silent_logger(),
        "error_cb": lambda error: reasons.append(error.str()),
    })  # fmt: skip
    deadline = time.monotonic() + max(timeout, 0.5)
    while True:
        launcher.raise_if_stopped()  # a C callback may have swallowed the KeyboardInterrupt
        try:
            admin.list_topics(timeout=min(1.0, max(deadline - time.monotonic(), 0.1)))
            return
        except KafkaException as exc:
            if time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            admin.poll(0)  # serve error_cb
            specific = [r for r in reasons if "brokers are down" not in r]
            why = f" ({specific[-1]})" if specific else ""
            raise BrokerUnavailable(
                f"no Kafka broker answered at {broker.broker_address} within {timeout:g}s{why}; "
                f"{HOW_TO_START_A_BROKER}, or set BROKER_ADDRESS"
            ) from exc


def silent_logger() -> logging.Logger:
    # librdkafka logs every failed connect attempt; the single line we raise is enough.
    logger = logging.getLogger("kafka_io.silent")
    logger.propagate = False
    logger.addHandler(logging.NullHandler())
    return logger


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
    admin = AdminClient(broker.librdkafka_config())
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
        logging.getLogger("kafka_io").info(
            "Topic %s already exists with %d partition%s; PARTITIONS=%d applies only to a "
            "topic a script creates", name, found, "s" * (found != 1), partitions,
        )  # fmt: skip
    return found


def read_to_end(
    broker: BrokerSettings,
    topic: str,
    *,
    timeout: float = 60.0,
    isolation: str = "read_uncommitted",
    keep: Callable[[Message], bool] = lambda message: True,
) -> list[Message]:
    """Every message on `topic` now, partition by partition, in offset order.

    Reads from the beginning until each partition reports end-of-partition.
    That is right on every broker here, where high watermarks are not: the
    embedded broker under-reports them, but a fetch returns whole batches, and
    the end-of-partition event comes after the last one.
    """
    consumer = Consumer({
        **broker.librdkafka_config(),
        "group.id": f"read-to-end-{uuid.uuid4().hex}",  # assign() only; nothing is committed
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": isolation,
    })  # fmt: skip
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        waiting = set(metadata.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in waiting])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while waiting:
            if time.monotonic() > deadline:
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


# librdkafka logs through this logger in our own clients (see client_logging).
CLIENT_LOGGER = "librdkafka"
_LOST_BROKER = re.compile(r"Connect to \S+ failed|Connection refused|[1-9]\d*/\d+ brokers are down")
# librdkafka counts the brokers again as it words its all-brokers-down event, so one
# that came back in between makes it "0/1 brokers are down": the outage is over.
_OUTAGE_OVER = re.compile(r"\b0/\d+ brokers are down")


def client_logging() -> dict[str, Any]:
    """librdkafka settings that send a client's logs through Python logging (and the filter)."""
    return {"logger": logging.getLogger(CLIENT_LOGGER)}


class BrokerOutageLog(logging.Filter):
    """One WARNING when the broker becomes unreachable, instead of the clients' flood.

    While the broker is away, every Kafka client here (Quix Streams' consumer and
    producer, our own) logs each failed connection attempt. The first becomes one
    line naming the address; the clients' logs that follow are dropped until they
    have been quiet for `quiet_seconds`. Quix's "connectivity restored" passes.
    """

    def __init__(self, address: str, quiet_seconds: float = 30.0) -> None:
        super().__init__()
        self.address = address
        self.quiet_seconds = quiet_seconds
        self.last_trouble = -float("inf")
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("quixstreams.kafka", CLIENT_LOGGER)):
            return True
        message = record.getMessage()
        if "connectivity restored" in message:
            return True
        if _OUTAGE_OVER.search(message):
            return False
        now = time.monotonic()
        with self.lock:
            in_outage = now - self.last_trouble < self.quiet_seconds
            if record.levelno < logging.WARNING or not _LOST_BROKER.search(message):
                return not in_outage  # other client logs pass, except mid-outage
            self.last_trouble = now
            if in_outage:
                return False
        record.msg = f"Lost the broker at {self.address}; retrying until it is back"
        record.args = ()
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
