"""The outage log (sensor_lib/logs.py): one line per broker outage, however librdkafka
words it and however long it lasts."""

from __future__ import annotations

import logging
import time

import pytest

from sensor_lib.logs import OUTAGE_QUIET_SECONDS, BrokerOutageLog

LOST = ("WARNING", "Lost the broker at 127.0.0.1:9092; retrying until it is back")
REFUSED = "Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0 ms"


def shown_by(
    outage: BrokerOutageLog,
    logger: str,
    lines: list[tuple[float, int, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> list[tuple[str, str]]:
    """The lines, each logged `at` seconds in, that the outage log lets through."""
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    shown = []
    for at, level, text in lines:
        now[0] = 1000.0 + at
        record = logging.LogRecord(logger, level, "", 0, text, (), None)
        if outage.filter(record):
            shown.append((record.levelname, record.getMessage()))
    return shown


def test_an_all_brokers_down_that_counts_none_down_is_not_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # librdkafka words the event after counting again, so a broker that is back in
    # between gives "0/1 brokers are down": no outage, nothing to warn about.
    lines = [
        (0.0, logging.ERROR, 'Kafka consumer error: 1/1 brokers are down code="-187"'),
        (0.0, logging.ERROR, 'Kafka consumer error: 0/1 brokers are down code="-187"'),
        (0.0, logging.INFO, "Kafka consumer broker connectivity restored after 21.3s."),
    ]
    outage = BrokerOutageLog("127.0.0.1:9092", quiet_seconds=0)
    assert shown_by(outage, "quixstreams.kafka.consumer", lines, monkeypatch) == [
        LOST,
        ("INFO", "Kafka consumer broker connectivity restored after 21.3s."),
    ]


def test_an_outage_longer_than_librdkafkas_30_s_repeat_is_still_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # librdkafka logs a broker's failure again each 30 s while it lasts, with a count of
    # the attempts it did not log; each repeat comes a little after the 30 s.
    again = 75.0 + OUTAGE_QUIET_SECONDS + 1  # a second outage, after the quiet
    lines = [
        (0.0, logging.ERROR, "1/1 brokers are down"),
        (30.3, logging.ERROR, f"{REFUSED}, 3 identical error(s) suppressed)"),
        (60.7, logging.ERROR, f"{REFUSED}, 3 identical error(s) suppressed)"),
        (75.0, logging.INFO, "Kafka producer broker connectivity restored after 75.0s."),
        (again, logging.ERROR, f"{REFUSED})"),
    ]
    assert shown_by(BrokerOutageLog("127.0.0.1:9092"), "librdkafka", lines, monkeypatch) == [
        LOST,
        ("INFO", "Kafka producer broker connectivity restored after 75.0s."),
        LOST,
    ]
