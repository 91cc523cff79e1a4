"""Which failures a Quix Streams script meets with another Application (sensor_lib/rejoin.py),
and for how long."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError, KafkaException
from quixstreams.checkpointing.exceptions import CheckpointConsumerCommitError
from quixstreams.exceptions.assignment import PartitionAssignmentError
from quixstreams.internal_producer import KafkaProducerTransactionCommitFailed
from quixstreams.models.topics.exceptions import CreateTopicTimeout, TopicNotFoundError

from sensor_lib.rejoin import rejoining
from sensor_lib.settings import load_settings
from sensor_stream_processor import ProcessorSettings

logger = logging.getLogger("a_script")


@pytest.fixture(autouse=True)
def settle_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sensor_lib.rejoin.SETTLE_SECONDS", 0.2)


def kafka(code: int) -> KafkaException:
    return KafkaException(KafkaError(code))


def wrapped(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


def attempts_until_done(failures: list[BaseException], argv: list[str]) -> int:
    """How many Applications `rejoining` builds when they fail with `failures` in turn
    and the next one ends well; what it does not retry is raised."""
    settings = load_settings(ProcessorSettings, argv)
    built = 0
    for attempt in rejoining(settings, logger):
        with attempt:
            built += 1
            if built <= len(failures):
                raise failures[built - 1]
    return built


@pytest.mark.parametrize(
    "failure",
    [
        CheckpointConsumerCommitError(KafkaError(KafkaError.UNKNOWN_MEMBER_ID)),
        kafka(KafkaError.NOT_COORDINATOR),  # send_offsets_to_transaction's
        kafka(KafkaError._DESTROY_BROKER),  # a node killed under a topic check
        kafka(KafkaError.UNKNOWN_TOPIC_OR_PART),  # a topic one node does not know yet
        wrapped(
            PartitionAssignmentError("Error during partition assignment"),
            kafka(KafkaError.NOT_LEADER_FOR_PARTITION),
        ),
        wrapped(
            KafkaProducerTransactionCommitFailed("All Kafka commit_transaction attempts failed"),
            kafka(KafkaError._TIMED_OUT),
        ),
        CreateTopicTimeout("Timed out waiting for creation status for topics:\n['t']"),
        TopicNotFoundError("changelog__g--raw--store"),
    ],
    ids=[
        "commit-refused",
        "transaction-commit-refused",
        "broker-destroyed",
        "topic-unknown-to-a-node",
        "leader-moved-while-assigning",
        "transaction-timed-out",
        "topic-creation-timed-out",
        "changelog-not-listed-yet",
    ],
)
def test_a_failure_while_the_cluster_settles_builds_another_application(
    failure: BaseException,
) -> None:
    assert attempts_until_done([failure], []) == 2


@pytest.mark.parametrize(
    "failure",
    [
        ValueError("a bug"),
        kafka(KafkaError.TOPIC_AUTHORIZATION_FAILED),
        kafka(KafkaError._FENCED),  # another instance has this transactional.id
        wrapped(
            PartitionAssignmentError("Error during partition assignment"),
            kafka(KafkaError._DESTROY),  # the script was stopped
        ),
    ],
    ids=["bug", "not-allowed", "fenced", "stopped-while-assigning"],
)
def test_any_other_failure_ends_the_run_as_it_came(failure: BaseException) -> None:
    with pytest.raises(type(failure)) as raised:
        attempts_until_done([failure], [])
    assert raised.value is failure


def test_a_lost_broker_is_retried_only_for_broker_outage_timeout() -> None:
    lost = [kafka(KafkaError._TRANSPORT), kafka(KafkaError._TRANSPORT)]
    assert attempts_until_done(lost, ["--broker-outage-timeout", "5"]) == 3
    with pytest.raises(KafkaException) as raised:  # 0.2 s between attempts
        attempts_until_done(lost, ["--broker-outage-timeout", "0.1"])
    assert raised.value is lost[1]  # the first failure was retried, once
