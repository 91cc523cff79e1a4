"""Is a broker there? A script's start: its logging, the broker, its topics.

`wait_for_broker` answers in one line naming the address, and why when the client
learned it (a refused login reads differently from nothing listening).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from sensor_lib.errors import CannotRun, StoppedEarly
from sensor_lib.logs import BrokerOutageLog, configure_logging, silent_logger
from sensor_lib.polling import Deadline
from sensor_lib.settings import BrokerSettings, TopicSettings
from sensor_lib.stop_signals import StopSignals, raise_if_stopped
from sensor_lib.topics import ensure_topic, resolve_replication

HOW_TO_START_A_BROKER = (
    "start one with `docker compose up -d` (Redpanda, needs Docker), `make broker` "
    "(embedded, no Docker) or `make kafka` (Apache Kafka, needs Java 17)"
)


class BrokerUnavailable(CannotRun):
    """No broker answered at the configured address."""


def wait_for_broker(broker: BrokerSettings, timeout: float) -> None:
    """Return once a broker answers a metadata request, or raise BrokerUnavailable.

    The message names the address and, when the client learned one, why: a
    refused login reads differently from nothing listening. It asks in short
    rounds, so Ctrl-C is served within a second.
    """
    reasons: list[str] = []
    admin = AdminClient(
        {
            **broker.librdkafka_config(),
            "logger": silent_logger(),
            "error_cb": lambda error: reasons.append(error.str()),
        }
    )
    deadline = Deadline(max(timeout, 0.5))
    while True:
        raise_if_stopped()  # a C callback may have swallowed the KeyboardInterrupt
        try:
            admin.list_topics(timeout=min(1.0, max(deadline.left(), 0.1)))
            return
        except KafkaException as exc:
            if not deadline.passed():
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
    *,
    dead_letter_topics: Sequence[str] = (),
) -> StopSignals:
    """A script's start: its logging (unless `log_level` is None: set up already), then
    wait for the broker, and create `topics` and `dead_letter_topics` where missing, or
    check them where they exist (sensor_lib/topics.py). The replication settings left to
    their defaults are filled in from the cluster's size here.

    A stop meanwhile raises StoppedEarly("Stopped before <before>"); no broker, or a topic
    it refuses, raises their CannotRun. Returns the stop signals, for the rest of the run.
    """
    if log_level is not None:
        configure_logging(log_level, BrokerOutageLog(settings.broker_address))
    stop = StopSignals.install()
    try:
        with stop.interrupting():  # stop at once, whatever the client is waiting for
            wait_for_broker(settings, settings.broker_timeout)
            if isinstance(settings, TopicSettings):
                resolve_replication(settings, settings.broker_timeout)
            for topic in topics:
                ensure_topic(settings, topic)
            for topic in dead_letter_topics:
                ensure_topic(settings, topic, dead_letters=True)
    except KeyboardInterrupt:
        raise StoppedEarly(f"Stopped before {before}") from None
    return stop
