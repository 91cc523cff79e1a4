"""A cluster of Apache Kafka nodes on 127.0.0.1 without Docker, to lose a broker on purpose.

Each node is a KafkaBroker (kafka_broker.py) of its own: broker and controller in one
JVM, its own node.id, data folder, client port and controller port. The nodes form one
KRaft quorum: every node is formatted with the same cluster id and the same
`--initial-controllers`, and finds the quorum through `controller.quorum.bootstrap.servers`.
Every topic and internal topic keeps 3 replicas and takes a write once 2 have it, so any
one node can die without losing an acknowledged write.

    python -m sensor_lib.kafka_broker --brokers 3 --port 19092   # or: make kafka BROKERS=3

Tests use the `KafkaCluster` class: kill(), restart(), pause() and resume() a node.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from sensor_lib.kafka_broker import (
    JAVA_OPTIONS,
    MIN_CLUSTER_NODES,
    KafkaBroker,
    random_cluster_id,
    tutorial_commands,
)
from sensor_lib.polling import wait_until
from sensor_lib.servers import ServerStartError, serve_in_foreground
from sensor_lib.stop_signals import raise_if_stopped

# Three JVMs beside the pipeline: half the single node's heap each.
NODE_JAVA_OPTIONS = [
    "-Xms256m",
    "-Xmx512m",
    *(option for option in JAVA_OPTIONS if not option.startswith(("-Xms", "-Xmx"))),
]
REPLICAS, MIN_IN_SYNC = 3, 2


class KafkaNode(KafkaBroker):
    """One node of a KafkaCluster: a broker, and a voter of the cluster's controller quorum.

    `start()` returns once the JVM is launched: no node serves clients before a majority of
    the nodes runs, so KafkaCluster launches them all, then waits until they serve.
    """

    java_options = NODE_JAVA_OPTIONS

    def __init__(self, cluster: KafkaCluster, node_id: int, port: int | None) -> None:
        super().__init__(port, start_timeout=cluster.start_timeout)
        self.cluster = cluster
        self.node_id = node_id
        self.name = f"node {node_id} ({self.address})"
        self.cluster_id = cluster.cluster_id
        self.directory_id = random_cluster_id()  # its metadata log folder's, as a voter
        self.paused = False

    def quorum_bootstrap_servers(self) -> str:
        return ",".join(f"{node.host}:{node.controller_port}" for node in self.cluster.nodes)

    def initial_controllers(self) -> list[str]:
        voters = [
            f"{node.node_id}@{node.host}:{node.controller_port}:{node.directory_id}"
            for node in self.cluster.nodes
        ]
        return ["--initial-controllers", ",".join(voters)]

    def replication_settings(self) -> list[str]:
        """Every topic, internal ones too, on 3 nodes; a write counts once 2 have it; a
        replica that missed writes never becomes the leader."""
        return [
            f"default.replication.factor={REPLICAS}",
            f"min.insync.replicas={MIN_IN_SYNC}",
            f"offsets.topic.replication.factor={REPLICAS}",
            f"transaction.state.log.replication.factor={REPLICAS}",
            f"transaction.state.log.min.isr={MIN_IN_SYNC}",
            f"share.coordinator.state.topic.replication.factor={REPLICAS}",
            f"share.coordinator.state.topic.min.isr={MIN_IN_SYNC}",
            "unclean.leader.election.enable=false",
        ]

    def new_data_dir(self) -> Path:
        assert self.cluster.folder is not None
        folder = self.cluster.folder / f"node-{self.node_id}"
        folder.mkdir()
        return folder

    def is_ready(self) -> bool:
        return True  # launched: KafkaCluster waits until it serves

    def is_running(self) -> bool:
        """Started and not exited; a paused node (SIGSTOP) is running."""
        return self.process is not None and self.process.poll() is None

    def check_running(self) -> None:
        if not self.is_running():
            status = "never started" if self.process is None else self.process.returncode
            raise ServerStartError(f"{self.name} exited with status {status}; see {self.log_path}")


class KafkaCluster:
    """`nodes` Apache Kafka nodes on 127.0.0.1, clients on `port`, `port`+1, ... (free ports
    if None); ready when start() returns, which takes 20-40 s on two cores. A context
    manager; stop() removes every node's data, and the logs unless `log_dir` was given.
    """

    name = "Apache Kafka cluster"

    def __init__(
        self,
        nodes: int = 3,
        port: int | None = None,
        *,
        log_dir: Path | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        if nodes < MIN_CLUSTER_NODES:
            raise ValueError(f"a cluster has {MIN_CLUSTER_NODES} nodes or more, not {nodes}")
        self.cluster_id = random_cluster_id()
        self.start_timeout = start_timeout
        self.log_dir = log_dir
        self.folder: Path | None = None  # the nodes' data (and logs), while started
        self.nodes = [KafkaNode(self, i + 1, port + i if port else None) for i in range(nodes)]

    @property
    def address(self) -> str:
        """The bootstrap list: every node's client address."""
        return ",".join(node.address for node in self.nodes)

    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    def start(self) -> KafkaCluster:
        self.folder = Path(tempfile.mkdtemp(prefix="kafka-cluster-"))
        logs = self.log_dir or self.folder
        logs.mkdir(parents=True, exist_ok=True)
        try:
            # Each format is a JVM of its own, seconds long: all at once.
            with ThreadPoolExecutor(len(self.nodes)) as formatting:
                list(formatting.map(KafkaNode.prepare, self.nodes))
            for node in self.nodes:
                node.log_path = logs / f"node-{node.node_id}.log"
                node.start()
            self.wait_until_serving(self.nodes, self.start_timeout)
        except BaseException:  # Ctrl-C during start-up too: leave nothing behind
            self.stop()
            raise
        return self

    def wait_until_serving(self, nodes: list[KafkaNode], timeout: float) -> None:
        """Until each of `nodes` lists itself and the others among the live brokers."""
        wanted = {node.node_id for node in nodes}

        def serving() -> bool:
            raise_if_stopped()  # a Ctrl-C that confluent-kafka's C code swallowed
            for node in nodes:
                node.check_running()
            return all(wanted <= node.brokers_listed() for node in nodes)

        try:
            wait_until(serving, timeout, interval=0.2, what=f"{self.name} at {self.address}")
        except TimeoutError as exc:
            logs = ", ".join(str(node.log_path) for node in nodes)
            raise ServerStartError(f"{exc}; see {logs}") from None

    def kill(self, node_id: int) -> KafkaNode:
        """SIGKILL the node: no clean shutdown; its data stays for restart()."""
        node = self.node(node_id)
        assert node.process is not None
        node.process.kill()
        node.stop(keep_data=True)
        node.paused = False
        return node

    def restart(self, node_id: int, timeout: float = 90.0) -> KafkaNode:
        """Start a killed node again on its data; return once it serves clients."""
        node = self.node(node_id)
        node.start()
        self.wait_until_serving([node], timeout)
        return node

    def pause(self, node_id: int) -> KafkaNode:
        """SIGSTOP the node, and return once it has stopped: it holds its ports and
        answers nothing until resume()."""
        return self._signal(node_id, signal.SIGSTOP, paused=True)

    def resume(self, node_id: int) -> KafkaNode:
        """SIGCONT the node, and return once it runs again."""
        return self._signal(node_id, signal.SIGCONT, paused=False)

    def _signal(self, node_id: int, signum: int, *, paused: bool) -> KafkaNode:
        node = self.node(node_id)
        assert node.process is not None
        node.process.send_signal(signum)
        process = psutil.Process(node.process.pid)

        def done() -> bool:  # the kernel stops (or continues) the JVM after the call returns
            return (process.status() == psutil.STATUS_STOPPED) == paused

        wait_until(done, 10, interval=0.02, what=f"{node.name} {'paused' if paused else 'going'}")
        node.paused = paused
        return node

    def leader(self, topic: str, partition: int = 0) -> int:
        """The node id that leads `topic`'s `partition` (-1: none), as the cluster says."""
        metadata = self._admin().list_topics(topic, timeout=10)
        return metadata.topics[topic].partitions[partition].leader

    def fully_replicated(self) -> bool:
        """Every partition of every topic has all its replicas in sync."""
        try:
            topics = self._admin().list_topics(timeout=2).topics.values()
        except KafkaException:
            return False
        partitions = [p for topic in topics for p in topic.partitions.values()]
        return all(set(p.isrs) == set(p.replicas) for p in partitions)

    def _admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.address, "log_level": 0})

    def stop(self) -> None:
        """Stop every node, paused ones too, all at once; remove their data."""
        running = [node for node in self.nodes if node.is_running()]
        for node in running:
            assert node.process is not None
            node.process.send_signal(signal.SIGCONT)
            node.process.send_signal(node.stop_signal)
            node.paused = False
        for node in self.nodes:
            node.stop()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def process(self) -> ClusterWatch:
        """What serve_in_foreground waits on, as on a single server's process."""
        return ClusterWatch(self)


class ClusterWatch:
    """The cluster's nodes, watched as one process: wait() lists the nodes (pid and log),
    says in one line when one exits, and returns once none is left."""

    def __init__(self, cluster: KafkaCluster) -> None:
        self.cluster = cluster

    def wait(self) -> int:
        nodes = self.cluster.nodes
        for node in nodes:
            assert node.process is not None
            pid, log = node.process.pid, node.log_path
            print(f"  node {node.node_id}: {node.address}, pid {pid}, log {log}")
        print(
            f"To lose a node: kill -9 PID; the other {len(nodes) - 1} go on. "
            "To pause one: kill -STOP PID, then kill -CONT PID.",
            flush=True,
        )
        gone: dict[int, int] = {}
        while len(gone) < len(nodes):
            time.sleep(0.2)
            for node in nodes:
                status = node.process.poll() if node.process else None
                if status is not None and node.node_id not in gone:
                    gone[node.node_id] = status
                    print(f"{node.name} exited with status {status}; {self.left(gone)}", flush=True)
        return next(reversed(gone.values()))

    def left(self, gone: dict[int, int]) -> str:
        count = len(self.cluster.nodes) - len(gone)
        if count == 0:
            return "none is left"
        go_on = f"the other {count} {'goes' if count == 1 else 'go'} on"
        if count * 2 <= len(self.cluster.nodes):
            return f"{go_on} without a quorum of controllers: writes time out until one is back"
        return go_on


def next_steps(cluster: KafkaCluster) -> str:
    """The tutorial's commands, with the bootstrap list."""
    return tutorial_commands(f"BROKER_ADDRESS={cluster.address} ") + (
        f"\nThe scripts create their topics with {REPLICAS} replicas, {MIN_IN_SYNC} in sync."
        " The nodes:"
    )


def serve_cluster(cluster: KafkaCluster) -> int:
    """Run `cluster` until Ctrl-C, SIGTERM, SIGHUP or our parent's exit; then stop it.
    A node that dies is said in one line; the others go on."""
    return serve_in_foreground(cluster, next_steps(cluster))  # type: ignore[arg-type]
