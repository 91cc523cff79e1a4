"""One Kafka broker and three: the processor's throughput and window latency on each.

On one Apache Kafka node and on a cluster of three, alternating in one run.

    python benchmarks/brokers.py                      # 150k readings, 3 rounds, 30 s latency
    python benchmarks/brokers.py --readings 20000 --rounds 1 --duration 15 --warmup-run-seconds 15

Starts both brokers, BENCH_BROKER's `kafka` and `cluster` (bench_broker.py), and keeps
both up for the whole run (BROKER_ADDRESS is not used); the one not being measured
idles. Every topic made on each gets the scripts' replication there: 1 replica on one
node; 3 replicas and min.insync.replicas 2 on three, so each write the processor and
the producer make with acks=all waits for the followers. The workload goes once to a
fresh topic on each. After an untimed latency run on each (--warmup-run-seconds: a JVM
just started is slower), each round measures, on one broker and then the other (which
one first alternates from round to round):

  throughput  one sensor_stream_processor.py --log-level=WARNING on the workload, timed
              as throughput.py times it (timing.py): readings/s from its group's Stable
              to its last window read; and, over that span, the CPU time per reading of
              the processor (`cpu_us_per_reading`) and of the broker's JVMs, all three
              on the cluster (`broker_cpu_us_per_reading`), and the idle broker's cores
  latency     latency.py's `shipped` run: the producer at --rate for --duration s, each
              window's latency from producing the reading that makes it closable to
              reading its aggregate; p50 and p99

Prints one JSON line per measurement, then a summary: per broker the best of the
rounds (most readings/s, least p50 and p99) and the median CPU per reading; three/one
(the cluster's figure over the single node's) of those, of each round, and the median
of the rounds'. CPU time moves less than a clock with what else the machine
runs. Exits 1 unless every throughput run emitted the workload's windows, the same on
both brokers, every timed latency window arrived, and every topic on each broker has
the replication above.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

import latency
import repo  # noqa: F401  (before sensor_lib: the repository on sys.path)
from bench_broker import started_brokers, unique_name
from bench_errors import print_summary
from groups import Run
from sampling import ProcessUsage
from sensor_lib.consuming import read_to_end
from sensor_lib.errors import exit_status
from sensor_lib.settings import BrokerSettings
from sensor_lib.topics import min_insync_replicas
from throughput import PROCESSOR, leave_out_head_start, window_differences, window_table
from timing import time_consumers
from workload import Workload, expected_closed_windows, produce_workload, workload_arguments

KINDS = {1: "kafka", 3: "cluster"}  # brokers -> BENCH_BROKER's name
REPLICATION = {1: (1, 1), 3: (3, 2)}  # brokers -> replicas, min.insync.replicas
SHIPPED = ["--log-level=WARNING"]  # the processor as throughput.py runs it
# summary figure: (measurement, what the summary takes of the rounds)
FIGURES: dict[str, tuple[str, Callable[[list[float]], float]]] = {
    "readings_per_s": ("throughput", max),
    "cpu_us_per_reading": ("throughput", statistics.median),
    "broker_cpu_us_per_reading": ("throughput", statistics.median),
    "p50_ms": ("latency", min),
    "p99_ms": ("latency", min),
}


class Broker:
    """One of the two brokers under test: its address, its JVMs, its raw topic."""

    def __init__(self, count: int, server: Any, raw: str) -> None:
        self.count = count
        self.address = server.address
        self.raw = raw
        nodes = getattr(server, "nodes", [server])  # a KafkaCluster's, or the one node
        self.jvms = [ProcessUsage(node.process.pid) for node in nodes]

    def cpu_seconds(self) -> float:
        return sum(jvm.cpu_seconds() for jvm in self.jvms)


class Rounds:
    """The measurements on both brokers, and the problems found in them."""

    def __init__(self, opts: argparse.Namespace, work: Path) -> None:
        self.opts, self.work = opts, work
        self.workload = Workload(opts.readings, opts.sensors)
        self.windows = expected_closed_windows(self.workload)
        shared = [f"--sensors={opts.sensors}", f"--partitions={opts.partitions}"]
        shared.append(f"--rate={opts.rate}")
        self.timed = latency.parse_args([*shared, f"--duration={opts.duration}"])
        self.warmup = latency.parse_args([*shared, f"--duration={opts.warmup_run_seconds}"])
        self.results: dict[str, dict[int, list[dict[str, Any]]]] = {
            name: {count: [] for count in KINDS} for name in ("throughput", "latency")
        }
        self.first: dict[Any, Any] = {}  # the first run's windows, which every run must hold
        self.problems: list[str] = []

    def prepare(self, broker: Broker) -> None:
        """The workload on the broker's raw topic, and the untimed latency run."""
        produce_workload(broker.address, broker.raw, self.opts.partitions, self.workload)
        if self.opts.warmup_run_seconds > 0:
            latency.measure(self.warmup, broker.address, self.work, "shipped")

    def throughput(self, broker: Broker, idle: Broker) -> dict[str, Any]:
        """One processor on the broker's raw topic, timed as throughput.py times it, with
        the CPU time it and each broker's JVMs spend per reading while timed."""
        where = (broker.address, broker.raw, self.opts.partitions, self.workload.total)
        run = Run(*where, self.work, self.opts.timeout)
        clocks = {"broker": broker.cpu_seconds, "idle_broker": idle.cpu_seconds}
        result, topic = time_consumers(
            run, "processor", PROCESSOR, SHIPPED, self.windows, cpu_of=clocks
        )
        leave_out_head_start(result, self.workload, self.windows)
        table = window_table(read_to_end(BrokerSettings(broker_address=run.address), topic))
        if len(table) != self.windows:
            self.problems.append(f"{broker.address}: {len(table)} windows, not {self.windows}")
        self.first = self.first or table
        self.problems += window_differences(self.first, table, f"the run at {broker.address}")
        return {
            **result,
            "windows": len(table),
            "cpu_us_per_reading": round(result["cpu_s"] / run.readings * 1e6, 1),
            "broker_cpu_us_per_reading": round(result["broker_cpu_s"] / run.readings * 1e6, 1),
            "idle_broker_cores": round(result["idle_broker_cpu_s"] / result["seconds"], 2),
        }

    def latency(self, broker: Broker, idle: Broker) -> dict[str, Any]:
        result = latency.measure(self.timed, broker.address, self.work, "shipped")
        if result["missing"]:
            self.problems.append(f"{broker.address}: {result['missing']} windows missing")
        return result

    def round(self, number: int, order: list[Broker]) -> None:
        for broker, idle in zip(order, order[::-1], strict=True):
            for name, measure in (("throughput", self.throughput), ("latency", self.latency)):
                result = {**measure(broker, idle), "name": name, "brokers": broker.count}
                print(json.dumps({**result, "round": number}), flush=True)
                self.results[name][broker.count].append(result)

    def check_replication(self, broker: Broker) -> None:
        """Every topic on the broker, internal ones left out (the benchmark's, and the
        processor's changelogs), has the replicas and min.insync.replicas REPLICATION says."""
        admin = AdminClient({"bootstrap.servers": broker.address})
        topics = {
            name: topic
            for name, topic in admin.list_topics(timeout=30).topics.items()
            if not name.startswith("__") and topic.partitions
        }
        least = min_insync_replicas(admin, topics, 30)
        found = {
            (min(len(p.replicas) for p in topic.partitions.values()), least[name])
            for name, topic in topics.items()
        }
        if found != {wanted := REPLICATION[broker.count]}:
            self.problems.append(f"{broker.address}: (replicas, min.insync) {found}, not {wanted}")

    def summary(self) -> dict[str, Any]:
        """Per broker FIGURES of the rounds; three/one of those, of each round (two
        neighbours in time) and the median of the rounds'."""
        summary: dict[str, Any] = {key: {} for key in FIGURES}
        summary.update({"three/one": {}, "three/one median": {}, "per_round": {}})
        ratios: dict[str, list[float]] = {}
        for key, (name, pick) in FIGURES.items():
            values = {n: [run[key] for run in runs] for n, runs in self.results[name].items()}
            summary[key] = {n: round(pick(of), 3) for n, of in values.items()}
            summary["three/one"][key] = round(summary[key][3] / summary[key][1], 3)
            ratios[key] = [round(t / o, 3) for o, t in zip(values[1], values[3], strict=True)]
            summary["three/one median"][key] = round(statistics.median(ratios[key]), 3)
            summary["per_round"][key] = values
        summary["per_round"]["three/one"] = ratios
        return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = workload_arguments(__doc__, readings=150_000, timeout=600.0)
    parser.add_argument("--rounds", type=int, default=3, help="default 3")
    latency.load_arguments(parser, duration=30.0)
    opts = parser.parse_args(argv)
    if 0 < opts.warmup_run_seconds < 15:
        parser.error("--warmup-run-seconds: 0, or 15 or more (the run must time a window)")
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    with started_brokers(*KINDS.values()) as servers, tempfile.TemporaryDirectory() as work:
        rounds = Rounds(opts, Path(work))
        brokers = [Broker(n, s, unique_name("raw")) for n, s in zip(KINDS, servers, strict=True)]
        for broker in brokers:
            rounds.prepare(broker)
        for number in range(opts.rounds):
            rounds.round(number, brokers if number % 2 == 0 else brokers[::-1])
        for broker in brokers:
            rounds.check_replication(broker)
    summary = {
        "name": "summary",
        "readings": rounds.workload.total,
        "sensors": opts.sensors,
        "partitions": opts.partitions,
        "expected_windows": rounds.windows,
        "ok": not rounds.problems,
        **rounds.summary(),
    }
    return print_summary(summary, rounds.problems, "problems")


if __name__ == "__main__":
    sys.exit(exit_status(main, logging.getLogger("benchmark")))
