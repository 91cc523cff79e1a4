"""Topics: made the way Quix Streams and a cluster need them, checked, and found.

A topic a script creates gets the settings' partitions, replication factor,
min.insync.replicas and retention. An existing topic is never reconfigured, but
each start checks every topic a script uses and warns, in one line per topic,
where it can lose messages: fewer replicas than the settings ask, or
min.insync.replicas equal to the replicas (no broker can be lost).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from sensor_lib.errors import CannotRun
from sensor_lib.logs import silent_logger
from sensor_lib.polling import Deadline
from sensor_lib.settings import BrokerSettings, TopicSettings
from sensor_lib.stop_signals import StopSignals

logger = logging.getLogger(__name__)

MIN_INSYNC = "min.insync.replicas"


class TopicError(CannotRun):
    """The broker answered but would not create a topic."""


def resolve_replication(settings: TopicSettings, timeout: float) -> tuple[int, int]:
    """Fill REPLICATION_FACTOR and MIN_INSYNC_REPLICAS in from the cluster's size where
    they were left to their defaults, and return them."""
    admin = AdminClient({**settings.librdkafka_config(), "logger": silent_logger()})
    try:
        brokers = len(admin.list_topics(timeout=timeout).brokers)
    except KafkaException as exc:
        raise TopicError(
            f"could not list the brokers at {settings.broker_address}: {exc.args[0].str()}"
        ) from None
    factor, least = settings.replication(max(brokers, 1))
    settings.replication_factor, settings.min_insync_replicas = factor, least
    return factor, least


def topic_config(settings: TopicSettings, dead_letters: bool = False) -> dict[str, str]:
    """What a topic is created with beyond its partitions and replication factor."""
    config = settings.retention_config(dead_letters)
    if (settings.min_insync_replicas or 1) > 1:
        config[MIN_INSYNC] = str(settings.min_insync_replicas)
    return config


def ensure_topic(
    settings: BrokerSettings,
    name: str,
    partitions: int | None = None,
    timeout: float | None = None,
    config: Mapping[str, str] | None = None,
    *,
    dead_letters: bool = False,
) -> int:
    """Create `name` unless it exists, and return its partition count.

    It gets `partitions` (else PARTITIONS), the settings' replication, and `config`
    (else the settings' retention, the dead letters' with `dead_letters`). Plain
    BrokerSettings get one partition and the defaults of TopicSettings. An existing
    topic is never reconfigured: it is checked (check_replication).
    """
    topics = (
        settings
        if isinstance(settings, TopicSettings)
        else TopicSettings(**settings.model_dump(include=set(BrokerSettings.model_fields)))
    )
    timeout = settings.broker_timeout if timeout is None else timeout
    partitions = partitions or (topics.partitions if topics is settings else 1)
    if topics.replication_factor is None or topics.min_insync_replicas is None:
        resolve_replication(topics, timeout)
    config = {**topic_config(topics, dead_letters), **(config or {})}
    admin = AdminClient({**settings.librdkafka_config(), "logger": silent_logger()})  # we raise
    try:
        existing = admin.list_topics(timeout=timeout).topics.get(name)
        if existing is None:
            factor = topics.replication_factor
            futures = admin.create_topics(
                [NewTopic(name, partitions, replication_factor=factor, config=config)],
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
            f"could not create topic {name!r} at {settings.broker_address}: {exc.args[0].str()}"
        ) from None
    if (found := len(existing.partitions)) != partitions:
        logger.info(
            "Topic %s already exists with %d partition%s; PARTITIONS=%d applies only to a "
            "topic a script creates",
            name,
            found,
            "s" * (found != 1),
            partitions,
        )
    try:
        check_replication(topics, [name], timeout, admin)
    except KafkaException as exc:  # the broker went away since it answered
        raise TopicError(
            f"could not check topic {name!r} at {settings.broker_address}: {exc.args[0].str()}"
        ) from None
    return found


def check_replication(
    settings: TopicSettings, names: Iterable[str], timeout: float, admin: AdminClient
) -> None:
    """Warn in one line per topic that can lose messages: fewer replicas than the settings
    ask, or min.insync.replicas equal to its replicas, which leaves no broker to lose."""
    metadata = admin.list_topics(timeout=timeout).topics
    for name, least in min_insync_replicas(admin, names, timeout).items():
        if (topic := metadata.get(name)) is None or not topic.partitions:
            continue
        factor = min(len(p.replicas) for p in topic.partitions.values())
        wanted = settings.replication_factor or 1
        if factor < wanted:
            logger.warning(
                "Topic %s has replication factor %d, below the %d that REPLICATION_FACTOR "
                "asks: losing a broker that holds it loses its messages",
                name,
                factor,
                wanted,
            )
        elif factor > 1 and least >= factor:
            logger.warning(
                "Topic %s has min.insync.replicas %d with replication factor %d: with any "
                "one broker down, writes to it fail",
                name,
                least,
                factor,
            )


def min_insync_replicas(admin: AdminClient, names: Iterable[str], timeout: float) -> dict[str, int]:
    """Each topic's min.insync.replicas; 1 where the broker does not report it."""
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    if not resources:
        return {}
    found = {}
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        try:
            entry = future.result(timeout=timeout).get(MIN_INSYNC)
        except KafkaException:  # gone meanwhile, or a broker that does not describe configs
            entry = None
        found[resource.name] = int(entry.value) if entry is not None and entry.value else 1
    return found


def raise_min_insync_replicas(
    settings: TopicSettings, names: Iterable[str], timeout: float
) -> None:
    """Set min.insync.replicas to the settings' on each topic that has fewer (Quix Streams
    gives the changelog topics it creates only retention), and check them."""
    names = list(names)
    wanted = settings.min_insync_replicas or 1
    admin = AdminClient({**settings.librdkafka_config(), "logger": silent_logger()})
    below = [n for n, least in min_insync_replicas(admin, names, timeout).items() if least < wanted]
    if below:
        entry = ConfigEntry(MIN_INSYNC, str(wanted), incremental_operation=AlterConfigOpType.SET)
        resources = [
            ConfigResource(ResourceType.TOPIC, n, incremental_configs=[entry]) for n in below
        ]
        for resource, future in admin.incremental_alter_configs(resources).items():
            try:
                future.result(timeout=timeout)
                logger.info("Set %s=%d on %s", MIN_INSYNC, wanted, resource.name)
            except KafkaException as exc:
                logger.warning(
                    "Could not set %s=%d on %s: %s",
                    MIN_INSYNC,
                    wanted,
                    resource.name,
                    exc.args[0].str(),
                )
    check_replication(settings, names, timeout, admin)


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
