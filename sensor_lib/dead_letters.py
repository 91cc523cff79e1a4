"""The dead-letter topic: what a script cannot use goes there unchanged, with the reason why.

Quix Streams hands a dataframe step the deserialized value only. A dead letter
must keep the message's own bytes and headers, so the value deserializer keeps
them in `current` (a `RawMessage`): Quix Streams runs the whole dataframe on one
message before it polls the next, so every later step sees the message it handles.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any

from confluent_kafka import KafkaError, Producer
from quixstreams import message_context

from sensor_lib.errors import CannotRun
from sensor_lib.logs import client_logging
from sensor_lib.polling import Deadline
from sensor_lib.settings import QuixAppSettings

logger = logging.getLogger(__name__)


class RawMessage:
    """The bytes, headers and event time of the message being processed."""

    __slots__ = ("event_ms", "headers", "payload")

    def __init__(self) -> None:
        self.payload: bytes | None = None
        self.headers: Any = None
        self.event_ms: int = 0


current = RawMessage()


class DeadLetterError(CannotRun):
    """A dead letter could not be written, so the script must not commit past it."""


class DeadLetterSink:
    """Writes dead letters to `topic`, each one flushed before the script moves on.

    Flushing each one means the bad message's offset is never committed before its
    dead letter is safe. `counts` holds the dead letters written, by reason.
    """

    def __init__(self, settings: QuixAppSettings, topic: str) -> None:
        self.broker, self.topic = settings, topic
        # A dead letter waits for a broker that is away as long as the rest of the script
        # does (BROKER_OUTAGE_TIMEOUT; 0: for ever).
        self.patience = settings.broker_outage_timeout or math.inf
        self.counts: Counter[str] = Counter()
        self._producer: Producer | None = None  # made at the first dead letter

    def send(
        self,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        reason: str,
        detail: str,
        extra: list[tuple[str, bytes]] = (),
    ) -> None:
        """Log one line saying where the message was, and write it with `error` headers."""
        where = message_context()
        logger.warning(
            "Dead-lettered %s[%s]@%s key=%r: %s: %s",
            where.topic,
            where.partition,
            where.offset,
            key,
            reason,
            detail,
        )
        if self._producer is None:
            # PRODUCER_CONFIG tunes this producer too, but never makes it transactional.
            tuning = {
                k: v for k, v in self.broker.producer_config.items() if k != "transactional.id"
            }
            config = {**self.broker.librdkafka_config(), **tuning, **client_logging()}
            timeout_ms = 0 if math.isinf(self.patience) else int(self.patience * 1000)
            self._producer = Producer(
                {**config, "enable.idempotence": True, "message.timeout.ms": timeout_ms}
            )
        failures: list[KafkaError] = []
        kept = [(k, v) for k, v in (headers or []) if k not in ("error", "error_detail")]
        self._producer.produce(
            self.topic,
            key=key,
            value=value,
            headers=[*kept, *extra, ("error", reason.encode()), ("error_detail", detail.encode())],
            on_delivery=lambda err, msg: failures.append(err) if err else None,
        )
        deadline = Deadline(self.patience)
        waiting = self._producer.flush(1.0)
        while waiting and not failures and not deadline.passed():
            waiting = self._producer.flush(1.0)
        if waiting or failures:
            why = "; ".join(f.str() for f in failures) or f"not delivered in {self.patience:g} s"
            raise DeadLetterError(
                f"could not write to dead-letter topic {self.topic}: {why}; stopped without "
                "committing past it, start again once the broker is back"
            )
        self.counts[reason] += 1
