"""Processor memory over a long stream: RSS must level off once windows close.

    python benchmarks/memory.py                          # 2,000,000 readings, 10,000 sensors
    python benchmarks/memory.py --readings 20000 --sensors 200 --interval 0.5

Produces the benchmark workload (workload.py: one reading per sensor per second of
event time, so every sensor's windows close as the stream goes on), then runs
sensor_stream_processor.py on it as a user would (its default INFO log level)
and samples its resident set size (psutil) every --interval seconds, next to how
many aggregates have reached the sink topic. Prints one JSON line per sample
and a summary: RSS when the first windows close, at half of the aggregates, at
the end, and the peak (of samples taken every 0.1 s). Exits non-zero if the
processor stops first.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import repo  # noqa: F401  (before sensor_lib: the repository on sys.path)
from bench_broker import broker_address, create_topics, unique_name
from groups import consumer_flags
from sampling import Sampler
from sensor_lib.errors import exit_status
from supervision import Child, wait_until
from tail import reader, records
from workload import Workload, expected_closed_windows, produce_workload, workload_arguments


def summarize(samples: list[dict[str, Any]], expected: int) -> dict[str, Any]:
    closing = [s for s in samples if s["aggregates"] > 0]
    half = [s for s in samples if s["aggregates"] >= expected / 2]
    return {
        "rss_first_close_mib": closing[0]["rss_mib"],
        "rss_half_mib": half[0]["rss_mib"],
        "rss_end_mib": samples[-1]["rss_mib"],
        "rss_max_mib": max(s["rss_mib"] for s in samples),
        "growth_half_to_end_mib": round(samples[-1]["rss_mib"] - half[0]["rss_mib"], 1),
    }


def run(opts: argparse.Namespace, address: str, work: Path) -> dict[str, Any]:
    workload = Workload(readings=opts.readings, sensors=opts.sensors)
    raw, agg, group = unique_name("memory-raw"), unique_name("memory-agg"), unique_name("memory")
    produced = time.monotonic()
    produce_workload(address, raw, opts.partitions, workload)
    produce_s = round(time.monotonic() - produced, 1)
    create_topics(address, opts.partitions, agg)
    expected = expected_closed_windows(workload)
    tail = reader(address, [agg])
    flags = consumer_flags(address, raw, agg, group, work / "state")
    processor = Child("sensor_stream_processor.py", flags, work / "processor.log")
    started = next_sample = time.monotonic()
    samples: list[dict[str, Any]] = []
    aggregates = 0
    sample_peak = Sampler(processor.rss_mib)

    def sample() -> None:
        rss = processor.rss_mib()
        at = round(time.monotonic() - started, 1)
        samples.append({"t_s": at, "aggregates": aggregates, "rss_mib": rss})
        print(json.dumps(samples[-1]), flush=True)

    def all_out() -> bool:
        nonlocal aggregates, next_sample
        sample_peak()
        aggregates += len(records(tail.consume(10_000, 0.1)))
        if time.monotonic() >= next_sample:
            sample()
            next_sample += opts.interval
        return aggregates >= expected

    try:
        wait_until(all_out, f"{expected} aggregates", opts.timeout, [processor], 0)
        sample()
        peak = processor.peak_rss_mib
    finally:
        processor.stop()
        tail.close()
    return {
        "name": "memory",
        "readings": workload.total,
        "sensors": opts.sensors,
        "windows": expected,
        "produce_s": produce_s,
        "process_s": samples[-1]["t_s"],
        **summarize(samples, expected),
        "peak_rss_mib": peak,
    }


def main(argv: list[str] | None = None) -> int:
    parser = workload_arguments(__doc__, readings=2_000_000, sensors=10_000, timeout=900.0)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    opts = parser.parse_args(argv)
    with broker_address() as address, tempfile.TemporaryDirectory() as work:
        summary = run(opts, address, Path(work))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, logging.getLogger("benchmark")))
