"""Window latency: from producing the reading that closes a window to its aggregate.

    python benchmarks/latency.py                       # 2000 readings/s, 1000 sensors, 60 s
    python benchmarks/latency.py --split               # once per configuration below
    python benchmarks/latency.py --rate 500 --duration 5 --window-seconds 1 --grace-seconds 0

Runs the real scripts as a user would: sensor_stream_processor.py, then, once
its consumer group is Stable, sensor_stream_producer.py at a steady --rate. A
reader assigned to both topics sees every raw reading and every aggregate. The
processor closes a sensor's window [start, end) at the first message of that
sensor whose event time is at least end + grace; the producer stamps each
reading with the moment it produces it, so that is when the window became
closable. Latency = when the reader gets the aggregate - that moment, on the
host clock. Windows closed by a watermark (the producer's last ones) must
arrive but are not timed: a watermark's time is not when it was sent.

Where the time goes (`hops`, p50 and p99 per window). Both topics are created
with message.timestamp.type=LogAppendTime; where the broker honours it (Kafka),
its append times split each latency into
  producer   reading produced -> on the broker (the producer's linger.ms, --linger-ms)
  processor  reading on the broker -> aggregate on the broker (the processor's
             fetch wait, processing, and its producer's linger and batching)
  reader     aggregate on the broker -> read (the reader's fetch wait)
Where it does not (the embedded broker), the reader's own receive times stand
in: producer = produced -> read, processor = reading read -> aggregate read,
reader = 0. --configs changes one real setting per run (CONFIGS, below).

The processor logs each window at INFO just before it produces the aggregate;
where every timed window has that line, `processor_split` divides the processor
hop at it: until_emitted (fetching and processing, up to the window's close)
and emitted_to_broker (its producer's linger and the send).

Windows closable in the first --warmup-seconds are not timed. Prints one JSON
line per configuration; exits 1 if an aggregate never arrives. With --keep DIR,
each run also leaves its processor's log and every timed window's moments
there, to see when in the run the slow windows were (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME

import repo  # noqa: F401  (before sensor_lib: the repository on sys.path)
from bench_broker import broker_address, create_topics, unique_name
from bench_errors import BenchmarkError
from groups import GroupAdmin, consumer_flags, group_is_stable
from sensor_lib.errors import exit_status
from sensor_lib.event_time import to_epoch_ms
from sensor_lib.polling import Deadline
from sensor_lib.stop_signals import raise_if_stopped
from supervision import Child, wait_until
from tail import reader, records
from workload import workload_arguments

WindowId = tuple[str, int]  # (sensor, window start ms)
# The processor's INFO line for each window: "<UTC time>Z INFO sensor_stream_processor:
# <sensor> [<start>, <end>) count=...".
EMITTED_LINE = re.compile(rb"^(\S+)Z INFO sensor_stream_processor: (\S+) \[(\S+), ", re.M)
# name: (extra processor flags, extra producer flags, extra reader config); each differs
# from "shipped" in one setting.
CONFIGS: dict[str, tuple[list[str], list[str], dict[str, Any]]] = {
    "shipped": ([], [], {}),
    "processor-fetch-wait-500": (['--consumer-config={"fetch.wait.max.ms": 500}'], [], {}),
    "processor-linger-0": (['--producer-config={"linger.ms": 0}'], [], {}),
    "processor-one-record-batches": (['--producer-config={"batch.num.messages": 1}'], [], {}),
    "processor-commit-1s": (["--commit-interval=1"], [], {}),
    "processor-commit-60s": (["--commit-interval=60"], [], {}),  # no commit in a 40 s run
    "processor-warning": (["--log-level=WARNING"], [], {}),
    "processor-debug": (["--log-level=DEBUG"], [], {}),  # with --keep: when each commit ran
    "producer-linger-20": ([], ["--linger-ms=20"], {}),
    "reader-fetch-wait-500": ([], [], {"fetch.wait.max.ms": 500}),
}


class ClosingTracker:
    """Which message made each (sensor, window) closable: its event time, and when it
    reached the broker (None for a watermark)."""

    def __init__(self, window_ms: int, grace_ms: int) -> None:
        self.window_ms = window_ms
        self.grace_ms = grace_ms
        self.open: dict[str, set[int]] = defaultdict(set)
        self.closable_at: dict[WindowId, int] = {}
        self.arrived_at: dict[WindowId, float | None] = {}

    def on_reading(self, sensor: str, ts_ms: int, arrived_ms: float | None = None) -> None:
        windows = self.open[sensor]
        for start in [s for s in windows if s + self.window_ms <= ts_ms - self.grace_ms]:
            windows.discard(start)
            self.closable_at[(sensor, start)] = ts_ms
            self.arrived_at[(sensor, start)] = arrived_ms
        start = ts_ms - ts_ms % self.window_ms
        if start + self.window_ms > ts_ms - self.grace_ms:  # not late
            windows.add(start)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(latencies_ms: list[float], fractions: tuple[float, ...]) -> dict[str, float]:
    values = sorted(latencies_ms)
    figures = {f"p{round(f * 100)}_ms": round(percentile(values, f), 1) for f in fractions}
    return {**figures, "max_ms": round(values[-1], 1)}


def hop_figures(hops: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {name: summarize(values, (0.5, 0.99)) for name, values in hops.items()}


def event_ms(ts: str) -> int:
    return to_epoch_ms(datetime.fromisoformat(ts))


def emitted_at(log: Path) -> dict[WindowId, int]:
    """When the processor logged each window, just before producing it (ms, rounded down)."""
    return {
        (sensor.decode(), event_ms(start.decode())): event_ms(f"{logged.decode()}+00:00")
        for logged, sensor, start in EMITTED_LINE.findall(log.read_bytes())
    }


def measure(opts: argparse.Namespace, address: str, work: Path, config: str) -> dict[str, Any]:
    flags, producer_extra, reader_config = CONFIGS[config]
    raw, agg, group = unique_name("latency-raw"), unique_name("latency-agg"), unique_name(config)
    create_topics(address, opts.partitions, raw, agg, **{"message.timestamp.type": "LogAppendTime"})
    tracker = ClosingTracker(opts.window_seconds * 1000, opts.grace_seconds * 1000)
    received: dict[WindowId, tuple[float, float]] = {}  # when read, when on the broker
    stamps = "reader"
    consumer = reader(address, [raw, agg], **reader_config)
    processor = Child(
        "sensor_stream_processor.py",
        [
            *consumer_flags(address, raw, agg, group, work / group),
            f"--window-seconds={opts.window_seconds}",
            f"--grace-seconds={opts.grace_seconds}",
            *flags,
        ],
        work / f"{group}.log",
    )
    producer = None
    try:
        admin = GroupAdmin(address)
        wait_until(lambda: group_is_stable(admin, group), "processor group", 120, [processor])
        started_ms = time.time() * 1000
        producer_flags = [f"--broker-address={address}", f"--raw-topic={raw}", "--quiet"]
        producer_flags += [f"--count={round(opts.rate * opts.duration)}", f"--rate={opts.rate:g}"]
        producer_flags += [f"--sensors={opts.sensors}", *producer_extra]
        producer = Child("sensor_stream_producer.py", producer_flags, work / f"{raw}.log")
        finish = Deadline(opts.duration + 120)
        drain: Deadline | None = None  # from the producer's exit, for the last aggregates
        while not (finish.passed() or (drain and drain.passed())):
            raise_if_stopped()
            processor.check()
            if producer.process.poll() is not None:
                if producer.process.returncode:
                    producer.check()
                if tracker.closable_at.keys() <= received.keys():
                    break
                drain = drain or Deadline(opts.drain_seconds)
            for msg in records(consumer.consume(1000, 0.005)):
                now = time.time() * 1000
                kind, stamp = msg.timestamp()
                if kind == TIMESTAMP_LOG_APPEND_TIME:
                    stamps = "log-append-time"
                else:
                    stamp = now
                value = orjson.loads(msg.value())
                key = msg.key().decode()
                if msg.topic() == agg:
                    received[(key, value["start"])] = (now, stamp)
                else:
                    arrived = None if value.get("watermark") else stamp
                    tracker.on_reading(key, event_ms(value["ts"]), arrived)
    finally:
        for child in (processor, producer):
            if child is not None:
                child.stop()
        consumer.close()
    timed_windows = {
        w: (at, tracker.arrived_at[w], *received[w])
        for w, at in tracker.closable_at.items()
        if w in received
        and tracker.arrived_at[w] is not None
        and at >= started_ms + opts.warmup_seconds * 1000
    }
    if not timed_windows:
        raise BenchmarkError(f"{config}: no window was timed")
    emitted = emitted_at(processor.log)
    if opts.keep:
        keep_run(opts.keep, group, timed_windows, emitted, processor.log)
    timed = list(timed_windows.values())
    hops = {
        "producer": [raw_at - at for at, raw_at, _, _ in timed],
        "processor": [agg_at - raw_at for _, raw_at, _, agg_at in timed],
        "reader": [seen - agg_at for _, _, seen, agg_at in timed],
    }
    split = {}
    if timed_windows.keys() <= emitted.keys():  # not at --log-level=WARNING
        split = {
            "until_emitted": [
                emitted[w] - raw_at for w, (_, raw_at, _, _) in timed_windows.items()
            ],
            "emitted_to_broker": [
                agg_at - emitted[w] for w, (_, _, _, agg_at) in timed_windows.items()
            ],
        }
    return {
        "name": "latency",
        "config": config,
        "rate": opts.rate,
        "sensors": opts.sensors,
        "duration_s": opts.duration,
        "window_s": opts.window_seconds,
        "grace_s": opts.grace_seconds,
        "warmup_s": opts.warmup_seconds,
        "windows": len(timed),
        **summarize([seen - at for at, _, seen, _ in timed], (0.5, 0.95, 0.99)),
        "missing": len(tracker.closable_at.keys() - received.keys()),
        "stamps": stamps,
        "hops": hop_figures(hops),
        **({"processor_split": hop_figures(split)} if split else {}),
    }


def keep_run(
    folder: Path,
    name: str,
    timed: dict[WindowId, tuple[float, float, float, float]],
    emitted: dict[WindowId, int],
    log: Path,
) -> None:
    """Write `name`-windows.jsonl, each timed window's moments in epoch ms (emitted_ms:
    the processor's log line, null without one), and keep the processor's log beside
    it as `name`-processor.log."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}-windows.jsonl", "wb") as out:
        for (sensor, start), (closable, on_broker, read, aggregate_on_broker) in timed.items():
            window = {
                "sensor": sensor,
                "start": start,
                "closable_ms": closable,
                "reading_on_broker_ms": on_broker,
                "emitted_ms": emitted.get((sensor, start)),
                "aggregate_on_broker_ms": aggregate_on_broker,
                "read_ms": read,
            }
            out.write(orjson.dumps(window) + b"\n")
    shutil.copy(log, folder / f"{name}-processor.log")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = workload_arguments(__doc__, readings=None)
    load_arguments(parser, duration=60.0)
    parser.add_argument("--window-seconds", type=int, default=10, help="default 10")
    parser.add_argument("--grace-seconds", type=int, default=1, help="default 1")
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=5.0,
        help="windows that close in the first seconds are not timed; default 5",
    )
    parser.add_argument(
        "--drain-seconds",
        type=float,
        default=20.0,
        help="how long to wait for the last aggregates after the producer ends; default 20",
    )
    parser.add_argument(
        "--configs", nargs="+", choices=CONFIGS, default=["shipped"], help="default shipped"
    )
    parser.add_argument("--split", action="store_true", help="run every configuration")
    parser.add_argument(
        "--keep", type=Path, help="folder for each run's processor log and per-window times"
    )
    return parser.parse_args(argv)


def load_arguments(parser: argparse.ArgumentParser, duration: float) -> None:
    """The producer's rate and how long it runs, timed and untimed first (brokers.py's too)."""
    parser.add_argument("--rate", type=float, default=2000.0, help="readings/s; default 2000")
    parser.add_argument(
        "--duration", type=float, default=duration, help=f"seconds; default {duration:g}"
    )
    parser.add_argument(
        "--warmup-run-seconds",
        type=float,
        default=30.0,
        help="on a broker this benchmark starts, first run this long, untimed (the first "
        "configuration): a broker just started (Kafka's JVM) is slower for its first minute; "
        "default 30",
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    failed = False
    configs = list(CONFIGS) if opts.split else opts.configs
    fresh_broker = not os.environ.get("BROKER_ADDRESS")
    with broker_address() as address, tempfile.TemporaryDirectory() as work:
        if fresh_broker and opts.warmup_run_seconds > 0:
            warmup = argparse.Namespace(**{**vars(opts), "duration": opts.warmup_run_seconds})
            measure(warmup, address, Path(work), configs[0])
        for config in configs:
            result = measure(opts, address, Path(work), config)
            print(json.dumps(result), flush=True)
            failed = failed or result["missing"] > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(exit_status(main, logging.getLogger("benchmark")))
