"""What every benchmark shares: a broker, the workload, topics, the scripts as processes.

The benchmarks drive the project's scripts as a user would: each one is a child
process started with the flags the README documents, never imported. The
harness times them from the outside:

- start-up: from starting the processes to the first moment their consumer
  group is Stable with all of them as members (partitions assigned;
  DescribeConsumerGroups, polled every 20 ms; the embedded broker lists no
  members, so there it is the first Stable, and with several processes the
  moment each has opened its window store too), reported as `startup_s`;
- processing: from then to the moment the harness reads the last expected
  record from the output topic, reported as `seconds` and `readings_per_s`.
  Records already out when the clock starts (a process of a group that worked
  before the others had joined) are reported as `outputs_at_start`.

The workload is deterministic: M sensors each send one reading every
`sensor_interval_ms` of *event* time, in rounds (Sensor1..SensorM, then again),
in the raw topic's documented format. The start time is chosen so that the last
round lands exactly `grace` past a window end: the last reading of every sensor
closes a window, so "last window" means "every reading processed".

    BROKER_ADDRESS=127.0.0.1:19092 python benchmarks/harness.py --topic bench-raw

fills a topic with the workload, for example to profile the processor on it.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sensor_lib.children import start_child, stop_child  # noqa: E402
from sensor_lib.embedded_broker import EmbeddedBroker  # noqa: E402
from sensor_lib.errors import exit_status  # noqa: E402
from sensor_lib.event_time import from_epoch_ms  # noqa: E402
from sensor_lib.kafka_broker import KafkaBroker  # noqa: E402
from sensor_lib.settings import BrokerSettings  # noqa: E402
from sensor_lib.stop_signals import exit_when_stopped, raise_if_stopped  # noqa: E402
from sensor_lib.topics import ensure_topic, partitions_of  # noqa: E402

# Event times start at 2024-01-01T00:00:00Z: results do not depend on the host clock.
ORIGIN_MS = 1_704_067_200_000
# Explicit retention: the embedded broker reports only the configs given at
# creation, and Quix Streams reads retention.ms when it derives changelog topics.
# Unlimited: Kafka would delete readings stamped in 2024 at its next retention check.
RETENTION = {"retention.ms": "-1", "retention.bytes": "-1"}


class BenchmarkError(RuntimeError):
    """A measurement could not complete; the message says why (and shows the log)."""


@dataclass(frozen=True)
class Workload:
    readings: int
    sensors: int
    sensor_interval_ms: int = 1000
    window_ms: int = 10_000
    grace_ms: int = 1_000
    seed: int = 7

    @property
    def rounds(self) -> int:
        return -(-self.readings // self.sensors)

    @property
    def total(self) -> int:
        """Readings actually produced: whole rounds, so every sensor ends together."""
        return self.rounds * self.sensors

    @property
    def start_ms(self) -> int:
        last_round_offset = (self.rounds - 1) * self.sensor_interval_ms
        return ORIGIN_MS + (self.grace_ms - last_round_offset) % self.window_ms

    def event_time_ms(self, index: int) -> int:
        round_, slot = divmod(index, self.sensors)
        return (
            self.start_ms
            + round_ * self.sensor_interval_ms
            + slot * self.sensor_interval_ms // self.sensors
        )

    def messages(self) -> Iterator[tuple[bytes, bytes, int]]:
        """(key, value, timestamp ms) in production order: a random walk per sensor."""
        rng = random.Random(self.seed)
        values = [rng.uniform(18.0, 26.0) for _ in range(self.sensors)]
        for index in range(self.total):
            slot = index % self.sensors
            values[slot] += rng.gauss(0.0, 0.15)
            ts_ms = self.event_time_ms(index)
            moment = from_epoch_ms(ts_ms)
            reading = {"ts": moment.isoformat(), "value": round(values[slot], 2)}
            yield f"Sensor{slot + 1}".encode(), orjson.dumps(reading), ts_ms


def expected_closed_windows(workload: Workload) -> int:
    """Windows that per-key closing must emit: end <= that sensor's last time - grace."""
    closed = 0
    for slot in range(workload.sensors):
        first = workload.event_time_ms(slot)
        last = workload.event_time_ms((workload.rounds - 1) * workload.sensors + slot)
        first_start = first - first % workload.window_ms
        # Window starts first_start, first_start + W, ... whose end <= last - grace.
        latest_end = last - workload.grace_ms
        if latest_end >= first_start + workload.window_ms:
            closed += (latest_end - first_start) // workload.window_ms
    return closed


def readings_to_close(workload: Workload, windows: int) -> int:
    """How many readings, in production order, it takes to close `windows` windows: the
    work a group had done when that many of its windows were out. Windows close in bursts
    (every sensor's in the same round), so their count is no linear measure of the work."""
    closed_by = [0] * workload.sensors  # windows closed so far, per sensor
    closed = 0
    for index in range(workload.total):
        if closed >= windows:
            return index
        slot = index % workload.sensors
        first = workload.event_time_ms(slot)
        first_start = first - first % workload.window_ms
        latest_end = workload.event_time_ms(index) - workload.grace_ms
        now = max(0, (latest_end - first_start) // workload.window_ms)
        closed += now - closed_by[slot]
        closed_by[slot] = now
    return workload.total


def workload_arguments(
    doc: str, *, readings: int | None = 300_000, sensors: int = 1000, timeout: float | None = None
) -> argparse.ArgumentParser:
    """A parser described by `doc`'s first line, with the workload's flags every benchmark
    takes: --readings (unless None), --sensors and --partitions, and --timeout if given."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if readings is not None:
        parser.add_argument("--readings", type=int, default=readings, help=f"default {readings}")
    parser.add_argument("--sensors", type=int, default=sensors, help=f"default {sensors}")
    parser.add_argument("--partitions", type=int, default=2, help="default 2")
    if timeout is not None:
        parser.add_argument("--timeout", type=float, default=timeout, help=f"default {timeout:g} s")
    return parser


# --- The broker and its topics ----------------------------------------------------


@contextmanager
def broker_address(address: str | None = None) -> Iterator[str]:
    """BROKER_ADDRESS (or `address`) if set, else a fresh broker of kind BENCH_BROKER:
    `embedded` (the default) or `kafka` (Apache Kafka, kafka_broker.py).

    A broker started here is stopped, and its data folder removed, however the
    benchmark stops: Ctrl-C, SIGTERM, SIGHUP or its parent's exit all unwind
    through this block and end in one line on stderr and exit status 1.
    """
    address = address or os.environ.get("BROKER_ADDRESS")
    if address:
        yield address
        return
    kind = os.environ.get("BENCH_BROKER", "embedded")
    if kind not in ("embedded", "kafka"):
        raise SystemExit(f"BENCH_BROKER must be embedded or kafka, not {kind!r}")
    with (
        exit_when_stopped(f"stopped; the {kind} broker it started is stopped"),
        ShippedKafka() if kind == "kafka" else EmbeddedBroker() as broker,
    ):
        yield broker.address


class ShippedKafka(KafkaBroker):
    """Apache Kafka with its own default group.initial.rebalance.delay.ms, 3 s (the tests'
    broker has 0): a group's first rebalance waits for more members, so the processes of a
    group started together join it at once, and none starts alone on every partition."""

    def server_properties(self, log_dirs: Path) -> str:
        return super().server_properties(log_dirs) + "group.initial.rebalance.delay.ms=3000\n"


def unique_name(prefix: str) -> str:
    return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"


def create_topics(address: str, partitions: int, *names: str, **config: str) -> None:
    broker = BrokerSettings(broker_address=address)
    for name in names:
        ensure_topic(broker, name, partitions, 30, config={**RETENTION, **config})


def produce_workload(address: str, topic: str, partitions: int, workload: Workload) -> None:
    create_topics(address, partitions, topic)
    # Idempotent: a retried batch stays in order, so every run sees the same windows.
    producer = Producer({"bootstrap.servers": address, "linger.ms": 50, "enable.idempotence": True})
    failures: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failures.append(err)

    for key, value, ts_ms in workload.messages():
        while True:
            try:
                producer.produce(topic, value, key, timestamp=ts_ms, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    undelivered = producer.flush(60)
    if failures or undelivered:
        raise BenchmarkError(f"{len(failures)} failed and {undelivered} undelivered readings")


def reader(address: str, topics: Iterable[str], **config: Any) -> Consumer:
    """A live tail, for timing: a consumer assigned every partition of `topics` from the
    start (no group), which a timing loop polls through `records()` until it has seen what
    it waits for. It is not a read to the end (that is sensor_lib.consuming.read_to_end, which the
    benchmarks use to read a topic back): it never stops by itself, and the timing loop
    counts records as they arrive, without waiting for a partition's end."""
    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "group.id": unique_name("reader"),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
            **config,
        }
    )
    consumer.assign(
        [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in partitions(consumer, t)]
    )
    return consumer


def partitions(client: Consumer, topic: str, timeout: float = 30.0) -> list[int]:
    """The partitions of `topic`, once the broker's metadata lists them (Kafka may answer
    without them just after the topic was created)."""
    deadline = time.monotonic() + timeout
    while not (found := partitions_of(client, topic)):
        if time.monotonic() > deadline:
            raise BenchmarkError(f"no partitions of {topic} in the metadata after {timeout:g} s")
        time.sleep(0.1)
    return found


def records(messages: Iterable[Message]) -> list[Message]:
    """The records among a live tail's `messages`; partition ends dropped, any other error
    raised."""
    kept = []
    for msg in messages:
        if msg.error() is None:
            kept.append(msg)
        elif msg.error().code() != KafkaError._PARTITION_EOF:
            raise KafkaException(msg.error())
    return kept


# --- The scripts as child processes -----------------------------------------------


class Child:
    """A script of this repository run as a process that never outlives the benchmark.

    Its CPU time and memory come from psutil. Linux reports no peak resident set through
    psutil, so `peak_rss_mib` is the largest of the samples `rss_mib()` has taken.
    """

    def __init__(
        self,
        script: str,
        flags: Sequence[str],
        log: Path,
        wrapper: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.log = log
        self.started = time.monotonic()
        command = [*wrapper, sys.executable, str(REPO / script), *flags]
        self.process = start_child(command, log=log, cwd=REPO, env=env)
        self.ps = psutil.Process(self.process.pid)
        self.peak_rss_mib = 0.0
        self.terminated = False

    def cpu_seconds(self) -> float:
        """User plus system CPU time so far, every thread; 0 once the process has gone."""
        try:
            times = self.ps.cpu_times()
        except psutil.NoSuchProcess:
            return 0.0
        return times.user + times.system

    def rss_mib(self) -> float:
        """Its resident set now, in MiB (0 once it has gone); a sample for the peak too."""
        try:
            rss = round(self.ps.memory_info().rss / 2**20, 1)
        except psutil.NoSuchProcess:
            return 0.0
        self.peak_rss_mib = max(self.peak_rss_mib, rss)
        return rss

    def check(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise BenchmarkError(f"{self.log.name}: exited with {self.process.returncode}:\n{tail}")

    def wait(self, timeout: float) -> float:
        """Wait for a clean exit; return its peak RSS in MiB (sampled while it runs)."""
        deadline = time.monotonic() + timeout
        while True:
            raise_if_stopped()
            self.rss_mib()
            try:
                self.process.wait(0.01)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    raise BenchmarkError(f"{self.log.name}: running after {timeout:g} s") from None
        if self.process.returncode != 0:
            self.check()
        return self.peak_rss_mib

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM, once: a second one would hurry its shutdown); stop()
        waits for it. Several processes asked at once stop in parallel."""
        if not self.terminated and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.terminated = True

    def stop(self, timeout: float = 15.0) -> None:
        """Stop it (SIGTERM unless asked already), then SIGKILL after `timeout` seconds."""
        if not self.terminated:
            self.terminated = True
            stop_child(self.process, timeout)
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Sampler:
    """Calls `sample` at most every `interval` seconds, however often it is asked: the
    timing loops ask on every turn, and the harness's own CPU counts in machine_cores."""

    def __init__(self, sample: Callable[[], object], interval: float = 0.1) -> None:
        self.sample, self.interval, self.next = sample, interval, 0.0

    def __call__(self) -> None:
        if (now := time.monotonic()) >= self.next:
            self.sample()
            self.next = now + self.interval


def machine_busy_seconds() -> float:
    """CPU time all cores have spent busy since boot: user, nice, system, irq and softirq
    (psutil's reading of /proc/stat; not idle, iowait or steal)."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq


def wait_until(
    condition: Callable[[], bool],
    what: str,
    timeout: float,
    children: Sequence[Child] = (),
    interval: float = 0.02,
) -> float:
    """Poll `condition` until it holds; return that moment (time.monotonic()).

    Fails at once if one of `children` exits, and after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        raise_if_stopped()
        for child in children:
            child.check()
        if time.monotonic() > deadline:
            raise BenchmarkError(f"no {what} within {timeout:g} s")
        time.sleep(interval)
    return time.monotonic()


def group_is_stable(admin: AdminClient, group: str, members: int = 1) -> bool:
    """The group has settled with `members` members: each has its partitions."""
    try:
        found = admin.describe_consumer_groups([group], request_timeout=5)[group].result()
    except KafkaException:  # Kafka: the group does not exist yet
        return False
    # The embedded broker lists no members; there, Stable is all there is to know.
    return found.state == ConsumerGroupState.STABLE and len(found.members) in (0, members)


def has_opened_a_store(state_dir: Path) -> bool:
    """Whether Quix Streams has opened a window store under `state_dir`, as it does for
    each partition it is assigned: <state dir>/<group>/<store>/<topic>/<partition>."""
    return any(state_dir.glob("*/*/*/*"))


def consumer_flags(address: str, raw: str, agg: str, group: str, state_dir: Path) -> list[str]:
    """The flags the processor, the baseline and the reference consumers all take."""
    return [
        f"--broker-address={address}",
        f"--raw-topic={raw}",
        f"--agg-topic={agg}",
        f"--consumer-group={group}",
        f"--state-dir={state_dir}",
    ]


def measurement(name: str, readings: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "readings": readings,
        "seconds": round(seconds, 3),
        "readings_per_s": round(readings / seconds),
        **extra,
    }


@dataclass(frozen=True)
class Run:
    """Where the consumers read and write, and how long any wait may take."""

    address: str
    raw: str
    partitions: int
    readings: int
    work: Path
    timeout: float = 600.0


class ConsumerGroup:
    """`instances` processes of `script` in a new consumer group, each with its own
    state dir, writing to a new output topic that the harness tails."""

    def __init__(
        self,
        run: Run,
        name: str,
        script: str,
        flags: Sequence[str],
        instances: int = 1,
        wrapper: Sequence[str] = (),
    ) -> None:
        self.instances = instances
        self.sink, self.group = unique_name(f"{name}-out"), unique_name(name)
        create_topics(run.address, run.partitions, self.sink)
        self.tail = reader(run.address, [self.sink])
        self.outputs = 0
        self.children: list[Child] = []
        self.sample_memory = Sampler(lambda: [child.rss_mib() for child in self.children])
        self.started = time.monotonic()
        self.state_dirs = [run.work / f"{self.group}-state-{i}" for i in range(instances)]
        try:
            for i, state in enumerate(self.state_dirs):
                where = consumer_flags(run.address, run.raw, self.sink, self.group, state)
                log = run.work / f"{self.group}-{i}.log"
                self.children.append(Child(script, [*where, *flags], log, wrapper))
        except BaseException:
            self.stop()
            raise

    def is_stable(self, admin: AdminClient) -> bool:
        """Stable, and with several processes, each one's window store opened too: the
        embedded broker lists no members, and answers each one's join about a second
        apart, so its first Stable comes before the last member has its partitions."""
        if not group_is_stable(admin, self.group, self.instances):
            return False
        return self.instances == 1 or all(map(has_opened_a_store, self.state_dirs))

    def read_outputs(self, timeout: float) -> int:
        """Read what has arrived on the output topic; return the total so far. Each turn
        also samples the processes' memory (every 0.1 s at most)."""
        self.sample_memory()
        self.outputs += len(records(self.tail.consume(10_000, timeout)))
        return self.outputs

    def peak_rss_mib(self) -> float:
        """The largest resident set any of its processes had in the samples."""
        return max(child.peak_rss_mib for child in self.children)

    def cpu_seconds(self) -> float:
        """User plus system CPU time of all its processes, every thread included."""
        return sum(child.cpu_seconds() for child in self.children)

    def terminate(self) -> None:
        for child in self.children:
            child.terminate()

    def stop(self, timeout: float = 15.0) -> None:
        self.terminate()
        for child in self.children:
            child.stop(timeout)
        self.tail.close()


def time_consumers(
    run: Run, name: str, script: str, flags: Sequence[str], outputs: int, instances: int = 1
) -> tuple[dict[str, Any], str]:
    """Run `instances` processes of `script` as one ConsumerGroup; time them until
    `outputs` records are on its output topic.

    Returns the measurement and the output topic.
    """
    admin = AdminClient({"bootstrap.servers": run.address})
    consumers = ConsumerGroup(run, name, script, flags, instances)
    try:
        children = consumers.children
        ready = wait_until(lambda: consumers.is_stable(admin), f"{name} group", 120, children)
        cpu, busy = consumers.cpu_seconds(), machine_busy_seconds()
        early = consumers.read_outputs(0)  # out before the clock started: a head start
        done = wait_until(
            lambda: consumers.read_outputs(0.05) >= outputs,
            f"{outputs} records from {name}",
            run.timeout,
            children,
            0,
        )
        # Cores busy on average: theirs, and the machine's (they, the broker, the harness).
        cores = (consumers.cpu_seconds() - cpu) / (done - ready)
        machine_cores = (machine_busy_seconds() - busy) / (done - ready)
        for child in children:
            child.rss_mib()
        peak = consumers.peak_rss_mib()
    finally:
        consumers.stop()
    result = measurement(
        name,
        run.readings,
        done - ready,
        peak_rss_mib=peak,
        cores=round(cores, 2),
        machine_cores=round(machine_cores, 2),
    )
    started = consumers.started
    result.update(startup_s=round(ready - started, 3), wall_s=round(done - started, 3))
    if early:
        result["outputs_at_start"] = early
    return result, consumers.sink


def side_by_side(
    run: Run,
    groups: dict[str, ConsumerGroup],
    outputs: int | Mapping[str, int],
    on_done: Callable[[str], None],
    on_stable: Callable[[str], None] = lambda name: None,
) -> None:
    """Follow every group at once: call `on_stable(name)` when a group is Stable, and
    `on_done(name)` once its `outputs`-th record (or `outputs[name]`-th) is on its output
    topic."""
    admin = AdminClient({"bootstrap.servers": run.address})
    stable: set[str] = set()
    done: set[str] = set()
    deadline = time.monotonic() + run.timeout
    while len(done) < len(groups):
        raise_if_stopped()
        for name, consumers in groups.items():
            if name in done:
                continue
            for child in consumers.children:
                child.check()
            if name not in stable:
                if consumers.is_stable(admin):
                    stable.add(name)
                    on_stable(name)
            elif consumers.read_outputs(0.02) >= (
                outputs if isinstance(outputs, int) else outputs[name]
            ):
                done.add(name)
                on_done(name)
        if time.monotonic() > deadline:
            raise BenchmarkError(f"side by side: not done within {run.timeout:g} s")
        if not stable - done:  # nobody to read from: ask the broker again in a while
            time.sleep(0.05)


@contextmanager
def consumer_groups(
    run: Run,
    scripts: dict[str, tuple[str, Sequence[str]]],
    wrappers: Mapping[str, Sequence[str]] | None = None,
    stop_timeout: float = 15.0,
    runs: Mapping[str, Run] | None = None,
) -> Iterator[dict[str, ConsumerGroup]]:
    """One ConsumerGroup of one process per script (under its wrapper, if any), on `run`'s
    topic (or its own, `runs[name]`), all stopped when the block ends."""
    groups: dict[str, ConsumerGroup] = {}
    try:
        for name, (script, flags) in scripts.items():
            wrapper = (wrappers or {}).get(name, ())
            on = (runs or {}).get(name, run)
            groups[name] = ConsumerGroup(on, name, script, flags, wrapper=wrapper)
        yield groups
    finally:
        for consumers in groups.values():
            consumers.terminate()
        for consumers in groups.values():
            consumers.stop(stop_timeout)


def cpu_side_by_side(
    run: Run, scripts: dict[str, tuple[str, Sequence[str]]], outputs: int
) -> dict[str, tuple[dict[str, Any], str]]:
    """Run one process of each script at the same time, each in its own group on the
    same raw topic; measure the CPU time each spends from its group's Stable to its
    `outputs`-th record.

    CPU time per reading is the inverse of readings per second per core. Measured
    side by side, both processes meet the same neighbours on a noisy machine, which
    one after the other they do not. Returns name -> (measurement, output topic).
    """
    began: dict[str, float] = {}
    spent: dict[str, float] = {}
    with consumer_groups(run, scripts) as groups:

        def on_stable(name: str) -> None:
            began[name] = groups[name].cpu_seconds()

        def on_done(name: str) -> None:
            spent[name] = groups[name].cpu_seconds() - began[name]

        side_by_side(run, groups, outputs, on_done, on_stable)
    return {
        name: (
            {
                "name": f"{name}-side-by-side",
                "readings": run.readings,
                "cpu_s": round(spent[name], 2),
                "cpu_us_per_reading": round(spent[name] / run.readings * 1e6, 2),
            },
            consumers.sink,
        )
        for name, consumers in groups.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = workload_arguments("Fill a topic with the benchmark workload.")
    parser.add_argument("--topic", required=True)
    opts = parser.parse_args(argv)
    address = os.environ.get("BROKER_ADDRESS")
    if not address:
        raise SystemExit("set BROKER_ADDRESS: the topic must outlive this command")
    workload = Workload(opts.readings, opts.sensors)
    produce_workload(address, opts.topic, opts.partitions, workload)
    print(f"{workload.total} readings on {opts.topic}; {expected_closed_windows(workload)} windows")
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, logging.getLogger("benchmark")))
