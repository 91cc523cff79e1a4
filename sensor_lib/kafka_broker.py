"""Run Apache Kafka on 127.0.0.1 without Docker: one KRaft node, data in a temporary folder.

Uses the official Apache Kafka 4.4 jars, which Maven fetches once from Maven
Central into kafka_dist/lib/ beside this file (see kafka_dist/pom.xml). Needs Java
17+ and Maven. The broker is also its own controller; its data folder is removed
when it stops.

    python -m sensor_lib.kafka_broker --port 19092     # then BROKER_ADDRESS=localhost:19092
    python -m sensor_lib.kafka_broker --port 19092 --sasl-port 19094 --scram-user alice:alice-secret
    python -m sensor_lib.kafka_broker --brokers 3 --port 19092  # a cluster (kafka_cluster.py)

Tests and benchmarks use the `KafkaBroker` class directly (and `KafkaCluster`).
"""

from __future__ import annotations

import argparse
import base64
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from filelock import FileLock

from sensor_lib.servers import (
    ServerProcess,
    ServerStartError,
    find_free_port,
    serve_in_foreground,
)

KAFKA_DIR = Path(__file__).resolve().parent / "kafka_dist"
JARS = KAFKA_DIR / "lib"
MAIN_JAR = "kafka_2.13-4.4.0.jar"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
JAVA_OPTIONS = ["-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true"]
# The broker's own side of OAUTHBEARER, for tests: it accepts unsigned tokens ("alg":
# "none") and takes the principal from their `sub` claim. Never for production.
UNSECURED_OAUTH = (
    "org.apache.kafka.common.security.oauthbearer.internals.unsecured."
    "OAuthBearerUnsecuredValidatorCallbackHandler"
)
TUTORIAL_PORT = 19092
# A cluster keeps each partition on 3 nodes (kafka_cluster.py).
MIN_CLUSTER_NODES = 3


def find_java() -> str:
    """The `java` command, if it is Java 17 or newer; otherwise say how to get one."""
    java = shutil.which("java")
    if java is None:
        raise ServerStartError(
            "Apache Kafka needs Java 17 or newer and `java` was not found; install a JDK "
            "(apt-get install openjdk-17-jre-headless) or use the embedded broker: make broker"
        )
    shown = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    found = re.search(r'version "(\d+)', shown.stderr)
    if found is None or int(found.group(1)) < 17:
        raise ServerStartError(
            f"Apache Kafka needs Java 17 or newer; `{java} -version` says "
            f"{shown.stderr.splitlines()[0] if shown.stderr else 'nothing'}; install a JDK 17 "
            "(apt-get install openjdk-17-jre-headless) or use the embedded broker: make broker"
        )
    return java


def fetch_jars() -> Path:
    """Kafka's jars in sensor_lib/kafka_dist/lib/, fetched by Maven the first time only."""
    if (JARS / MAIN_JAR).exists():
        return JARS
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServerStartError(
            f"Apache Kafka's jars are not in {JARS} yet and `mvn` was not found to fetch them;"
            " install Maven (apt-get install maven) or use the embedded broker: make broker"
        )
    # Test workers may start brokers at once: one fetches, the others wait for it.
    with FileLock(KAFKA_DIR / ".fetch.lock"):
        if not (JARS / MAIN_JAR).exists():
            print(
                f"Fetching Apache Kafka's jars from Maven Central into {JARS} (once)...",
                file=sys.stderr,
                flush=True,
            )
            partial = KAFKA_DIR / "lib.partial"
            shutil.rmtree(partial, ignore_errors=True)
            fetched = subprocess.run(
                [
                    mvn,
                    "-q",
                    "-B",
                    "-f",
                    str(KAFKA_DIR / "pom.xml"),
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={partial}",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if fetched.returncode != 0:
                last = (fetched.stdout + fetched.stderr).strip().splitlines()[-1:]
                raise ServerStartError(f"Maven could not fetch Kafka's jars: {' '.join(last)}")
            partial.rename(JARS)
    return JARS


def random_cluster_id() -> str:
    """A Kafka Uuid: 16 random bytes, URL-safe base64 without padding.

    As Kafka's own Uuid.randomUuid(), never one that starts with "-": the storage
    tool would take it for an option (one format in 64 failed so)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def parse_scram_user(text: str) -> tuple[str, str]:
    name, sep, password = text.partition(":")
    if not sep or not name or not password:
        raise argparse.ArgumentTypeError(f"expected NAME:PASSWORD, got {text!r}")
    return name, password


@dataclass(frozen=True)
class BrokerTls:
    """What the broker's TLS listeners present and trust: PEM files."""

    certificate: Path  # the broker's certificate, for 127.0.0.1
    key: Path  # its private key, unencrypted PKCS#8
    client_ca: Path  # the CA whose client certificates the mutual-TLS listener takes


class KafkaBroker(ServerProcess):
    """A single-node Apache Kafka (KRaft) on 127.0.0.1; use it as a context manager."""

    name = "Apache Kafka"
    node_id = 1
    java_options = JAVA_OPTIONS

    def __init__(
        self,
        port: int | None = None,
        *,
        sasl_port: int | None = None,
        scram_users: list[tuple[str, str]] | None = None,
        tls: BrokerTls | None = None,
        log_path: Path | None = None,
        start_timeout: float = 90.0,
    ) -> None:
        """With `tls`, two more listeners: SSL on `ssl_port`, which requires a client
        certificate signed by `tls.client_ca`, and SASL_SSL on `sasl_ssl_port`, with
        SCRAM (the `scram_users`) and OAUTHBEARER (unsigned tokens: tests only)."""
        super().__init__(port, log_path=log_path, start_timeout=start_timeout)
        self.controller_port = find_free_port()
        self.sasl_port = sasl_port
        self.tls = tls
        self.ssl_port = find_free_port() if tls else None
        self.sasl_ssl_port = find_free_port() if tls else None
        self.scram_users = scram_users or []
        self.data_dir: Path | None = None
        self.cluster_id = random_cluster_id()

    @property
    def sasl_address(self) -> str:
        return f"{self.host}:{self.sasl_port}"

    def ports(self) -> list[int]:
        ports = (self.port, self.controller_port, self.sasl_port, self.ssl_port, self.sasl_ssl_port)
        return [p for p in ports if p]

    def server_properties(self, log_dirs: Path) -> str:
        listeners = {"PLAINTEXT": self.port, "CONTROLLER": self.controller_port}
        if self.sasl_port:
            listeners["SASL_PLAINTEXT"] = self.sasl_port
        if self.ssl_port and self.sasl_ssl_port:
            listeners["SSL"], listeners["SASL_SSL"] = self.ssl_port, self.sasl_ssl_port
        clients = [name for name in listeners if name != "CONTROLLER"]
        lines = [
            "process.roles=broker,controller",
            f"node.id={self.node_id}",
            "listeners=" + ",".join(f"{n}://{self.host}:{p}" for n, p in listeners.items()),
            "advertised.listeners="
            + ",".join(f"{n}://{self.host}:{listeners[n]}" for n in clients),
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map="
            + ",".join(f"{n}:{'PLAINTEXT' if n == 'CONTROLLER' else n}" for n in listeners),
            f"controller.quorum.bootstrap.servers={self.quorum_bootstrap_servers()}",
            f"log.dirs={log_dirs}",
            *self.replication_settings(),
            # Let the first consumer join a group at once, as a test or demo expects.
            "group.initial.rebalance.delay.ms=0",
        ]
        if self.sasl_port:
            lines.append("sasl.enabled.mechanisms=" + ",".join(SCRAM_MECHANISMS))
            for mechanism in SCRAM_MECHANISMS:
                lines.append(
                    f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config="
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                )
        if self.tls:
            lines += self.tls_properties(log_dirs.parent / "keystore.pem")
        return "\n".join(lines) + "\n"

    def tls_properties(self, keystore: Path) -> list[str]:
        """The TLS listeners: the broker's key and certificate in one PEM keystore, the
        client CA as its truststore; SSL requires a client certificate."""
        assert self.tls is not None
        keystore.write_text(self.tls.key.read_text() + self.tls.certificate.read_text())
        mechanisms = [*SCRAM_MECHANISMS, "OAUTHBEARER"]
        lines = [
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.tls.client_ca}",
            "listener.name.ssl.ssl.client.auth=required",
            "listener.name.sasl_ssl.sasl.enabled.mechanisms=" + ",".join(mechanisms),
            "listener.name.sasl_ssl.oauthbearer.sasl.jaas.config="
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;",
            f"listener.name.sasl_ssl.oauthbearer.sasl.server.callback.handler.class={UNSECURED_OAUTH}",
        ]
        for mechanism in SCRAM_MECHANISMS:
            lines.append(
                f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
        return lines

    def quorum_bootstrap_servers(self) -> str:
        """The controllers a node finds the quorum through: here, itself."""
        return f"{self.host}:{self.controller_port}"

    def replication_settings(self) -> list[str]:
        """One node: every internal topic has one replica."""
        return [
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
        ]

    def initial_controllers(self) -> list[str]:
        """The storage tool's quorum option: a quorum of this one node."""
        return ["--standalone"]

    def new_data_dir(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="kafka-broker-"))

    def java_command(self) -> list[str]:
        return [
            find_java(),
            *self.java_options,
            f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
            "-cp",
            f"{fetch_jars()}/*",
        ]

    def prepare(self) -> Path:
        """A new data folder, formatted; or the one stop(keep_data=True) kept, to restart on."""
        if self.data_dir is None:
            self.data_dir = self.new_data_dir()
            self.format_storage(self.java_command())
        return self.data_dir

    def command(self) -> list[str]:
        data_dir = self.prepare()
        return [*self.java_command(), "kafka.Kafka", str(data_dir / "server.properties")]

    def format_storage(self, java_command: list[str]) -> None:
        assert self.data_dir is not None
        properties = self.data_dir / "server.properties"
        properties.write_text(self.server_properties(self.data_dir / "logs"))
        # SCRAM users are stored in the cluster metadata when it is formatted (KIP-900).
        scram = [
            arg
            for name, password in self.scram_users
            for mechanism in SCRAM_MECHANISMS
            for arg in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
        ]
        formatted = subprocess.run(
            [
                *java_command,
                "kafka.tools.StorageTool",
                "format",
                *self.initial_controllers(),
                "-t",
                self.cluster_id,
                "-c",
                str(properties),
                *scram,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if formatted.returncode != 0:
            lines = (formatted.stderr or formatted.stdout).strip().splitlines() or ["no output"]
            errors = [line for line in lines if "Exception" in line] or lines[-1:]
            raise ServerStartError(f"formatting Kafka's storage failed: {errors[0]}")

    def is_ready(self) -> bool:
        """The broker answers metadata requests and lists itself: it can take topics."""
        return self.node_id in self.brokers_listed()

    def brokers_listed(self) -> set[int]:
        """The node ids of the live brokers this node's metadata lists; none if it does not
        answer."""
        admin = AdminClient({"bootstrap.servers": self.address, "log_level": 0})
        try:
            return set(admin.list_topics(timeout=0.5).brokers)
        except KafkaException:
            return set()

    def cleanup(self) -> None:
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None


def tutorial_commands(at: str) -> str:
    """The tutorial's commands for the other terminals, each prefixed with `at`."""
    return (
        "In three more terminals (the sink wants `make postgres` running, too):\n"
        f"  {at}python sensor_stream_producer.py --count 0 --backfill-seconds 3600\n"
        f"  {at}python sensor_stream_processor.py\n"
        f"  {at}python sensor_stream_sink.py"
    )


def next_steps(broker: KafkaBroker) -> str:
    """The commands for the tutorial's other terminals."""
    steps = tutorial_commands(
        "" if broker.port == TUTORIAL_PORT else f"BROKER_ADDRESS={broker.address} "
    )
    if broker.sasl_port:
        users = ", ".join(name for name, _ in broker.scram_users) or "none"
        steps += (
            f"\nSASL_PLAINTEXT with SCRAM-SHA-256/512 on {broker.sasl_address} (users: {users}):"
            f"\n  BROKER_ADDRESS={broker.sasl_address} BROKER_SECURITY_PROTOCOL=SASL_PLAINTEXT"
            " BROKER_SASL_MECHANISM=SCRAM-SHA-256 BROKER_SASL_USERNAME=<name>"
            " BROKER_SASL_PASSWORD=<password> python sensor_stream_processor.py"
        )
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--port",
        type=int,
        default=TUTORIAL_PORT,
        help=f"port on 127.0.0.1 (default {TUTORIAL_PORT}); a cluster's nodes take the next ones",
    )
    parser.add_argument(
        "--brokers",
        type=int,
        default=1,
        help="nodes: 1 (the default), or a cluster of 3 or more (kafka_cluster.py)",
    )
    parser.add_argument(
        "--sasl-port", type=int, help="also listen with SASL_PLAINTEXT (SCRAM) here"
    )
    parser.add_argument(
        "--scram-user",
        action="append",
        type=parse_scram_user,
        default=[],
        metavar="NAME:PASSWORD",
        help="a SCRAM-SHA-256 and SCRAM-SHA-512 user; repeatable; needs --sasl-port",
    )
    args = parser.parse_args(argv)
    if args.scram_user and not args.sasl_port:
        parser.error("--scram-user needs --sasl-port")
    if args.brokers != 1:
        if args.brokers < MIN_CLUSTER_NODES:
            parser.error(f"--brokers: 1, or a cluster of {MIN_CLUSTER_NODES} or more")
        if args.sasl_port:
            parser.error("--sasl-port and --scram-user are for a single node (--brokers 1)")
        from sensor_lib.kafka_cluster import KafkaCluster, serve_cluster  # it imports this

        return serve_cluster(KafkaCluster(args.brokers, args.port))
    broker = KafkaBroker(args.port, sasl_port=args.sasl_port, scram_users=args.scram_user)
    return serve_in_foreground(broker, next_steps(broker))


if __name__ == "__main__":
    sys.exit(main())
