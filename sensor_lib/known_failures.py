"""Quix Streams' failures that we know, each turned into one line that says what to do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka import KafkaError, KafkaException
from quixstreams.exceptions.assignment import PartitionAssignmentError
from quixstreams.kafka.exceptions import KafkaBrokerUnavailableError, KafkaConsumerException
from quixstreams.models.topics.exceptions import TopicConfigurationMismatch
from quixstreams.state.exceptions import InvalidChangelogOffset, InvalidStoreChangelogOffset

from sensor_lib.embedded_broker import PROCESSOR_PRODUCER_CONFIG
from sensor_lib.errors import CannotRun
from sensor_lib.settings import QuixAppSettings


@contextmanager
def explained(settings: QuixAppSettings, source: str) -> Iterator[None]:
    """Raise a failure we know from the body as CannotRun with its one line; any other
    error goes on unchanged, to keep its traceback."""
    try:
        yield
    except PartitionAssignmentError as exc:
        if not stopped_while_joining(exc):
            raise
        # A stop signal that came while the group assigned partitions: Quix Streams closed
        # the consumer under the assignment. It is the stop, and no error.
        raise KeyboardInterrupt from None
    except Exception as exc:
        if (line := explain(exc, settings, source)) is None:
            raise
        raise CannotRun(line) from None


def stopped_while_joining(exc: PartitionAssignmentError) -> bool:
    cause = exc.__cause__
    return isinstance(cause, KafkaException) and cause.args[0].code() == KafkaError._DESTROY


def explain(exc: BaseException, settings: QuixAppSettings, source: str) -> str | None:
    """One line for the failures we know, else None (a traceback is the better report)."""
    state, at = settings.group_state_dir, settings.broker_address
    if isinstance(exc, InvalidStoreChangelogOffset | InvalidChangelogOffset):
        return (
            f"the window state in {state} is ahead of its changelog topic at {at} "
            f"({type(exc).__name__}), so it cannot be restored: remove {state} and start again. "
            "On the embedded broker (make broker) its high-watermark quirk causes this: run "
            f"the processor there with PRODUCER_CONFIG='{PROCESSOR_PRODUCER_CONFIG}'"
        )
    if isinstance(exc, KeyError) and exc.args[:1] == ("retention.ms",):
        return (
            f"topic {source} at {at} has no retention.ms setting, which Quix "
            "Streams needs for the changelog topic: another client created it without "
            "settings (the embedded broker creates any topic a client asks about). Delete the "
            "topic, or restart the embedded broker, and let the processor or producer create it"
        )
    if isinstance(exc, TopicConfigurationMismatch):
        return (
            f"topic {source} does not have as many partitions as this consumer "
            f"group's window state ({exc}); the topic was re-created with another partition "
            f"count. Start with a new CONSUMER_GROUP, or delete that changelog topic and "
            f"remove {state}"
        )
    if isinstance(exc, KafkaBrokerUnavailableError):
        return (
            f"the broker at {at} has been unreachable for more than "
            f"{settings.broker_outage_timeout:g} s (BROKER_OUTAGE_TIMEOUT); start again "
            "once it is back: it resumes from its last commit"
        )
    if isinstance(exc, KafkaConsumerException) and exc.code == KafkaError.UNKNOWN_TOPIC_OR_PART:
        return (
            f"a topic this script uses is gone from the broker at {at} ({exc.description}); "
            f"if the broker was restarted empty, remove {state} and start again"
        )
    return None
