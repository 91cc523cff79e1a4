"""Losing brokers on a three-node Apache Kafka cluster: no acknowledged reading is lost, no
window is wrong, and the pipeline recovers within a stated bound.

One cluster serves the module (KafkaCluster, what `make kafka BROKERS=3` runs). Its faults
hit every client, so `make test-cluster` runs these tests one at a time in one process.
Each run starts the pipeline as a user would, with the default replication (3 replicas,
2 in sync): the producer at a live rate, two processors in one group (each with its own
state folder and instance id), and the sink into PostgreSQL. It brings its faults
mid-stream, stops the producer, and then checks:

- every acknowledged reading is on the raw topic exactly once (the producer's
  "Delivered N", and the readings' uuid headers);
- every window on the aggregate topic, and every row of the table, equals the
  reference model's from the readings on the raw topic. At-least-once may repeat a
  window, but only with the same values; exactly-once shows a read_committed reader
  no window twice;
- recovery: the first window that started after a fault is seen within
  RECOVERY_BOUND seconds of it. The measured times are printed with each test.

A run takes minutes, so two runs carry most cases, each case a test of its own on the
run's outcome: at-least-once (killed leaders, a pause, a rolling restart, a node left
down) and exactly-once (the transaction coordinator and leaders killed). Two nodes down,
the negative control, is a run of its own.
"""

from __future__ import annotations

import json
import re
import signal
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from helpers import (
    Record,
    Script,
    TopicNames,
    approx_means,
    as_windows,
    model_of_records,
    read_to_end,
    table,
    tails,
    wait_until_caught_up,
    while_running,
    windows_allowing_identical_repeats,
)
from sensor_lib.kafka_cluster import KafkaCluster
from sensor_lib.logs import silent_logger
from sensor_lib.polling import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

RATE, SENSORS = 20, 6  # live readings/s over all sensors
HISTORY_SECONDS = 20  # sent first, so windows close from the start
SESSION_TIMEOUT = 6.0  # the scripts' consumers' session.timeout.ms (sensor_lib/application.py)
DOWN_SECONDS = 8.0  # a killed node stays down past the session timeout
PAUSE_SECONDS = 10.0  # so does a paused one
# From a fault to the first window that started after it, a processor must wait for the
# window's end and grace (11 s) and the broker's failover (about 9 s, the controller's
# broker.session.timeout.ms): about 20-30 s, bounded generously for two loaded cores.
RECOVERY_BOUND = 90.0
IN_SYNC_BOUND = 120.0  # a restarted node back in every ISR
EMITTED = "INFO sensor_stream_processor: Sensor"  # the processor's line for each window
REJOINED = "again from the last commit"  # sensor_lib/rejoin.py's warnings
NOT_ENOUGH_REPLICAS = re.compile(r"NOT_ENOUGH_REPLICAS|NotEnoughReplicas|Not enough in-sync", re.I)


# --- The cluster --------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three KRaft nodes on free ports; their logs kept with the tests'. Only this module
    uses it: stopped after it, so no other test runs beside three idle JVMs."""
    with KafkaCluster(3, log_dir=tmp_path_factory.mktemp("cluster-logs")) as started:
        yield started


def every_node_back(cluster: KafkaCluster) -> None:
    """Resume a paused node, restart a stopped one, and wait until every replica is in sync:
    each run starts on a whole cluster, whatever the run before it left."""
    for node in cluster.nodes:
        if node.paused:
            cluster.resume(node.node_id)
    start_again(cluster, [node.node_id for node in cluster.nodes if not node.is_running()])
    wait_until(cluster.fully_replicated, IN_SYNC_BOUND, interval=0.5, what="every replica in sync")


def start_again(cluster: KafkaCluster, node_ids: list[int]) -> None:
    """Start stopped nodes on their data, all at once, and wait until they serve. Not from
    a thread of a pool: a node dies with the thread that started it (PR_SET_PDEATHSIG in
    sensor_lib/children.py follows the thread, not the process)."""
    for node_id in node_ids:
        cluster.node(node_id).start()
    cluster.wait_until_serving([cluster.node(node_id) for node_id in node_ids], IN_SYNC_BOUND)


def raw_leaders(cluster: KafkaCluster, topic: str) -> dict[int, list[int]]:
    """Node id -> the partitions of `topic` it leads."""
    admin = AdminClient({"bootstrap.servers": cluster.address, "logger": silent_logger()})
    leaders: dict[int, list[int]] = {}
    for partition in admin.list_topics(topic, timeout=10).topics[topic].partitions.values():
        if partition.leader >= 0:
            leaders.setdefault(partition.leader, []).append(partition.id)
    return leaders


def java_string_hash(text: str) -> int:
    """Java's String.hashCode, as an unsigned 32-bit number."""
    units = text.encode("utf-16-be")
    value = 0
    for (unit,) in struct.iter_unpack(">H", units):
        value = (31 * value + unit) & 0xFFFFFFFF
    return value


def coordinator(cluster: KafkaCluster, internal_topic: str, key: str) -> int:
    """The node that coordinates `key` (a transactional.id, or a group): the leader of
    partition abs(hashCode(key)) % partitions of `internal_topic`, as Kafka places it
    (Utils.abs is `& 0x7fffffff`)."""
    admin = AdminClient({"bootstrap.servers": cluster.address, "logger": silent_logger()})
    partitions = len(
        admin.list_topics(internal_topic, timeout=10).topics[internal_topic].partitions
    )
    return cluster.leader(internal_topic, (java_string_hash(key) & 0x7FFFFFFF) % partitions)


# --- The pipeline -------------------------------------------------------------------


class WindowWatch(threading.Thread):
    """Follows the aggregate topic from its start as a reader would (read_committed under
    exactly-once), and notes when each window was first seen, on the wall clock that also
    stamps the readings."""

    def __init__(self, address: str, topic: str, isolation: str) -> None:
        super().__init__(daemon=True)
        self.first_seen: dict[tuple[str, int], float] = {}
        self.stopping = threading.Event()
        self.consumer = Consumer(
            {
                "bootstrap.servers": address,
                "group.id": f"window-watch-{uuid.uuid4().hex}",  # assign() only: no commits
                "enable.auto.commit": False,
                "isolation.level": isolation,
                "fetch.wait.max.ms": 100,
                "logger": silent_logger(),  # brokers go away on purpose here
            }
        )
        metadata = self.consumer.list_topics(topic, timeout=30).topics[topic]
        self.consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        )

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                for message in self.consumer.consume(num_messages=500, timeout=0.2):
                    if message.error() is None and message.key() is not None:
                        window = (message.key().decode(), json.loads(message.value())["start"])
                        self.first_seen.setdefault(window, time.time())
        finally:
            self.consumer.close()

    def first_after(self, moment: float) -> float | None:
        """Seconds from `moment` to the first sight of a window that started at or after it."""
        seen = [at for (_, start), at in list(self.first_seen.items()) if start >= moment * 1000]
        return min(seen) - moment if seen else None


@dataclass
class Fault:
    """One fault brought on a node, and how long the pipeline took to get over it."""

    what: str  # kill, pause, restart (a clean stop, then a start)
    node: int
    at: float  # wall clock, s
    led_raw: list[int] = field(default_factory=list)  # raw partitions the node led
    coordinated: list[str] = field(default_factory=list)  # transactional ids it coordinated
    back: float | None = None  # when it served again (None: left down)
    recovery: float | None = None  # s from `at` to the first window that started after it
    after_back: float | None = None  # s from `back` to the first window that started after it

    def figures(self) -> str:
        def seconds(value: float | None) -> str:
            return "none" if value is None else f"{value:.1f} s"

        roles = f"led raw {self.led_raw}" + "".join(f", coordinated {t}" for t in self.coordinated)
        if self.back is None:
            back = "left down"
        else:
            back = (
                f"back after {self.back - self.at:.1f} s, back->window {seconds(self.after_back)}"
            )
        recovery = seconds(self.recovery)
        return f"{self.what} node {self.node} ({roles}): fault->window {recovery}, {back}"


@dataclass
class Outcome:
    """What a run left behind, for the tests to check."""

    guarantee: str
    names: TopicNames
    faults: list[Fault]
    producer_status: int
    delivered: int
    produced: int
    failed: int
    raw: list[Record]
    aggregates: list[Record]
    rows: dict[tuple[str, int], dict[str, object]]
    outputs: dict[str, str]
    node_logs: str  # what the nodes logged during the run
    down_at_the_end: list[int]  # nodes not running when the run ended

    @property
    def readings(self) -> list[Record]:
        return [r for r in self.raw if r.is_reading]

    def figures(self) -> str:
        repeats = len(self.aggregates) - len({(r.key, r.json()["start"]) for r in self.aggregates})
        distinct = len({r.headers["uuid"] for r in self.readings})
        lines = [
            f"{self.guarantee}: delivered {self.delivered} of {self.produced} readings, "
            f"{len(self.readings)} on the raw topic ({distinct} distinct: {self.failed} "
            f"failed, of which {distinct - self.delivered} written), {len(self.rows)} rows, "
            f"{len(self.aggregates)} aggregates ({repeats} repeats)",
            "  new Applications (sensor_lib/rejoin.py): "
            + ", ".join(
                f"{name} {output.count(REJOINED)}" for name, output in self.outputs.items()
            ),
            *(f"  {fault.figures()}" for fault in self.faults),
        ]
        return "\n".join(lines)


class Pipeline:
    """The producer, two processors and the sink on the cluster, and a WindowWatch."""

    def __init__(
        self,
        cluster: KafkaCluster,
        database: str,
        folder: Path,
        name: str,
        guarantee: str = "at-least-once",
        producer_flags: tuple[str, ...] = (),
    ) -> None:
        self.cluster, self.database, self.guarantee = cluster, database, guarantee
        self.names = names = TopicNames(name)
        self.isolation = "read_committed" if guarantee == "exactly-once" else "read_uncommitted"
        self.faults: list[Fault] = []
        self.log_sizes = {node.node_id: log_size(node.log_path) for node in cluster.nodes}
        address = ["--broker-address", cluster.address]
        quix = [*address, "--processing-guarantee", guarantee, "--commit-interval", "1"]
        env = {"PRODUCER_CONFIG": "{}"}  # whatever the session's other fixtures set
        # Each Quix Streams script: (file, flags, environment).
        self.commands = {
            f"processor {instance}": (
                "sensor_stream_processor.py",
                [
                    *quix,
                    *("--raw-topic", names.raw, "--agg-topic", names.agg),
                    *("--consumer-group", names.group, "--instance-id", instance),
                    *("--state-dir", str(folder / f"state-{instance}")),
                ],
                env,
            )
            for instance in ("a", "b")
        }
        self.commands["sink"] = (
            "sensor_stream_sink.py",
            [
                *quix,
                *("--agg-topic", names.agg, "--consumer-group", names.sink_group),
                *("--sink-table", names.table, "--instance-id", "sink"),
                *("--state-dir", str(folder / "state-sink")),
            ],
            {**env, "POSTGRES_URL": database},
        )
        self.quix = {
            name: Script(file, *flags, env=e) for name, (file, flags, e) in self.commands.items()
        }
        self.producer_flags = [
            *address,
            *("--raw-topic", names.raw, "--seed", "7", "--quiet"),
            *("--rate", str(RATE), "--sensors", str(SENSORS)),
            *("--backfill-seconds", str(HISTORY_SECONDS)),
            *("--count", str(RATE * 600)),  # more than a run sends: it is stopped
            *producer_flags,
        ]
        self.producer: Script | None = None
        self.watch: WindowWatch | None = None

    @property
    def processors(self) -> list[Script]:
        return [script for name, script in self.quix.items() if name.startswith("processor")]

    @property
    def scripts(self) -> dict[str, Script]:
        return {**self.quix, **({"producer": self.producer} if self.producer else {})}

    @property
    def transactional_ids(self) -> list[str]:
        """The processors' transactional.id: <consumer group>-<instance id>."""
        return [f"{self.names.group}-{instance}" for instance in ("a", "b")]

    def start(self) -> Pipeline:
        """Start the processors and the sink, then the producer; return once each processor
        has emitted a window: the stream runs."""
        for name in self.quix:
            wait_until(lambda name=name: self.started(name), 90, what=f"{name} started")
        self.producer = Script("sensor_stream_producer.py", *self.producer_flags)
        self.watch = WindowWatch(self.cluster.address, self.names.agg, self.isolation)
        self.watch.start()
        self.wait(lambda: self.watch.first_seen, 90, "a first window")
        # Faults come once both processors have their partitions and work on them: a fault
        # during the group's first assignment is a case of its own.
        self.wait(
            lambda: all(EMITTED in script.output() for script in self.processors),
            90,
            "a window from each processor",
        )
        return self

    def started(self, name: str) -> bool:
        """The script has started its Application."""
        self.quix[name].assert_running()
        return "The application started" in self.quix[name].output()

    def wait(self, condition: Callable[[], object], timeout: float, what: str) -> object:
        """wait_until `condition`, failing at once if a processor or the sink has exited;
        after `timeout`, failing with the end of every script's output."""
        return wait_until(
            while_running(condition, *self.quix.values()),
            timeout,
            what=what,
            explain=lambda: tails({name: s.output() for name, s in self.scripts.items()}),
        )

    # --- Faults ---

    def fault(self, what: str, node: int) -> Fault:
        """Note a fault about to be brought on `node`: what it leads and coordinates."""
        leaders = raw_leaders(self.cluster, self.names.raw)
        found = Fault(what, node, time.time(), led_raw=leaders.get(node, []))
        if self.guarantee == "exactly-once":
            found.coordinated = [
                tid
                for tid in self.transactional_ids
                if coordinator(self.cluster, "__transaction_state", tid) == node
            ]
        self.faults.append(found)
        return found

    def recovered(self, fault: Fault) -> None:
        """Wait for the first window that started after the fault, and note when it came."""
        watch = self.watch
        assert watch is not None
        fault.recovery = self.wait(
            lambda: watch.first_after(fault.at), RECOVERY_BOUND, f"a window after {fault}"
        )

    def kill(self, node: int, *, restart: bool = True) -> Fault:
        """SIGKILL `node`, leave it down past the session timeout, start it again, and wait
        until it is back in every ISR and a window that started after the kill is seen."""
        fault = self.fault("kill" if restart else "kill-left-down", node)
        self.cluster.kill(node)
        if restart:
            time.sleep(DOWN_SECONDS)  # the outage itself; nothing waits on it
            self.cluster.restart(node)
            self.back_in_sync(fault)
        self.recovered(fault)
        return fault

    def back_in_sync(self, fault: Fault) -> None:
        """The faulted node is back: note when, and wait until every replica is in sync."""
        fault.back = time.time()
        wait_until(self.cluster.fully_replicated, IN_SYNC_BOUND, interval=0.5, what="ISRs")

    def pause(self, node: int) -> Fault:
        """SIGSTOP `node` past the session timeout, then SIGCONT."""
        fault = self.fault("pause", node)
        self.cluster.pause(node)
        time.sleep(PAUSE_SECONDS)  # the pause itself
        self.cluster.resume(node)
        self.back_in_sync(fault)
        self.recovered(fault)
        return fault

    def restart(self, node: int) -> Fault:
        """Stop `node` cleanly (SIGTERM: it hands its leadership over first), start it again."""
        fault = self.fault("restart", node)
        self.cluster.node(node).stop(keep_data=True)
        self.cluster.restart(node)
        self.back_in_sync(fault)
        self.recovered(fault)
        return fault

    # --- The end ---

    def finish(self) -> Outcome:
        """Stop the producer (its watermarks close every window), and collect what is on
        the topics and in the table once the processors and the sink have caught up."""
        assert self.watch is not None
        assert self.producer is not None
        watch, producer = self.watch, self.producer
        for fault in self.faults:  # where a window that started after it came before the end
            if fault.back is not None:
                fault.after_back = watch.first_after(fault.back)
        status = producer.stop(signal.SIGTERM, timeout=180)  # it waits for its deliveries
        summary = re.search(r"Delivered (\d+) of (\d+) readings .* \((\d+) failed\)", self.output())
        assert summary is not None, producer.output()
        delivered, produced, failed = map(int, summary.groups())
        address = self.cluster.address
        raw = read_to_end(address, self.names.raw)
        wait_until_caught_up(
            address, self.names.group, self.names.raw, len(raw), 120, self.processors
        )
        aggregates = read_to_end(address, self.names.agg, isolation=self.isolation)
        windows = {(r.key, r.json()["start"]) for r in aggregates}
        rows = self.wait(
            lambda: (found := table(self.database, self.names.table)).keys() >= windows and found,
            120,
            f"{len(windows)} rows in {self.names.table}",
        )
        for script in self.quix.values():  # all at once: each takes seconds
            script.process.send_signal(signal.SIGTERM)
        for script in self.quix.values():
            assert script.wait(timeout=60) == 0, script.output()
        watch.stopping.set()
        watch.join(10)
        return Outcome(
            guarantee=self.guarantee,
            names=self.names,
            faults=self.faults,
            producer_status=status,
            delivered=delivered,
            produced=produced,
            failed=failed,
            raw=raw,
            aggregates=aggregates,
            rows=rows,
            outputs={name: script.output() for name, script in self.scripts.items()},
            down_at_the_end=[n.node_id for n in self.cluster.nodes if not n.is_running()],
            node_logs="".join(
                log_since(node.log_path, self.log_sizes[node.node_id])
                for node in self.cluster.nodes
            ),
        )

    def output(self) -> str:
        """The producer's."""
        return self.producer.output() if self.producer else ""

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.watch is not None:
            self.watch.stopping.set()
        for script in self.scripts.values():
            script.__exit__()


def log_size(path: Path | None) -> int:
    return path.stat().st_size if path is not None and path.exists() else 0


def log_since(path: Path | None, offset: int) -> str:
    if path is None or not path.exists():
        return ""
    with path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


# --- What every run must show -------------------------------------------------------


def assert_nothing_lost(outcome: Outcome, *, failed_may_be_written: bool = False) -> None:
    """Every acknowledged reading once on the raw topic, and every reading there in exactly
    the window the reference model puts it in, on the topic and in the table; recovery
    within its bound.

    With `failed_may_be_written`, readings whose delivery timed out may be on the raw topic
    too, and some twice: librdkafka reports an in-flight message that times out as failed
    though the leader may have written it, and bumps the idempotent producer's epoch, after
    which a batch still in flight can be written again (librdkafka's INTRODUCTION.md,
    "Idempotent Producer"; confluentinc/librdkafka#4953). Then every distinct reading counts
    between the acknowledged and the produced, and every copy on the topic is in a window."""
    readings = outcome.readings
    distinct = len({r.headers["uuid"] for r in readings})
    if failed_may_be_written:
        assert outcome.delivered <= distinct <= outcome.produced, outcome.figures()
    else:
        assert len(readings) == distinct == outcome.delivered, outcome.figures()  # once each
    model = model_of_records(outcome.raw)
    assert model.open_windows == {}  # the producer's last watermarks closed every window
    if not failed_may_be_written:
        assert model.late == []  # each sensor's readings in order, through every fault
    if outcome.guarantee == "exactly-once":
        windows = as_windows(outcome.aggregates)  # fails on any window seen twice
    else:
        windows = windows_allowing_identical_repeats(outcome.aggregates)
    assert windows == approx_means(model.windows)
    assert sum(w["temperature"]["count"] for w in windows.values()) == len(readings) - len(
        model.late
    )
    assert outcome.rows == approx_means(model.windows)
    for fault in outcome.faults:
        assert fault.recovery is not None, fault
        assert fault.recovery <= RECOVERY_BOUND, fault
    for name, output in outcome.outputs.items():
        assert "Traceback" not in output, f"{name}:\n{output}"
    # Both processors did part of the work.
    processors = [o for name, o in outcome.outputs.items() if name.startswith("processor")]
    assert all(EMITTED in output for output in processors)


def report(capsys: pytest.CaptureFixture[str], case: str, figures: str) -> None:
    """The run's figures in the test output, captured or not."""
    with capsys.disabled():
        print(f"\n[{case}] {figures}", flush=True)


# --- The runs -------------------------------------------------------------------------
# Two long runs carry most cases, each case a test of its own on the run's outcome; the
# run's start and end (about 30 s each) are then paid once, not once per case.


def kill_raw_leaders(run: Pipeline, times: int) -> None:
    """SIGKILL the leader of a raw partition `times` times, each time a node not killed
    yet where one leads, leave it down past the session timeout, and start it again."""
    while sum(fault.what == "kill" and bool(fault.led_raw) for fault in run.faults) < times:
        killed = {fault.node for fault in run.faults}
        leaders = raw_leaders(run.cluster, run.names.raw)
        run.kill(next((n for n in sorted(leaders) if n not in killed), min(leaders)))


@pytest.fixture(scope="module")
def at_least_once_run(
    cluster: KafkaCluster, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Outcome:
    """At-least-once, every fault that leaves two nodes up, one after the other: a raw
    partition's leader killed three times, a node paused, a rolling restart of the three
    nodes, and last a node killed and left down to the end."""
    every_node_back(cluster)
    folder = tmp_path_factory.mktemp("at-least-once")
    with Pipeline(cluster, postgres_url, folder, "at_least_once") as run:
        run.start()
        kill_raw_leaders(run, 3)
        run.pause(min(raw_leaders(cluster, run.names.raw)))
        for node in cluster.nodes:
            run.restart(node.node_id)
        run.kill(min(raw_leaders(cluster, run.names.raw)), restart=False)
        return run.finish()


@pytest.fixture(scope="module")
def exactly_once_run(
    cluster: KafkaCluster, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Outcome:
    """Exactly-once: first the node that coordinates processor a's transactions killed,
    then raw partitions' leaders until three leaders were killed."""
    every_node_back(cluster)
    folder = tmp_path_factory.mktemp("exactly-once")
    with Pipeline(cluster, postgres_url, folder, "exactly_once", "exactly-once") as run:
        run.start()
        run.kill(coordinator(cluster, "__transaction_state", run.transactional_ids[0]))
        kill_raw_leaders(run, 3)
        return run.finish()


def faults(outcome: Outcome, what: str) -> list[Fault]:
    return [fault for fault in outcome.faults if fault.what == what]


# --- The tests ------------------------------------------------------------------------


def test_every_topic_has_three_replicas_and_two_in_sync(
    cluster: KafkaCluster, at_least_once_run: Outcome
) -> None:
    names = at_least_once_run.names
    admin = AdminClient({"bootstrap.servers": cluster.address, "logger": silent_logger()})
    metadata = admin.list_topics(timeout=10).topics
    changelogs = [t for t in metadata if t.startswith(f"changelog__{names.group}--")]
    topics = [names.raw, names.agg, names.dlq, f"{names.agg}-dlq", *changelogs]
    assert len(changelogs) == 1, sorted(metadata)
    resources = [ConfigResource(ResourceType.TOPIC, topic) for topic in topics]
    configs = {
        resource.name: future.result(timeout=10)["min.insync.replicas"].value
        for resource, future in admin.describe_configs(resources).items()
    }
    replicas = {
        t: sorted({len(p.replicas) for p in metadata[t].partitions.values()}) for t in topics
    }
    assert replicas == {topic: [3] for topic in topics}
    assert configs == dict.fromkeys(topics, "2")


@pytest.mark.timeout(600)  # the run's own waits bound it; its fixture may start here
@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_killed_leader_loses_no_window(
    guarantee: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    outcome: Outcome = request.getfixturevalue(guarantee.replace("-", "_") + "_run")
    report(capsys, f"killed leader, {guarantee}", outcome.figures())
    killed = [fault for fault in faults(outcome, "kill") if fault.led_raw]
    assert len(killed) >= 3
    assert all(fault.back for fault in killed)  # each started again
    assert outcome.producer_status == 0
    assert outcome.delivered == outcome.produced
    assert_nothing_lost(outcome)


def test_paused_broker_loses_nothing(at_least_once_run: Outcome, capsys) -> None:
    outcome = at_least_once_run
    report(capsys, "paused broker", outcome.figures())
    [paused] = faults(outcome, "pause")
    assert paused.led_raw
    assert paused.back is not None
    assert paused.back - paused.at > SESSION_TIMEOUT
    assert_nothing_lost(outcome)


def test_rolling_restart_loses_nothing(at_least_once_run: Outcome, capsys) -> None:
    outcome = at_least_once_run
    report(capsys, "rolling restart", outcome.figures())
    restarts = faults(outcome, "restart")
    assert [fault.node for fault in restarts] == [1, 2, 3]
    assert outcome.faults[-4:-1] == restarts  # one after the other
    assert_nothing_lost(outcome)


def test_broker_left_down_loses_nothing(at_least_once_run: Outcome, capsys) -> None:
    outcome = at_least_once_run
    report(capsys, "broker left down", outcome.figures())
    [left_down] = faults(outcome, "kill-left-down")
    assert outcome.faults[-1] is left_down  # down to the end of the run
    assert outcome.down_at_the_end == [left_down.node]
    assert outcome.producer_status == 0
    assert outcome.delivered == outcome.produced
    assert_nothing_lost(outcome)
    logs = "\n".join([*outcome.outputs.values(), outcome.node_logs])
    assert NOT_ENOUGH_REPLICAS.findall(logs) == []


def test_killed_transaction_coordinator_loses_no_window(
    cluster: KafkaCluster, exactly_once_run: Outcome, capsys
) -> None:
    outcome = exactly_once_run
    report(capsys, "transaction coordinator, exactly-once", outcome.figures())
    first = outcome.faults[0]
    assert first.what == "kill"
    assert f"{outcome.names.group}-a" in first.coordinated
    # The placement computed here is Kafka's: the same hash places the consumer group,
    # whose coordinator the broker names itself (once leaders have settled after the run).
    # A new client each time: librdkafka keeps a coordinator it found for as long as it is
    # asked for, so one client would go on naming the node that led before the last fault.
    group = outcome.names.group
    seen: list[tuple[int, int]] = []

    def placed_alike() -> bool:
        admin = AdminClient({"bootstrap.servers": cluster.address, "logger": silent_logger()})
        described = admin.describe_consumer_groups([group])[group].result(timeout=10)
        seen.append((coordinator(cluster, "__consumer_offsets", group), described.coordinator.id))
        return seen[-1][0] == seen[-1][1]

    wait_until(
        placed_alike,
        60,
        interval=1,
        what="the group's coordinator where Kafka puts it",
        explain=lambda: f"(computed, Kafka's) each second: {seen}",
    )
    assert_nothing_lost(outcome)


@pytest.mark.timeout(300)
def test_two_brokers_down_fail_the_producer_loudly_and_lose_nothing_acknowledged(
    cluster: KafkaCluster, postgres_url: str, tmp_path: Path, capsys
) -> None:
    every_node_back(cluster)
    flags = ("--delivery-timeout", "3")
    with Pipeline(cluster, postgres_url, tmp_path, "two_down", producer_flags=flags) as run:
        run.start()
        victims = sorted(raw_leaders(cluster, run.names.raw))[:2]
        fault = run.fault(f"kill-two (nodes {victims[0]} and {victims[1]})", victims[0])
        for victim in victims:
            cluster.kill(victim)
        run.wait(lambda: "Delivery failed" in run.output(), 60, "a failed delivery")
        start_again(cluster, victims)
        run.back_in_sync(fault)
        run.recovered(fault)
        # Stopped only once it writes again: its readings kept failing for seconds after the
        # brokers were back, and watermarks sent then fail too, leaving the last windows open.
        # A reading made 5 s (past the 3 s delivery timeout) after they are back is not one
        # of those in flight while it failed.
        back_ms = fault.back * 1000 + 5000
        run.wait(
            lambda: any(
                r.timestamp_ms >= back_ms for r in read_to_end(cluster.address, run.names.raw)
            ),
            60,
            "a reading written after both brokers are back",
        )
        outcome = run.finish()
    report(capsys, "two brokers down", outcome.figures())
    assert outcome.producer_status == 1
    assert outcome.failed > 0
    assert outcome.delivered + outcome.failed == outcome.produced
    assert_nothing_lost(outcome, failed_may_be_written=True)
