"""The three-node Apache Kafka cluster (`make kafka BROKERS=3`), and the Redpanda cluster's
compose file.

The launcher runs as a user runs it, `python -m sensor_lib.kafka_broker --brokers 3`: it
prints the bootstrap list; its topics and __consumer_offsets keep 3 replicas; a node
killed with SIGKILL is one line and the other two go on; a paused node is no exit; and a
stop signal stops every node and frees every port. KafkaCluster, the class the launcher
and the broker-loss tests use, kills a node and starts it again on its data.

Three JVMs take the two cores for 20-40 s as they start, so these tests run one at a time
(and need Java 17+ and Maven, as the other Kafka tests do). The compose file's check is
offline and fast: no Docker.
"""

from __future__ import annotations

import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from check_jsonschema.cli.main_command import main as check_jsonschema
from click.testing import CliRunner
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from helpers import Script, descendants, running, wait_until_stopped
from sensor_lib.kafka_broker import fetch_jars, find_java
from sensor_lib.kafka_cluster import KafkaCluster
from sensor_lib.polling import wait_until
from sensor_lib.servers import find_free_port, is_listening

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
START_TIMEOUT = 180.0  # three JVMs on two cores, beside other tests' brokers
NODE_LINE = re.compile(r"^  node (\d): 127\.0\.0\.1:(\d+), pid (\d+), log (\S+)$", re.MULTILINE)


def test_the_cluster_compose_file_follows_the_compose_specification() -> None:
    done = CliRunner().invoke(
        check_jsonschema,
        ["--builtin-schema", "vendor.compose-spec", str(REPO / "docker-compose.cluster.yml")],
    )
    assert (done.exit_code, done.output) == (0, "ok -- validation done\n")


# --- The launcher, as a subprocess --------------------------------------------------


def three_free_ports() -> int:
    """A port P such that P, P+1 and P+2 are free on 127.0.0.1."""

    def bindable(port: int) -> bool:
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
                return True
            except OSError:
                return False

    def first() -> int | None:
        port = find_free_port()
        return port if port < 65533 and all(map(bindable, range(port, port + 3))) else None

    return wait_until(first, 10, interval=0, what="three free ports in a row")


class Launcher(Script):
    """`python -m sensor_lib.kafka_broker --brokers 3 --port P`."""

    def __init__(self) -> None:
        self.port = three_free_ports()
        self.address = ",".join(f"{HOST}:{self.port + i}" for i in range(3))
        super().__init__("sensor_lib.kafka_broker", "--brokers", "3", "--port", str(self.port))

    def wait_until_ready(self) -> None:
        self.wait_for_output("To lose a node: kill -9 PID", timeout=START_TIMEOUT)
        self.nodes = {int(n): int(pid) for n, _, pid, _ in NODE_LINE.findall(self.output())}
        # Every process below the launcher, and every port they listen on.
        self.processes = descendants(self.process.pid)
        self.ports = {
            conn.laddr.port
            for pid in self.processes
            for conn in psutil.Process(pid).net_connections(kind="tcp")
            if conn.status == psutil.CONN_LISTEN
        }

    def stop_and_check(self, signum: int) -> None:
        """`signum` to the launcher stops every node and frees every port."""
        assert self.stop(signum, timeout=60) == 0, self.output()
        wait_until_stopped([self.process.pid, *self.processes], 10)
        assert not [port for port in self.ports if is_listening(HOST, port)]


@pytest.fixture
def launcher() -> Iterator[Launcher]:
    find_java()  # without Java 17+ or Maven: fail saying so, as the other Kafka tests do
    fetch_jars()
    with Launcher() as started:
        started.wait_until_ready()
        yield started
        if started.process.poll() is None:  # a test that failed before its stop
            started.stop(signal.SIGTERM, timeout=60)


@pytest.mark.integration
@pytest.mark.cluster
def test_the_launcher_keeps_three_replicas_and_outlives_a_killed_node(
    launcher: Launcher,
) -> None:
    port = launcher.port
    output = launcher.output()
    assert f"listening on {launcher.address}; Ctrl-C stops it." in output
    assert f"BROKER_ADDRESS={launcher.address} python sensor_stream_processor.py" in output
    lines = NODE_LINE.findall(output)
    assert [(int(n), int(p)) for n, p, _, _ in lines] == [(1, port), (2, port + 1), (3, port + 2)]
    assert all(Path(log).name == f"node-{n}.log" for n, _, _, log in lines)
    assert len(launcher.processes) == 3  # the three JVMs, and nothing else
    assert len(launcher.ports) == 6  # each node's client port and controller port

    admin = AdminClient({"bootstrap.servers": launcher.address})
    admin.create_topics([NewTopic("readings", 3, replication_factor=3)])["readings"].result(30)

    def topic_config() -> dict | None:
        # A new topic reaches each node's metadata a moment after its creation returns.
        future = admin.describe_configs([ConfigResource("topic", "readings")])
        try:
            return next(iter(future.values())).result(30)
        except KafkaException:
            return None

    config = wait_until(topic_config, 30, what="the new topic's configuration")
    assert config["min.insync.replicas"].value == "2"
    # A group's first consumer makes the broker create __consumer_offsets.
    consumer = Consumer(
        {"bootstrap.servers": launcher.address, "group.id": "g", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe(["readings"])
    wait_until(lambda: consumer.poll(0.2) is None and consumer.assignment(), 60, what="a join")
    consumer.close()
    topics = admin.list_topics(timeout=30).topics
    for name in ["readings", "__consumer_offsets"]:
        partitions = topics[name].partitions.values()
        assert {len(p.replicas) for p in partitions} == {3}, name

    # Paused (SIGSTOP) is not dead: no line, and the node is there again after SIGCONT.
    stopped = psutil.Process(launcher.nodes[3])
    stopped.suspend()
    with pytest.raises(TimeoutError):
        wait_until(lambda: "exited" in launcher.output(), 2, what="an exit line")
    assert stopped.status() == psutil.STATUS_STOPPED
    stopped.resume()
    launcher.assert_running()
    assert running(stopped.pid)

    # SIGKILL of one node: one line, the launcher and the other two go on, writes too.
    psutil.Process(launcher.nodes[2]).kill()
    gone = f"node 2 (127.0.0.1:{port + 1}) exited with status -9; the other 2 go on"
    launcher.wait_for_output(gone, timeout=10)
    assert launcher.output().count("exited") == 1
    producer = Producer({"bootstrap.servers": launcher.address, "message.timeout.ms": 60_000})
    delivered: list[object] = []
    producer.produce("readings", b"after the loss", on_delivery=lambda e, m: delivered.append(e))
    assert producer.flush(70) == 0
    assert delivered == [None]  # acks=all: the two in-sync replicas have it
    launcher.assert_running()

    launcher.stop_and_check(signal.SIGHUP)


@pytest.mark.integration
@pytest.mark.cluster
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_stops_every_node_and_frees_every_port(
    launcher: Launcher, signum: int
) -> None:
    launcher.stop_and_check(signum)


# --- The class ----------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[KafkaCluster]:
    """A started cluster, its logs in tmp_path (the start is the fixture's: it is slow)."""
    with KafkaCluster(log_dir=tmp_path, start_timeout=START_TIMEOUT) as started:
        yield started


@pytest.mark.integration
@pytest.mark.cluster
def test_a_killed_node_starts_again_on_its_data(cluster: KafkaCluster, tmp_path: Path) -> None:
    admin = AdminClient({"bootstrap.servers": cluster.address})
    admin.create_topics([NewTopic("kept", 1, replication_factor=3)])["kept"].result(30)
    producer = Producer({"bootstrap.servers": cluster.address})
    producer.produce("kept", b"one")
    assert producer.flush(30) == 0
    leader = cluster.leader("kept")
    node = cluster.node(leader)
    data = node.data_dir

    cluster.kill(leader)
    assert node.process is not None
    assert node.process.returncode == -9
    assert data is not None
    assert (data / "logs" / "meta.properties").exists()
    led = lambda: cluster.leader("kept") not in (leader, -1)  # noqa: E731
    wait_until(led, 30, what="another replica leading")  # its data is there too
    cluster.restart(leader)
    assert node.data_dir == data
    wait_until(cluster.fully_replicated, 60, what="the restarted node back in sync")

    cluster.pause(leader)
    assert psutil.Process(node.process.pid).status() == psutil.STATUS_STOPPED
    cluster.resume(leader)
    wait_until(lambda: leader in node.brokers_listed(), 30, what="the resumed node")

    pids = [n.process.pid for n in cluster.nodes if n.process]
    cluster.stop()
    assert not any(map(running, pids))
    assert cluster.folder is None
    assert not data.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"node-{n}.log" for n in (1, 2, 3)]
