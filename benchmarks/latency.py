"""Window latency: from producing the reading that closes a window to its aggregate.

    python benchmarks/latency.py                       # 2000 readings/s, 1000 sensors, 60 s
    python benchmarks/latency.py --rate 500 --duration 5 --window-seconds 1 --grace-seconds 0

Runs the real scripts as a user would: sensor_stream_processor.py, then
sensor_stream_producer.py at a steady --rate. A reader assigned to both topics
sees every raw reading and every aggregate. The processor closes a sensor's
window [start, end) at the first reading of that sensor whose event time is at
least end + grace; the producer stamps each reading (payload and Kafka
timestamp) with the moment it produced it, so that timestamp is when the window
became closable. Latency = wall-clock time the aggregate is read from the sink
topic - that timestamp, on the same host clock.

Windows that become closable in the first --warmup-seconds are not timed (the
processor may still be joining its group). Prints one JSON line: windows
measured, p50/p95/p99/max in ms. Exits non-zero if an aggregate for a closable
window never arrives.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench_common import (
    REPO,
    assign_from_start,
    broker_address,
    create_topic,
    plain_consumer,
    unique_name,
)

WindowId = tuple[str, int]  # (sensor, window start ms)


class ClosingTracker:
    """Which reading made each (sensor, window) closable, and when it was produced."""

    def __init__(self, window_ms: int, grace_ms: int) -> None:
        self.window_ms = window_ms
        self.grace_ms = grace_ms
        self.open: dict[str, set[int]] = defaultdict(set)
        self.closable_at: dict[WindowId, int] = {}

    def on_reading(self, sensor: str, ts_ms: int) -> None:
        windows = self.open[sensor]
        for start in [s for s in windows if s + self.window_ms <= ts_ms - self.grace_ms]:
            windows.discard(start)
            self.closable_at[(sensor, start)] = ts_ms
        start = ts_ms - ts_ms % self.window_ms
        if start + self.window_ms > ts_ms - self.grace_ms:  # not late
            windows.add(start)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(latencies_ms: list[float]) -> dict[str, Any]:
    values = sorted(latencies_ms)
    if not values:
        return {"windows": 0}
    return {
        "windows": len(values),
        "p50_ms": round(percentile(values, 0.50), 1),
        "p95_ms": round(percentile(values, 0.95), 1),
        "p99_ms": round(percentile(values, 0.99), 1),
        "max_ms": round(values[-1], 1),
    }


def start_script(script: str, flags: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, str(REPO / script), *flags], stdout=out, stderr=subprocess.STDOUT
        )


def wait_for_text(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{log.name}: no {text!r}:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)


def measure(opts: argparse.Namespace, address: str, work: Path) -> dict[str, Any]:
    raw, agg = unique_name("latency-raw"), unique_name("latency-agg")
    create_topic(address, raw, opts.partitions)
    create_topic(address, agg, opts.partitions)
    common = [
        f"--broker-address={address}",
        f"--raw-topic={raw}",
        f"--partitions={opts.partitions}",
    ]
    processor_log = work / "processor.log"
    processor = start_script(
        "sensor_stream_processor.py",
        [
            *common,
            f"--agg-topic={agg}",
            f"--consumer-group={unique_name('latency')}",
            f"--state-dir={work / 'state'}",
            f"--window-seconds={opts.window_seconds}",
            f"--grace-seconds={opts.grace_seconds}",
        ],
        processor_log,
    )
    tracker = ClosingTracker(opts.window_seconds * 1000, opts.grace_seconds * 1000)
    received: dict[WindowId, float] = {}
    reader = plain_consumer(address, **{"fetch.wait.max.ms": 10})
    try:
        wait_for_text(processor_log, "The application started", processor, timeout=60)
        assign_from_start(reader, raw)
        aggregates = plain_consumer(address, **{"fetch.wait.max.ms": 10})
        assign_from_start(aggregates, agg)
        count = round(opts.rate * opts.duration)
        started_ms = time.time() * 1000
        producer = start_script(
            "sensor_stream_producer.py",
            [*common, f"--count={count}", f"--sensors={opts.sensors}", f"--rate={opts.rate:g}"],
            work / "producer.log",
        )
        deadline: float | None = None
        while deadline is None or time.monotonic() < deadline:
            for msg in aggregates.consume(1000, 0.005):
                if msg.error() is None:
                    window = json.loads(msg.value())
                    received[(msg.key().decode(), window["start"])] = time.time() * 1000
            for msg in reader.consume(1000, 0.005):
                if msg.error() is None and msg.key() is not None:
                    tracker.on_reading(msg.key().decode(), msg.timestamp()[1])
            if deadline is None and producer.poll() is not None:
                deadline = time.monotonic() + opts.drain_seconds
            if deadline is not None and tracker.closable_at.keys() <= received.keys():
                break
        aggregates.close()
    finally:
        reader.close()
        processor.terminate()
        processor.wait(30)
    missing = tracker.closable_at.keys() - received.keys()
    # Windows closable during the warm-up are not timed: the processor may still
    # be joining its consumer group then.
    measured_from = started_ms + opts.warmup_seconds * 1000
    latencies = [
        received[w] - at
        for w, at in tracker.closable_at.items()
        if w in received and at >= measured_from
    ]
    return {
        "name": "latency",
        "rate": opts.rate,
        "sensors": opts.sensors,
        "duration_s": opts.duration,
        "window_s": opts.window_seconds,
        "grace_s": opts.grace_seconds,
        "warmup_s": opts.warmup_seconds,
        **summarize(latencies),
        "missing": len(missing),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="readings/s; default 2000")
    parser.add_argument("--sensors", type=int, default=1000, help="default 1000")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds; default 60")
    parser.add_argument("--window-seconds", type=int, default=10, help="default 10")
    parser.add_argument("--grace-seconds", type=int, default=1, help="default 1")
    parser.add_argument("--partitions", type=int, default=2, help="default 2")
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    with broker_address() as address, tempfile.TemporaryDirectory() as work:
        result = measure(opts, address, Path(work))
    print(json.dumps(result), flush=True)
    return 1 if result["missing"] or not result["windows"] else 0


if __name__ == "__main__":
    sys.exit(main())
