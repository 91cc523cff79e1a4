"""Running the Application again when the broker needs it to, as a restarted script would.

    for attempt in rejoining(settings, logger):
        with attempt:
            app = Application(...)
            ...
            app.run()

Some failures are worth another Application rather than the end of the script:

- a commit refused after a broker restart, which has forgotten the group's members
  or has no group coordinator yet: the new Application joins the group again from
  the last commit. The messages since are processed again, never lost;
- a broker of a cluster lost while the Application starts, assigns partitions or
  ends a transaction (a request cut off, a leader or controller moving, a topic
  just made that one node does not know yet): tried again until the cluster has
  settled, for up to BROKER_OUTAGE_TIMEOUT;
- a changelog topic that Quix Streams has just created but the broker does not
  list yet (Kafka can lag a moment): built again, for up to BROKER_TIMEOUT.

With exactly-once, the new Application's producer has the same transactional.id:
starting, it fences the old one and the broker aborts what that left open.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator
from types import TracebackType

from confluent_kafka import KafkaError, KafkaException
from quixstreams.checkpointing.exceptions import CheckpointConsumerCommitError
from quixstreams.models.topics.exceptions import CreateTopicTimeout, TopicNotFoundError

from sensor_lib.polling import Deadline
from sensor_lib.settings import QuixAppSettings

# How a commit fails once the broker has restarted: it has forgotten the group's members,
# or the group's coordinator is not back yet.
AFTER_A_BROKER_RESTART = (
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError._WAIT_COORD,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
)

# How a request fails while a node of the cluster is lost: cut off, timed out, or sent
# to a node that no longer leads, controls or knows the topic yet.
WHILE_A_BROKER_IS_LOST = (
    KafkaError._DESTROY_BROKER,
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_CONTROLLER,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
)

SETTLE_SECONDS = 1.0  # between a failed attempt and the next


def kafka_error(exc: BaseException | None) -> KafkaError | None:
    """The broker's error behind `exc`, through Quix Streams' wrappers (their causes)."""
    while exc is not None:
        if isinstance(exc, CheckpointConsumerCommitError):
            return exc.error
        if isinstance(exc, KafkaException) and isinstance(exc.args[0], KafkaError):
            return exc.args[0]
        exc = exc.__cause__
    return None


def commit_refused_after_a_broker_restart(exc: BaseException | None) -> KafkaError | None:
    """The broker's error, if `exc` is a commit refused as after a broker restart. With
    exactly-once the commit is librdkafka's send_offsets_to_transaction."""
    error = kafka_error(exc)
    return error if error is not None and error.code() in AFTER_A_BROKER_RESTART else None


def broker_lost(exc: BaseException | None) -> str | None:
    """What went wrong, if `exc` is a request that failed as while a broker is lost."""
    if isinstance(exc, CreateTopicTimeout):
        return str(exc).splitlines()[0]
    error = kafka_error(exc)
    if error is not None and error.code() in WHILE_A_BROKER_IS_LOST:
        return error.str()
    return None


class Attempt:
    """One Application, built and run in the `with` block. It keeps the error that calls
    for another; any other error leaves the block as it came."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.started = time.monotonic()

    def __enter__(self) -> Attempt:
        # The libraries' objects live as long as the process: keep the garbage collector
        # from scanning them again and again while messages stream through.
        gc.freeze()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if (
            isinstance(exc, TopicNotFoundError)
            or commit_refused_after_a_broker_restart(exc)
            or broker_lost(exc)
        ):
            self.error = exc
            return True
        return False

    def lasted(self) -> float:
        return time.monotonic() - self.started


def rejoining(settings: QuixAppSettings, logger: logging.Logger) -> Iterator[Attempt]:
    """Attempts until one ends without an error that calls for another (see above)."""
    changelog_wait = Deadline(settings.broker_timeout)
    outage: Deadline | None = None  # since the first of the attempts a lost broker ended
    while True:
        attempt = Attempt()
        yield attempt
        error = attempt.error
        if error is None:
            return
        if isinstance(error, TopicNotFoundError):
            if changelog_wait.passed():
                raise error
            time.sleep(SETTLE_SECONDS / 2)
        elif refused := commit_refused_after_a_broker_restart(error):
            logger.warning(
                "A commit to the broker at %s failed (%s), as after a broker restart; "
                "joining group %s again from the last commit",
                settings.broker_address,
                refused.str(),
                settings.consumer_group,
            )
        else:
            # An attempt that ran longer than the outage may last met a new outage.
            if outage is None or attempt.lasted() > outage.seconds:
                outage = Deadline(settings.broker_outage_timeout or float("inf"))
            if outage.passed():
                raise error
            logger.warning(
                "A request to the broker at %s failed (%s), as while a broker is lost; "
                "starting again from the last commit once the cluster answers",
                settings.broker_address,
                broker_lost(error),
            )
            time.sleep(SETTLE_SECONDS)
