"""Running a Quix Streams Application for real: checks first, restarts, one line per failure.

The processor and the sink hand `run()` a function that adds their dataframe to an
Application. Around it, this module:

- checks what can fail before Quix Streams starts, each with one line: the state
  folder, the broker, the topics, saved state that belongs to another broker;
- rebuilds the Application where the broker needs a moment (a changelog topic it
  has just created) or has forgotten the group after a restart;
- turns the failures we know into one ERROR line and exit status 1.
"""

from __future__ import annotations

import gc
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from prometheus_client import Histogram
from prometheus_client.core import Metric
from quixstreams import Application
from quixstreams.checkpointing.exceptions import CheckpointConsumerCommitError
from quixstreams.error_callbacks import default_on_processing_error
from quixstreams.kafka.exceptions import KafkaBrokerUnavailableError, KafkaConsumerException
from quixstreams.models.topics.exceptions import TopicConfigurationMismatch, TopicNotFoundError
from quixstreams.state.exceptions import InvalidChangelogOffset, InvalidStoreChangelogOffset
from quixstreams.state.rocksdb import RocksDBOptions

from sensor_lib.dead_letters import DeadLetterError
from sensor_lib.embedded_broker import PROCESSOR_PRODUCER_CONFIG
from sensor_lib.kafka_io import BrokerOutageLog, silent_logger, start_up
from sensor_lib.metrics import ConsumerLag, serve
from sensor_lib.settings import QuixAppSettings, configure_logging

# A 6 s session keeps group joins and failover quick on any broker. A fetch waits at
# most 50 ms: some brokers (the embedded one) hold it that long even when messages
# are there, and librdkafka's default 500 ms would then be most of a window's latency.
CONSUMER_DEFAULTS = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1500,
    "fetch.wait.max.ms": 50,
}

# The window store serializes its state on every read and write. Quix Streams' default
# wraps orjson in a Python function; orjson's own functions write the same bytes for
# the numbers a window holds, without that call per reading.
STATE_OPTIONS = RocksDBOptions(dumps=orjson.dumps, loads=orjson.loads)

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


class CannotRun(RuntimeError):
    """The script cannot start or go on; the message says why and what to do."""


def run(
    settings: QuixAppSettings,
    build: Callable[[Application], object],
    logger: logging.Logger,
    *,
    topics: Sequence[str],
    source: str,
    announce: str,
    summary: Callable[[], str],
    stateful: bool = True,
    checks: Sequence[Callable[[], None]] = (),
    metrics: Callable[[ConsumerLag], Callable[[], Iterable[Metric]]] | None = None,
    histograms: Sequence[Histogram] = (),
) -> int:
    """A Quix Streams script's main(): check, then run the Application until it is stopped,
    logging to the script's `logger`.

    `build` adds the dataframe to an Application; `topics` are created if missing
    (kafka_io.start_up), `source` is the one the dataframe reads. A `stateful` dataframe
    keeps state under STATE_DIR, which is checked. `checks` run once the broker answers.
    `summary` is logged every SUMMARY_INTERVAL and at the end. With METRICS_PORT set,
    /metrics serves what `metrics(lag)` collects, and `histograms`. Returns the exit status.
    """
    configure_logging(settings.log_level, BrokerOutageLog(settings.broker_address))
    lag = ConsumerLag()
    if metrics is not None:
        serve(settings, logger, metrics(lag), *histograms)
    consumer_extra = lag.config() if settings.metrics_port else {}
    started = False
    try:
        if stateful:
            check_state_dir(settings)
        stop = start_up(settings, logger, "processing began", topics, log_level=None)
        with stop.interrupting():  # until Quix Streams installs its own
            if stateful:
                check_saved_state_matches_broker(settings, source)
            for check in checks:
                check()
            logger.info("%s", announce)
            started = True
            with periodic_summary(summary, settings.summary_interval, logger):
                run_application(settings, build, consumer_extra, logger)
    except KeyboardInterrupt:  # Ctrl-C before Quix Streams ran, or a second one as it stopped
        logger.info("Stopped" if started else "Stopped before processing began")
    except CannotRun as exc:
        logger.error("%s", exc)
        return 1
    except Exception as exc:
        if (line := explain(exc, settings, source)) is None:
            raise  # not a failure we know: the traceback is the best report
        logger.error("%s", line)
        return 1
    return 0


def application(settings: QuixAppSettings, consumer_extra: dict[str, Any]) -> Application:
    """An Application with the script's settings, and errors reported by `run()`."""
    return Application(
        broker_address=settings.connection(),
        consumer_group=settings.consumer_group,
        auto_offset_reset=settings.auto_offset_reset,
        state_dir=settings.state_dir,
        rocksdb_options=STATE_OPTIONS,
        processing_guarantee=settings.processing_guarantee,
        commit_interval=settings.commit_interval,
        on_consumer_error=stop_on_consumer_error,
        on_processing_error=stop_on_processing_error,
        consumer_extra_config={**CONSUMER_DEFAULTS, **settings.consumer_config, **consumer_extra},
        producer_extra_config=settings.producer_config,
        broker_availability_timeout=settings.broker_outage_timeout,
        loglevel=None,  # use our log format
    )


def build_application(
    settings: QuixAppSettings,
    build: Callable[[Application], object],
    consumer_extra: dict[str, Any],
) -> Application:
    """The Application with its dataframe, built again while the broker does not yet list
    the changelog topic Quix Streams has just created (Kafka can lag a moment)."""
    deadline = time.monotonic() + settings.broker_timeout
    while True:
        app = application(settings, consumer_extra)
        try:
            build(app)
            return app
        except TopicNotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def run_application(
    settings: QuixAppSettings,
    build: Callable[[Application], object],
    consumer_extra: dict[str, Any],
    logger: logging.Logger,
) -> None:
    """Run the Application until it stops. After a broker restart the next commit can
    fail: join the group again from the last commit, as a restarted script would (the
    messages since are processed again, never lost; with exactly-once, Quix Streams has
    aborted the transaction)."""
    while True:
        app = build_application(settings, build, consumer_extra)
        # The libraries' objects live as long as the process: keep the garbage collector
        # from scanning them again and again while messages stream through.
        gc.freeze()
        try:
            return app.run()
        except (CheckpointConsumerCommitError, KafkaException) as exc:  # exactly-once: the latter
            error = exc.error if isinstance(exc, CheckpointConsumerCommitError) else exc.args[0]
            if not isinstance(error, KafkaError) or error.code() not in AFTER_A_BROKER_RESTART:
                raise
            logger.warning(
                "A commit to the broker at %s failed (%s), as after a broker restart; "
                "joining group %s again from the last commit",
                settings.broker_address, error.str(), settings.consumer_group,
            )  # fmt: skip


def summary_line(dead_letters: Mapping[str, int], **counts: int) -> str:
    """`processed=10, windows emitted=2, dead-lettered late=1`: what a summary line says."""
    dead = {f"dead-lettered {why}": n for why, n in sorted(dead_letters.items())}
    return ", ".join(f"{name.replace('_', ' ')}={n}" for name, n in {**counts, **dead}.items())


@contextmanager
def periodic_summary(
    summary: Callable[[], str], interval: float, logger: logging.Logger
) -> Iterator[None]:
    """Log `summary()` every `interval` seconds while the body runs, and once at the end."""
    stop = threading.Event()

    def log_every_interval() -> None:
        while not stop.wait(interval):
            logger.info("Summary: %s", summary())

    thread = threading.Thread(target=log_every_interval, name="summary", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        logger.info("Final summary: %s", summary())


# --- Checks before Quix Streams starts ------------------------------------------------


def check_state_dir(settings: QuixAppSettings) -> None:
    """Fail now, in one line, if the state cannot be written under STATE_DIR."""
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=settings.state_dir).close()
    except OSError as exc:
        raise CannotRun(
            f"cannot write window state under STATE_DIR {settings.state_dir} "
            f"({exc.strerror or exc}); set STATE_DIR or --state-dir to a writable directory"
        ) from None


def check_saved_state_matches_broker(settings: QuixAppSettings, source: str) -> None:
    """Refuse saved state whose changelog topic the broker does not have.

    That state belongs to a broker that was restarted empty (the embedded broker
    keeps nothing), or to a changelog topic someone deleted. Restored, it would
    judge new readings against old clocks. Quix Streams keeps a store at
    <state dir>/<group>/<store>/<topic>/<partition>, with the changelog
    changelog__<group>--<topic>--<store>.
    """
    group_dir = settings.group_state_dir
    stores = sorted(group_dir.iterdir()) if group_dir.is_dir() else []
    saved = [s.name for s in stores if (s / source).is_dir() and any((s / source).iterdir())]
    if not saved:
        return
    try:
        admin = AdminClient({**settings.librdkafka_config(), "logger": silent_logger()})
        topics = admin.list_topics(timeout=settings.broker_timeout).topics
    except KafkaException as exc:  # the broker went away since it answered
        raise CannotRun(
            f"could not list the topics at {settings.broker_address}: {exc.args[0].str()}"
        ) from None
    for store in saved:
        if (changelog := f"changelog__{settings.consumer_group}--{source}--{store}") not in topics:
            raise CannotRun(
                f"the window state in {group_dir} belongs to changelog topic {changelog}, "
                f"which the broker at {settings.broker_address} does not have (it was restarted "
                f"empty, or the topic was deleted); remove {group_dir} and start again"
            )


# --- When things go wrong: one line saying what happened and what to do ----------------


def stop_on_consumer_error(exc: Exception, message: Any, quix_logger: logging.Logger) -> bool:
    """Stop the app (a bad message never raises: this is the broker or the state),
    without Quix Streams' traceback: explain() says what it knows in one line."""
    return False


def stop_on_processing_error(exc: Exception, row: Any, quix_logger: logging.Logger) -> bool:
    """Stop the app; a dead letter that could not be written without Quix Streams'
    traceback (explain() says it), anything else with Quix Streams' report."""
    if isinstance(exc, DeadLetterError):
        return False
    return default_on_processing_error(exc, row, quix_logger)


def explain(exc: Exception, settings: QuixAppSettings, source: str) -> str | None:
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
    if isinstance(exc, DeadLetterError):
        return f"{exc}; stopped without committing past it, start again once the broker is back"
    return None
