"""The one exit policy (sensor_lib/errors.py): each outcome of a script's main, its
exit status and the one line it leaves."""

from __future__ import annotations

import logging
import sys

import pytest
from confluent_kafka import KafkaError, KafkaException
from quixstreams.exceptions.assignment import PartitionAssignmentError

from sensor_lib.errors import CannotRun, StoppedEarly, UsageError, exit_status
from sensor_lib.known_failures import explained
from sensor_lib.settings import load_settings
from sensor_stream_processor import ProcessorSettings

logger = logging.getLogger("a_script")


def ends_with(error: BaseException) -> None:
    raise error


def test_a_usage_error_is_one_line_on_stderr_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["/somewhere/sensor_stream_producer.py", "--rate", "x"])
    assert exit_status(lambda: ends_with(UsageError("--rate (RATE): not a number")), logger) == 2
    assert capsys.readouterr().err == (
        "sensor_stream_producer.py: error: --rate (RATE): not a number\n"
    )


@pytest.mark.parametrize(
    ("outcome", "status", "record"),
    [
        (lambda: None, 0, None),
        (lambda: 3, 3, None),
        (
            lambda: ends_with(CannotRun("no broker at here:1; start one")),
            1,
            ("ERROR", "no broker at here:1; start one"),
        ),
        (
            lambda: ends_with(StoppedEarly("Stopped before producing anything")),
            0,
            ("INFO", "Stopped before producing anything"),
        ),
        (lambda: ends_with(KeyboardInterrupt()), 0, ("INFO", "Stopped")),
    ],
    ids=["done", "own-status", "cannot-run", "stopped-early", "stopped"],
)
def test_each_outcome_has_its_exit_status_and_one_line(
    outcome, status: int, record: tuple[str, str] | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="a_script"):
        assert exit_status(outcome, logger) == status
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == ([record] if record else [])


def test_an_unknown_error_keeps_its_traceback() -> None:
    with pytest.raises(ZeroDivisionError):
        exit_status(lambda: 1 / 0, logger)


def test_a_stop_while_the_group_assigns_partitions_is_a_stop_not_an_error() -> None:
    settings = load_settings(ProcessorSettings, [])
    stopped = PartitionAssignmentError("Error during partition assignment")
    stopped.__cause__ = KafkaException(KafkaError(KafkaError._DESTROY))
    with pytest.raises(KeyboardInterrupt), explained(settings, "raw"):
        raise stopped
    failed = PartitionAssignmentError("Error during partition assignment")
    failed.__cause__ = KafkaException(KafkaError(KafkaError._TRANSPORT))
    with pytest.raises(PartitionAssignmentError), explained(settings, "raw"):
        raise failed
