"""Settings shared by the sensor scripts.

Every setting is an environment variable with a working local default, and the
matching command-line flag wins over it. This module also turns the broker
settings into a Kafka connection (plain or secured), checks that a broker
answers, and holds the topic config every topic is created with.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from quixstreams.kafka.configuration import ConnectionConfig
from quixstreams.models import TopicConfig

DEFAULT_BROKER_ADDRESS = "localhost:19092"
DEFAULT_RAW_TOPIC = "raw-temperature"
HOW_TO_START_A_BROKER = (
    "start one with `docker compose up -d` (Redpanda, needs Docker), `make broker` "
    "(embedded, no Docker) or `make kafka` (Apache Kafka, needs Java 17)"
)

# Every topic gets explicit retention: some Kafka-compatible brokers report only
# the configs given at creation, and Quix Streams reads retention.ms from the
# source topic when it creates changelog topics.
TOPIC_RETENTION = {"retention.ms": str(7 * 24 * 3600 * 1000), "retention.bytes": "-1"}

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class BrokerUnavailable(RuntimeError):
    """No broker answered at the configured address."""


class TopicError(RuntimeError):
    """The broker answered but would not create a topic."""


class Stopped(Exception):
    """Ctrl-C or SIGTERM arrived while a script was still getting ready."""


def raise_stopped_on_signals() -> None:
    """Make Ctrl-C and SIGTERM raise Stopped, until a script installs its own handlers.

    Without this, Ctrl-C while waiting for a broker prints a KeyboardInterrupt
    traceback, and SIGTERM ends the script without a word.
    """

    def handler(signum: int, frame: Any) -> None:
        raise Stopped(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)


def add_setting(
    parser: argparse.ArgumentParser,
    flag: str,
    env: str,
    default: Any,
    help: str,
    *,
    type: Callable[[str], Any] = str,
    secret: bool = False,
    **kwargs: Any,
) -> None:
    """Add `--flag`, defaulting to $ENV, then to `default`; the flag wins.

    A secret's value is never shown in --help, only the variable it comes from.
    """
    shown = "not shown" if secret else f"default: {default}"
    parser.add_argument(
        flag,
        default=os.environ.get(env, default),
        type=type,
        help=f"{help} (env {env}; {shown})",
        **kwargs,
    )


def positive_int(text: str) -> int:
    number = int(text)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return number


def non_negative_int(text: str) -> int:
    number = int(text)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return number


def non_negative_float(text: str) -> float:
    number = float(text)
    if not number >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return number


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def add_broker_settings(parser: argparse.ArgumentParser, *, creates_topics: bool = True) -> None:
    """Settings the scripts share: where the broker is, how to log in, the raw topic."""
    add_setting(
        parser,
        "--broker-address",
        "BROKER_ADDRESS",
        DEFAULT_BROKER_ADDRESS,
        "Kafka bootstrap address, host:port",
    )
    add_setting(parser, "--raw-topic", "RAW_TOPIC", DEFAULT_RAW_TOPIC, "topic of raw readings")
    if creates_topics:
        add_setting(
            parser,
            "--partitions",
            "PARTITIONS",
            3,
            "partitions of the raw topic when a script creates it",
            type=positive_int,
        )
    add_setting(
        parser,
        "--broker-timeout",
        "BROKER_TIMEOUT",
        30.0,
        "seconds to wait for the broker at start before giving up",
        type=non_negative_float,
    )
    security = parser.add_argument_group("secured clusters")
    add_setting(
        security,
        "--security-protocol",
        "BROKER_SECURITY_PROTOCOL",
        "PLAINTEXT",
        "how to talk to the broker",
        type=str.upper,
        choices=SECURITY_PROTOCOLS,
    )
    add_setting(
        security,
        "--sasl-mechanism",
        "BROKER_SASL_MECHANISM",
        None,
        "SASL mechanism",
        type=str.upper,
        choices=SASL_MECHANISMS,
    )
    add_setting(security, "--sasl-username", "BROKER_SASL_USERNAME", None, "SASL username")
    add_setting(
        security, "--sasl-password", "BROKER_SASL_PASSWORD", None, "SASL password", secret=True
    )
    add_setting(
        security,
        "--ssl-ca-location",
        "BROKER_SSL_CA_LOCATION",
        None,
        "CA certificate file that signed the broker's certificate",
    )


@dataclass(frozen=True)
class BrokerSettings:
    address: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_location: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BrokerSettings:
        return cls(
            address=args.broker_address,
            security_protocol=args.security_protocol,
            sasl_mechanism=args.sasl_mechanism,
            sasl_username=args.sasl_username,
            sasl_password=args.sasl_password,
            ssl_ca_location=args.ssl_ca_location,
        )

    def __repr__(self) -> str:
        # Dataclass repr would print the password into any log line that shows us.
        return (
            f"BrokerSettings(address={self.address!r}, "
            f"security_protocol={self.security_protocol!r}, "
            f"sasl_mechanism={self.sasl_mechanism!r}, sasl_username={self.sasl_username!r})"
        )

    def connection(self) -> ConnectionConfig:
        """Quix Streams' connection config; it keeps the password a SecretStr."""
        return ConnectionConfig(
            bootstrap_servers=self.address,
            security_protocol=self.security_protocol.lower(),
            sasl_mechanism=self.sasl_mechanism,
            sasl_username=self.sasl_username,
            sasl_password=self.sasl_password,
            ssl_ca_location=self.ssl_ca_location,
        )

    def librdkafka_config(self) -> dict[str, Any]:
        """The same connection as a plain confluent-kafka config dict."""
        return self.connection().as_librdkafka_dict(plaintext_secrets=True)


def raw_topic_config(partitions: int) -> TopicConfig:
    return TopicConfig(
        num_partitions=partitions, replication_factor=1, extra_config=dict(TOPIC_RETENTION)
    )


def ensure_topic(broker: BrokerSettings, name: str, partitions: int, timeout: float) -> int:
    """Create `name` unless it exists; an existing topic is never reconfigured.

    Returns the topic's partition count: `partitions`, unless it already existed.
    """
    admin = AdminClient(broker.librdkafka_config())
    existing = admin.list_topics(timeout=timeout).topics
    if name in existing:
        return len(existing[name].partitions)
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=TOPIC_RETENTION)],
        request_timeout=timeout,
    )
    try:
        futures[name].result(timeout=timeout)
    except KafkaException as exc:
        error = exc.args[0]
        if error.name() != "TOPIC_ALREADY_EXISTS":  # another script won the race
            raise TopicError(
                f"could not create topic {name!r} at {broker.address}: {error.str()}"
            ) from None
        return len(admin.list_topics(name, timeout=timeout).topics[name].partitions)
    return partitions


def partitions_note(name: str, found: int, wanted: int) -> str | None:
    """The line to log when an existing topic does not have PARTITIONS partitions."""
    if found == wanted:
        return None
    return (
        f"Topic {name} already exists with {found} partition{'s' * (found != 1)}; "
        f"PARTITIONS={wanted} applies only to a topic a script creates"
    )


def wait_for_broker(broker: BrokerSettings, timeout: float) -> None:
    """Return once a broker answers a metadata request, or raise BrokerUnavailable.

    The message names the address and, when the client learned one, why: a
    refused login reads differently from nothing listening.
    """
    reasons: list[str] = []
    admin = AdminClient({
        **broker.librdkafka_config(),
        "logger": _silent_logger(),
        "error_cb": lambda error: reasons.append(error.str()),
    })  # fmt: skip
    # Ask in short rounds, so a signal handler (Ctrl-C) runs within a second.
    deadline = time.monotonic() + max(timeout, 0.5)
    while True:
        remaining = deadline - time.monotonic()
        try:
            admin.list_topics(timeout=min(1.0, max(remaining, 0.1)))
            return
        except KafkaException as exc:
            if time.monotonic() < deadline:
                time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))
                continue
            admin.poll(0)  # serve error_cb
            specific = [r for r in reasons if "brokers are down" not in r]
            why = f" ({specific[-1]})" if specific else ""
            raise BrokerUnavailable(
                f"no Kafka broker answered at {broker.address} within {timeout:g}s{why}; "
                f"{HOW_TO_START_A_BROKER}, or set BROKER_ADDRESS"
            ) from exc


def _silent_logger() -> logging.Logger:
    # librdkafka logs every failed connect attempt; the single line we raise is enough.
    logger = logging.getLogger("sensor_settings.librdkafka")
    logger.propagate = False
    logger.addHandler(logging.NullHandler())
    return logger


# librdkafka logs through this logger in our own clients (see client_logging).
CLIENT_LOGGER = "librdkafka"
# A failed connection, reported by librdkafka, Quix Streams or our clients.
_LOST_BROKER = re.compile(r"Connect to \S+ failed|Connection refused|[1-9]\d*/\d+ brokers are down")


class BrokerOutageLog(logging.Filter):
    """One line when the broker becomes unreachable, instead of the clients' flood.

    While the broker is away, every Kafka client here (Quix Streams' consumer and
    producer, our own producers) logs each failed connection attempt and each
    "brokers are down". This filter turns the first such error into one WARNING
    naming the address and drops the client logs that follow, until they have
    been quiet for `quiet_seconds`. Quix Streams' "connectivity restored" lines
    pass, so the log says when the broker came back.
    """

    def __init__(self, address: str, quiet_seconds: float = 30.0) -> None:
        super().__init__()
        self.address = address
        self.quiet_seconds = quiet_seconds
        self.last_trouble = -math.inf
        self.lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("quixstreams.kafka", CLIENT_LOGGER)):
            return True
        message = record.getMessage()
        if "connectivity restored" in message:
            return True
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


def client_logging() -> dict[str, Any]:
    """librdkafka settings that send a client's logs through Python logging (and our filter)."""
    return {"logger": logging.getLogger(CLIENT_LOGGER)}


def configure_logging(level: str = "INFO", broker_address: str | None = None) -> None:
    """One readable line per event, stamped in UTC whatever the host's time zone.

    With `broker_address`, a broker outage reads as one line (BrokerOutageLog).
    """
    handler = logging.StreamHandler()
    formatter = logging.Formatter(
        "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    if broker_address is not None:
        handler.addFilter(BrokerOutageLog(broker_address))
    logging.basicConfig(level=level, handlers=[handler], force=True)
