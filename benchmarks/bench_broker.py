"""The broker a benchmark runs against, and the topics it makes there."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from sensor_lib.embedded_broker import EmbeddedBroker
from sensor_lib.errors import UsageError
from sensor_lib.kafka_broker import KafkaBroker
from sensor_lib.kafka_cluster import KafkaCluster, KafkaNode
from sensor_lib.settings import TopicSettings
from sensor_lib.stop_signals import exit_when_stopped
from sensor_lib.topics import ensure_topic

# Explicit retention: the embedded broker reports only the configs given at
# creation, and Quix Streams reads retention.ms when it derives changelog topics.
# Unlimited: Kafka would delete readings stamped in 2024 at its next retention check.
RETENTION = {"retention.ms": "-1", "retention.bytes": "-1"}


@contextmanager
def broker_address(address: str | None = None) -> Iterator[str]:
    """BROKER_ADDRESS (or `address`) if set, else a fresh broker of kind BENCH_BROKER:
    `embedded` (the default), `kafka` (Apache Kafka, one node: kafka_broker.py) or
    `cluster` (three Kafka nodes: kafka_cluster.py).

    A broker started here is stopped, and its data folder removed, however the
    benchmark stops: Ctrl-C, SIGTERM, SIGHUP or its parent's exit all unwind
    through this block and end in one line on stderr and exit status 1.
    """
    address = address or os.environ.get("BROKER_ADDRESS")
    if address:
        yield address
        return
    with started_brokers(os.environ.get("BENCH_BROKER", "embedded")) as (broker,):
        yield broker.address


@contextmanager
def started_brokers(*kinds: str) -> Iterator[list[Any]]:
    """A fresh broker of each of `kinds` (BENCH_BROKER's names), started one after
    another, all stopped as broker_address stops one."""
    unknown = [kind for kind in kinds if kind not in BROKERS]
    if unknown:
        raise UsageError(f"BENCH_BROKER must be one of {', '.join(BROKERS)}, not {unknown[0]!r}")
    brokers = f"{' and '.join(kinds)} broker{'s' * (len(kinds) > 1)}"
    verb = "are" if len(kinds) > 1 else "is"
    with (
        exit_when_stopped(f"stopped; the {brokers} it started {verb} stopped"),
        ExitStack() as stack,
    ):
        yield [stack.enter_context(BROKERS[kind]()) for kind in kinds]


class ShippedRebalanceDelay:
    """Kafka's own default group.initial.rebalance.delay.ms, 3 s (the tests' brokers have
    0): a group's first rebalance waits for more members, so the processes of a group
    started together join it at once, and none starts alone on every partition."""

    def server_properties(self, log_dirs: Path) -> str:
        return super().server_properties(log_dirs) + "group.initial.rebalance.delay.ms=3000\n"


class ShippedKafka(ShippedRebalanceDelay, KafkaBroker):
    """One Kafka node, with the shipped rebalance delay."""


class ShippedKafkaNode(ShippedRebalanceDelay, KafkaNode):
    """A node of ShippedCluster."""


class ShippedCluster(KafkaCluster):
    """Three Kafka nodes on free ports, with the shipped rebalance delay; a topic made
    there gets 3 replicas and min.insync.replicas 2 (create_topics), as the scripts'."""

    def __init__(self) -> None:
        super().__init__(3)
        self.nodes = [ShippedKafkaNode(self, node.node_id, None) for node in self.nodes]


BROKERS: dict[str, Any] = {
    "embedded": EmbeddedBroker,
    "kafka": ShippedKafka,
    "cluster": ShippedCluster,
}


def unique_name(prefix: str) -> str:
    return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"


def create_topics(address: str, partitions: int, *names: str, **config: str) -> None:
    """Create each of `names` with `partitions` partitions, unlimited retention and `config`,
    and the scripts' replication: the replication factor and min.insync.replicas that
    REPLICATION_FACTOR and MIN_INSYNC_REPLICAS default to on this many brokers (3 and 2
    on three or more, 1 and 1 on one)."""
    settings = TopicSettings(broker_address=address)
    for name in names:
        ensure_topic(settings, name, partitions, 30, config={**RETENTION, **config})
