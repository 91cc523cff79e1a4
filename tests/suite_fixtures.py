"""The suite's fixtures, a pytest plugin that conftest.py registers (pytest has a plugin
of its own named `fixtures`).

- Brokers: one real broker per test session (per xdist worker), and brokers of a test's
  own to stop, crash or restart. TEST_BROKER picks the kind: `embedded` (Tansu, the
  default of `make test`) or `kafka` (Apache Kafka, `make test-kafka`). With
  BROKER_ADDRESS set, the suite uses that broker instead, for example Redpanda.
- Databases: a PostgreSQL server per worker, and servers of a test's own.
- Topics: each test's own topic and group names (`names`).
- Scripts: a factory per script (`start_producer`, `start_processor`, `start_sink`,
  `start_viewer`) that starts it as a user would, on the session's broker and the
  given names, and returns its `Script`.
- The one-at-a-time lock, for the tests that keep both cores busy and the stops a test
  holds to 5 s.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from helpers import SCRAM_USER, Broker, Script, TopicNames
from sensor_lib.embedded_broker import PROCESSOR_PRODUCER_CONFIG, EmbeddedBroker
from sensor_lib.kafka_broker import KafkaBroker
from sensor_lib.postgres_server import PostgresServer
from sensor_lib.servers import ServerProcess, find_free_port

BROKER_KIND = (
    "external" if os.environ.get("BROKER_ADDRESS") else os.environ.get("TEST_BROKER", "embedded")
)


# --- One at a time ------------------------------------------------------------------
# A test marked one_at_a_time never runs beside another such test, and the stops a test
# holds to 5 s run while none of them runs: on two cores, two such tests at once can
# slow a stop past its bound. The lock is a file that every xdist worker shares.


@contextmanager
def holding_the_lock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The file lock every xdist worker of this session shares."""
    # Every worker's base temp is a folder of the session's one (pytest-N/popen-gwK).
    shared = tmp_path_factory.getbasetemp()
    shared = shared.parent if os.environ.get("PYTEST_XDIST_WORKER") else shared
    with open(shared / "one-at-a-time.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture(autouse=True)
def _one_at_a_time(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[None]:
    """Hold the lock for the whole of a test marked one_at_a_time, before its other fixtures."""
    if request.node.get_closest_marker("one_at_a_time") is None:
        yield
        return
    with holding_the_lock(tmp_path_factory):
        yield


@pytest.fixture
def one_at_a_time(tmp_path_factory) -> Callable[[], AbstractContextManager[None]]:
    """The same lock, for a test to hold around its timing-critical part only (a stop
    that must end within 5 s), so the rest of it runs beside other tests."""
    return lambda: holding_the_lock(tmp_path_factory)


# --- Brokers ------------------------------------------------------------------------


def new_broker(port: int | None = None, log_path: Path | None = None) -> ServerProcess:
    """A broker of the kind under test, for tests that stop and start their own."""
    if BROKER_KIND == "kafka":
        return KafkaBroker(port, log_path=log_path)
    return EmbeddedBroker(port, log_path=log_path)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    # The test data's event times are fixed days in the past, and aggregates carry them
    # as their timestamps: a topic with time retention drops them at its next check. So
    # every topic the scripts and the helpers create keeps its messages.
    os.environ.setdefault("RETENTION_HOURS", "-1")
    if address := os.environ.get("BROKER_ADDRESS"):
        yield Broker("external", address)
        return
    log_path = tmp_path_factory.mktemp("broker") / "broker.log"
    if BROKER_KIND == "kafka":
        kafka = KafkaBroker(sasl_port=find_free_port(), scram_users=[SCRAM_USER], log_path=log_path)
        with kafka:
            yield Broker("kafka", kafka.address, kafka.sasl_address)
        return
    # Only the embedded broker needs this (its high-watermark quirk; see README).
    # The test helpers decide it, never the scripts.
    os.environ.setdefault("PRODUCER_CONFIG", PROCESSOR_PRODUCER_CONFIG)
    with EmbeddedBroker(log_path=log_path) as embedded:
        yield Broker("embedded", embedded.address)


@pytest.fixture(scope="session")
def broker_address(broker: Broker) -> str:
    return broker.address


@pytest.fixture
def start_broker() -> Callable[..., ServerProcess]:
    """A broker of the kind under test, of the test's own: start_broker(port)."""
    return new_broker


@pytest.fixture
def broker_to_crash() -> Iterator[ServerProcess]:
    """An Apache Kafka broker of the test's own, to crash() and start again on its data.
    The embedded broker comes back from a restart empty, with nothing to go on with, so a
    test that asks for this is skipped under `make test` and runs under `make test-kafka`."""
    if BROKER_KIND != "kafka":
        pytest.skip(
            "the embedded broker comes back from a restart empty, and librdkafka 2.12.1 may "
            "crash on its new metadata (confluentinc/librdkafka#5280); this test runs under "
            "`make test-kafka`"
        )
    with KafkaBroker() as started:
        yield started


@pytest.fixture
def embedded_broker(broker: Broker) -> Iterator[Broker]:
    """The embedded broker, for tests of its own quirks: the session's broker under
    `make test`, and one started for the test under `make test-kafka`."""
    if broker.kind == "embedded":
        yield broker
        return
    with EmbeddedBroker() as started:
        yield Broker("embedded", started.address)


# --- Databases ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server of this worker's own (the pgserver wheel's), on a free port."""
    folder = Path(tempfile.mkdtemp(prefix="sensor-test-pg-"))
    with PostgresServer(folder, durable=False) as server:
        yield server.url


@pytest.fixture
def start_postgres() -> Iterator[Callable[[], PostgresServer]]:
    """Start a PostgreSQL server of the test's own, to stop and start again; stopped after."""
    started: list[PostgresServer] = []

    def start() -> PostgresServer:
        started.append(PostgresServer(Path(tempfile.mkdtemp(prefix="sensor-test-pg-"))))
        return started[-1].start()

    yield start
    for server in started:
        server.stop()


# --- Topics -------------------------------------------------------------------------


@pytest.fixture
def names(request: pytest.FixtureRequest) -> TopicNames:
    """The test's own topic, group and table names."""
    return TopicNames(request.node.name)


# --- Scripts ------------------------------------------------------------------------
# Each factory starts its script with the flags that tie it to the broker and to the
# names given, then the test's own flags (a flag given twice: the last one counts).
# They are session-scoped, so that a module's fixture can run the pipeline once.


@pytest.fixture(scope="session")
def scripts_started() -> Iterator[list[Script]]:
    """Every script a factory started; any still running at the end is killed."""
    started: list[Script] = []
    yield started
    for script in started:
        script.__exit__()


@pytest.fixture(scope="session")
def start_producer(broker: Broker, scripts_started: list[Script]) -> Callable[..., Script]:
    def start(
        names: TopicNames,
        *flags: str,
        address: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Script:
        """sensor_stream_producer.py writing to names.raw."""
        connection = ["--broker-address", address or broker.address, "--raw-topic", names.raw]
        scripts_started.append(Script("sensor_stream_producer.py", *connection, *flags, env=env))
        return scripts_started[-1]

    return start


@pytest.fixture(scope="session")
def start_processor(
    broker: Broker, tmp_path_factory: pytest.TempPathFactory, scripts_started: list[Script]
) -> Callable[..., Script]:
    def start(
        names: TopicNames,
        *flags: str,
        address: str | None = None,
        state_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Script:
        """sensor_stream_processor.py from names.raw to names.agg in group names.group,
        committing every second; its window state in `state_dir` (a new folder by default)."""
        state_dir = state_dir or tmp_path_factory.mktemp("state")
        connection = ["--broker-address", address or broker.address, "--raw-topic", names.raw]
        connection += ["--agg-topic", names.agg, "--consumer-group", names.group]
        connection += ["--state-dir", str(state_dir), "--commit-interval", "1"]
        scripts_started.append(Script("sensor_stream_processor.py", *connection, *flags, env=env))
        return scripts_started[-1]

    return start


@pytest.fixture(scope="session")
def start_sink(
    broker: Broker, postgres_url: str, scripts_started: list[Script]
) -> Callable[..., Script]:
    def start(
        names: TopicNames,
        *flags: str,
        address: str | None = None,
        database: str | None = None,
    ) -> Script:
        """sensor_stream_sink.py from names.agg into the table names.table of the worker's
        database (or the one at the URL `database`), in group names.sink_group, committing
        every second."""
        url = database or postgres_url
        connection = ["--broker-address", address or broker.address, "--agg-topic", names.agg]
        connection += ["--consumer-group", names.sink_group, "--sink-table", names.table]
        connection += ["--commit-interval", "1"]
        env = {"POSTGRES_URL": url}  # a flag would show the password in `ps`
        scripts_started.append(Script("sensor_stream_sink.py", *connection, *flags, env=env))
        return scripts_started[-1]

    return start


@pytest.fixture(scope="session")
def start_viewer(broker: Broker, scripts_started: list[Script]) -> Callable[..., Script]:
    def start(names: TopicNames, *flags: str, address: str | None = None) -> Script:
        """sensor_stream_viewer.py showing names.agg. Its output is a file, so it prints
        plain lines."""
        connection = ["--broker-address", address or broker.address, "--agg-topic", names.agg]
        scripts_started.append(Script("sensor_stream_viewer.py", *connection, *flags))
        return scripts_started[-1]

    return start
