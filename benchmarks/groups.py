"""Consumer groups of the scripts under test, and when a group is ready to be timed.

Each group is one or more processes of a script in a new consumer group, each with
its own state folder, writing to a new output topic that the benchmark tails. A
group is ready once it is Stable with all of them as members (partitions assigned;
DescribeConsumerGroups). The embedded broker lists no members, so there it is the
first Stable, and with several processes the moment each has opened its window
store too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import ConsumerGroupState, KafkaException
from confluent_kafka.admin import AdminClient

from bench_broker import create_topics, unique_name
from sampling import Sampler
from supervision import Child
from tail import reader, records


@dataclass(frozen=True)
class Run:
    """Where the consumers read and write, and how long any wait may take."""

    address: str
    raw: str
    partitions: int
    readings: int
    work: Path
    timeout: float = 600.0


def consumer_flags(address: str, raw: str, agg: str, group: str, state_dir: Path) -> list[str]:
    """The flags the processor, the baseline and the reference consumers all take."""
    return [
        f"--broker-address={address}",
        f"--raw-topic={raw}",
        f"--agg-topic={agg}",
        f"--consumer-group={group}",
        f"--state-dir={state_dir}",
    ]


class GroupAdmin:
    """describe_consumer_groups, as an AdminClient at `address` has it, by a client that is
    replaced once a describe has failed. A cluster's group coordinators answer
    NOT_COORDINATOR for seconds after it starts, and the next describe by the client that
    got it aborts the whole process (confluent-kafka 2.12.1: an assertion in librdkafka's
    rd_kafka_enq_once_del_source_return)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.client = AdminClient({"bootstrap.servers": address})
        self.last: list[Future[Any]] = []

    def describe_consumer_groups(self, groups: list[str], **options: Any) -> dict[str, Future[Any]]:
        if any(future.done() and future.exception() for future in self.last):
            self.client = AdminClient({"bootstrap.servers": self.address})
        futures = self.client.describe_consumer_groups(groups, **options)
        self.last = list(futures.values())
        return futures


def group_is_stable(admin: AdminClient | GroupAdmin, group: str, members: int = 1) -> bool:
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


class ConsumerGroup:
    """`instances` processes of `script` in a new consumer group, each with its own
    state dir, writing to a new output topic that the benchmark tails."""

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

    def is_stable(self, admin: AdminClient | GroupAdmin) -> bool:
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
