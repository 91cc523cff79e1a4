"""Producing: a delivery report that counts what the broker confirmed, and a produce
that waits for room in the client's queue."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, Message, Producer


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
