"""What the scripts, the benchmarks and the tests need from Kafka, in one place.

Is a broker there (one clear line if not), make a topic the way Quix Streams
needs it, read a topic to its end correctly on every broker, and keep the
clients' logs to one line while the broker is away.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from sensor_lib.processes import StopSignals, raise_if_stopped
from sensor_lib.settings import BrokerSettings, TopicSettings, configure_logging

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
        raise_if_stopped()  # a C callback may have swallowed the KeyboardInterrupt
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


def start_up(
    settings: BrokerSettings,
    logger: logging.Logger,
    before: str,
    topics: Sequence[str] = (),
    log_level: str | None = "INFO",
) -> StopSignals:
    """A script's start: its logging (unless `log_level` is None: set up already), then
    wait for the broker and create `topics` (with the settings' PARTITIONS) where missing.

    A stop meanwhile exits 0 with "Stopped before <before>"; no broker, or a topic it
    refuses, exits 1 with one line. Returns the stop signals, for the rest of the run.
    """
    if log_level is not None:
        configure_logging(log_level, BrokerOutageLog(settings.broker_address))
    stop = StopSignals.install()
    try:
        with stop.interrupting():  # stop at once, whatever the client is waiting for
            wait_for_broker(settings, settings.broker_timeout)
            for topic in topics:
                partitions = settings.partitions if isinstance(settings, TopicSettings) else 1
                ensure_topic(settings, topic, partitions, settings.broker_timeout)
    except KeyboardInterrupt:
        logger.info("Stopped before %s", before)
        raise SystemExit(0) from None
    except (BrokerUnavailable, TopicError) as exc:
        logger.error("%s", exc)
        raise SystemExit(1) from None
    return stop


def silent_logger() -> logging.Logger:
    # librdkafka logs every failed connect attempt; the single line we raise is enough.
    logger = logging.getLogger("sensor_lib.kafka_io.silent")
    if logger.propagate:  # the first time only
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
            "topic a script creates", name, found, "s" * (found != 1), partitions,
        )  # fmt: skip
    return found


class DeliveryReport:
    """Counts what the broker confirmed; pass it as `on_delivery` to every produce()."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.delivered = 0
        self.failed = 0
        self.errors_logged: set[str] = set()

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
            return
        self.failed += 1
        # A broker outage fails every queued message alike: log each kind once;
        # the final count says how many.
        if err.str() not in self.errors_logged:
            self.errors_logged.add(err.str())
            self.logger.error("Delivery failed for key %s: %s", msg.key(), err)


def produce(producer: Producer, topic: str, **message: Any) -> None:
    """producer.produce(), waiting for room while the client's local queue is full."""
    while True:
        try:
            producer.produce(topic, **message)
            producer.poll(0)
            return
        except BufferError:  # serve delivery callbacks to make room
            producer.poll(0.1)


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
    consumer = Consumer({
        **broker.librdkafka_config(),
        **client_logging(),
        "group.id": f"read-to-end-{uuid.uuid4().hex}",  # assign() only; nothing is committed
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": isolation,
        "fetch.wait.max.ms": 100,
    })  # fmt: skip
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
        deadline = time.monotonic() + timeout
        while waiting and not (give_up and give_up.is_set()):
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


def partitions_of(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[int]:
    """The topic's partition ids; empty if it does not exist yet, or the broker is away
    for now (the client's log says so). It never makes the broker create the topic."""
    try:
        metadata = consumer.list_topics(timeout=timeout).topics.get(topic)  # all: no auto-create
    except KafkaException:
        return []
    return [] if metadata is None or metadata.error is not None else sorted(metadata.partitions)


def wait_for_partitions(
    consumer: Consumer, topic: str, stop: StopSignals, deadline: float = math.inf
) -> list[int]:
    """The topic's partitions once it exists; empty after a stop or at `deadline`."""
    if not (partitions := partitions_of(consumer, topic)):
        logging.getLogger(__name__).info("Waiting for topic %s to appear", topic)
    while not partitions:
        consumer.poll(0)  # serves the client's log: an outage meanwhile is one line
        if stop.requested.wait(0.5) or time.monotonic() >= deadline:
            return []
        partitions = partitions_of(consumer, topic)
    return partitions


def follow(
    broker: BrokerSettings,
    topic: str,
    stop: StopSignals,
    *,
    start_at: str = "earliest",
    deadline: float = math.inf,
    drain_timeout: float = 10.0,
) -> Iterator[Message]:
    """Each message of `topic` as it arrives, from its beginning (or its end) on, until
    a stop or `deadline`; after a stop, on to the topic's end as it is then (read_to_end,
    from where it stands), unless a second stop hurries it. Waits for the topic to appear.

    It assigns itself every partition rather than join a group: it shares work with
    nobody and commits nothing, so it needs no rebalance wait and leaves no group behind.
    """
    consumer = Consumer({
        **broker.librdkafka_config(),
        **client_logging(),
        "group.id": f"follow-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,  # a new message shows within 0.1 s on any broker
    })  # fmt: skip
    try:
        if not (partitions := wait_for_partitions(consumer, topic, stop, deadline)):
            return
        # An explicit start offset: a committed one would be asked of a group coordinator,
        # which a broker that has just started may not have yet.
        start = OFFSET_BEGINNING if start_at == "earliest" else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in partitions])
        here: dict[int, int] = {}
        while not stop.requested.is_set() and time.monotonic() < deadline:
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


# librdkafka logs through this logger in our own clients (see client_logging).
CLIENT_LOGGER = "librdkafka"
_LOST_BROKER = re.compile(r"Connect to \S+ failed|Connection refused|[1-9]\d*/\d+ brokers are down")
# librdkafka counts the brokers again as it words its all-brokers-down event, so one
# that came back in between makes it "0/1 brokers are down": the outage is over.
_OUTAGE_OVER = re.compile(r"\b0/\d+ brokers are down")
# A broker that has just started answers "load in progress" for a moment; the client retries.
_RETRYING = re.compile(r"load in progress: retrying")


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
        if _OUTAGE_OVER.search(message) or _RETRYING.search(message):
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
