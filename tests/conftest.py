"""Shared fixtures: one real broker per test session (per worker), fresh topic names per test.

TEST_BROKER picks the broker the suite starts: `embedded` (Tansu, the default
of `make test`) or `kafka` (Apache Kafka, `make test-kafka`). With
BROKER_ADDRESS set, the suite uses that broker instead, for example Redpanda.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sensor_lib.embedded_broker import PROCESSOR_PRODUCER_CONFIG, EmbeddedBroker  # noqa: E402
from sensor_lib.kafka_broker import KafkaBroker  # noqa: E402
from sensor_lib.postgres_server import PostgresServer  # noqa: E402
from sensor_lib.servers import ServerProcess, find_free_port  # noqa: E402

BROKER_KIND = (
    "external" if os.environ.get("BROKER_ADDRESS") else os.environ.get("TEST_BROKER", "embedded")
)
# The SCRAM user the Kafka broker is formatted with (SCRAM-SHA-256 and -512).
SCRAM_USER = ("sensor-app", "correct-horse-battery-staple")
# Tests that keep both cores busy (the benchmarks under valgrind or at full speed) run
# one at a time, and the stops a test holds to 5 s run while no such test runs: on two
# cores, two of them at once left a closed terminal's demo still stopping after 5 s. A
# file lock shared by the xdist workers does it. (xdist 3.8's `--dist loadgroup` does
# not: it marks a group in item._nodeid, which pytest 9 no longer reads.)
ONE_AT_A_TIME = pytest.mark.one_at_a_time


def pytest_configure(config: pytest.Config) -> None:
    """Load what builds a per-user cache on first use, before any test runs.

    matplotlib lists the system's fonts the first time it loads, by running `fc-list`,
    and caches the list under MPLCONFIGDIR (or XDG_CACHE_HOME). Loaded inside a test,
    that first load is a subprocess in whichever test comes first, and the fast tier's
    guard refuses it; loaded here, no test depends on what an earlier run left behind.
    """
    import matplotlib.font_manager  # noqa: F401


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
    """Hold the lock for the whole of a test marked ONE_AT_A_TIME, before its other fixtures."""
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


@pytest.fixture(autouse=True)
def _a_fast_test_starts_no_process(request: pytest.FixtureRequest, monkeypatch) -> None:
    """`make test-fast` leaves out the tests marked integration; the rest must start no
    process (a broker, a database, a script), so the fast tier stays fast."""
    if request.node.get_closest_marker("integration") is None:

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError("a test that starts a process is marked integration")

        monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@dataclass(frozen=True)
class Broker:
    kind: str  # "embedded", "kafka" or "external"
    address: str
    sasl_address: str | None = None  # SASL_PLAINTEXT with SCRAM_USER, where the broker has it


def new_broker(port: int | None = None, log_path: Path | None = None) -> ServerProcess:
    """A broker of the kind under test, for tests that stop and start their own."""
    if BROKER_KIND == "kafka":
        return KafkaBroker(port, log_path=log_path)
    return EmbeddedBroker(port, log_path=log_path)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
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


def crash(broker: ServerProcess) -> None:
    """SIGKILL the broker: no clean shutdown. Its data stays for the next start()."""
    assert broker.process is not None
    broker.process.kill()
    broker.stop(keep_data=True)


@pytest.fixture
def embedded_broker(broker: Broker) -> Iterator[Broker]:
    """The embedded broker, for tests of its own quirks: the session's broker under
    `make test`, and one started for the test under `make test-kafka`."""
    if broker.kind == "embedded":
        yield broker
        return
    with EmbeddedBroker() as started:
        yield Broker("embedded", started.address)


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


@pytest.fixture
def names(request: pytest.FixtureRequest) -> TopicNames:
    return TopicNames(request.node.name)


class TopicNames:
    """Per-test topic and group names: test_<name>_<uuid>-<role>."""

    def __init__(self, test_name: str) -> None:
        clean = "".join(c if c.isalnum() else "_" for c in test_name)[:40]
        self.prefix = f"{clean}_{uuid.uuid4().hex[:8]}"
        self.raw = f"{self.prefix}-raw"
        self.agg = f"{self.prefix}-agg"
        self.dlq = f"{self.prefix}-raw-dlq"
        self.group = f"{self.prefix}-group"
        self.sink_group = f"{self.prefix}-sink"
        self.table = f"windows_{self.prefix[-8:]}"  # a table of the test's own
