"""Log lines: one readable line per event in UTC, and one line, not a flood, per outage.

librdkafka logs every failed connection attempt of every client while a broker is
away. `BrokerOutageLog` turns the first into one WARNING naming the address and
drops the rest until the clients have been quiet for a while; `silent_logger`
serves the clients whose failure the caller reports itself.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

# librdkafka logs through this logger in our own clients (see client_logging).
CLIENT_LOGGER = "librdkafka"
_LOST_BROKER = re.compile(r"Connect to \S+ failed|Connection refused|[1-9]\d*/\d+ brokers are down")
# librdkafka counts the brokers again as it words its all-brokers-down event, so one
# that came back in between makes it "0/1 brokers are down": the outage is over.
_OUTAGE_OVER = re.compile(r"\b0/\d+ brokers are down")
# A broker that has just started answers "load in progress" for a moment; the client retries.
_RETRYING = re.compile(r"load in progress: retrying")
# librdkafka logs a failure it has already logged once more every 30 s ("N identical
# error(s) suppressed"), so an outage is over only after a longer quiet than that.
OUTAGE_QUIET_SECONDS = 60.0


def configure_logging(level: str = "INFO", log_filter: logging.Filter | None = None) -> None:
    """One readable line per event, stamped in UTC whatever the host's time zone."""
    # The format shows no caller, thread or process, so skip collecting them for each
    # record, as the logging HOWTO's "Optimization" section shows: the processor logs
    # a line per window, and windows close in bursts.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    formatter = logging.Formatter(
        "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    if log_filter is not None:
        handler.addFilter(log_filter)
    logging.basicConfig(level=level, handlers=[handler], force=True)


def client_logging() -> dict[str, Any]:
    """librdkafka settings that send a client's logs through Python logging (and the filter)."""
    return {"logger": logging.getLogger(CLIENT_LOGGER)}


def silent_logger() -> logging.Logger:
    """For a client whose failure the caller reports in its own one line."""
    logger = logging.getLogger("sensor_lib.logs.silent")
    if logger.propagate:  # the first time only
        logger.propagate = False
        logger.addHandler(logging.NullHandler())
    return logger


class BrokerOutageLog(logging.Filter):
    """One WARNING when the broker becomes unreachable, instead of the clients' flood.

    While the broker is away, every Kafka client here (Quix Streams' consumer and
    producer, our own) logs each failed connection attempt. The first becomes one
    line naming the address; the clients' logs that follow are dropped until they
    have been quiet for `quiet_seconds`. Quix's "connectivity restored" passes.
    """

    def __init__(self, address: str, quiet_seconds: float = OUTAGE_QUIET_SECONDS) -> None:
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
