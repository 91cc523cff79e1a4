"""Running the Application again when the broker needs it to, as a restarted script would.

    for attempt in rejoining(settings, logger):
        with attempt:
            app = Application(...)
            ...
            app.run()

Two failures are worth another Application rather than the end of the script:

- a changelog topic that Quix Streams has just created but the broker does not
  list yet (Kafka can lag a moment): built again, for up to BROKER_TIMEOUT;
- a commit refused after a broker restart, which has forgotten the group's
  members or has no group coordinator yet: the new Application joins the group
  again from the last commit. The messages since are processed again, never
  lost; with exactly-once, Quix Streams has already aborted the transaction.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator
from types import TracebackType

from confluent_kafka import KafkaError, KafkaException
from quixstreams.checkpointing.exceptions import CheckpointConsumerCommitError
from quixstreams.models.topics.exceptions import TopicNotFoundError

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


def commit_refused_after_a_broker_restart(exc: BaseException) -> KafkaError | None:
    """The broker's error, if `exc` is a commit refused as after a broker restart. With
    exactly-once the commit is librdkafka's send_offsets_to_transaction (KafkaException)."""
    if isinstance(exc, CheckpointConsumerCommitError):
        error = exc.error
    elif isinstance(exc, KafkaException):
        error = exc.args[0]
    else:
        return None
    if isinstance(error, KafkaError) and error.code() in AFTER_A_BROKER_RESTART:
        return error
    return None


class Attempt:
    """One Application, built and run in the `with` block. It keeps the error that calls
    for another; any other error leaves the block as it came."""

    def __init__(self) -> None:
        self.error: BaseException | None = None

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
        if isinstance(exc, TopicNotFoundError) or commit_refused_after_a_broker_restart(exc):
            self.error = exc
            return True
        return False


def rejoining(settings: QuixAppSettings, logger: logging.Logger) -> Iterator[Attempt]:
    """Attempts until one ends without an error that calls for another (see above)."""
    changelog_wait = Deadline(settings.broker_timeout)
    while True:
        attempt = Attempt()
        yield attempt
        if attempt.error is None:
            return
        if isinstance(attempt.error, TopicNotFoundError):
            if changelog_wait.passed():
                raise attempt.error
            time.sleep(0.5)
            continue
        error = commit_refused_after_a_broker_restart(attempt.error)
        assert error is not None
        logger.warning(
            "A commit to the broker at %s failed (%s), as after a broker restart; "
            "joining group %s again from the last commit",
            settings.broker_address,
            error.str(),
            settings.consumer_group,
        )
