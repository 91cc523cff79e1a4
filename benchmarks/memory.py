"""Processor memory over a long stream: RSS must level off once windows close.

    python benchmarks/memory.py                          # 2,000,000 readings, 10,000 sensors
    python benchmarks/memory.py --readings 20000 --sensors 200 --interval 0.5

Produces the deterministic workload of bench_common (one reading per sensor
per second of event time, so every sensor's windows close as the stream goes
on), then runs sensor_stream_processor.py on it as a user would and samples
its resident set size from /proc every --interval seconds, next to how many
aggregates have reached the sink topic. Prints one JSON line per sample and a
summary: RSS when the first windows close, at half of the aggregates, and at
the end. Exits non-zero if the processor stops before every window closes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import (
    REPO,
    Workload,
    assign_from_start,
    broker_address,
    create_topic,
    expected_closed_windows,
    plain_consumer,
    produce_workload,
    unique_name,
)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for process {pid}")


def sample_rss(
    process: subprocess.Popen[bytes], reader: Any, expected: int, opts: argparse.Namespace
) -> list[dict[str, Any]]:
    samples: list[dict[str, Any]] = []
    aggregates = 0
    started = time.monotonic()
    next_sample = started
    while aggregates < expected:
        if process.poll() is not None:
            raise SystemExit(f"the processor exited ({process.returncode}) at {aggregates}")
        if time.monotonic() - started > opts.timeout:
            raise SystemExit(f"{aggregates} of {expected} aggregates after {opts.timeout}s")
        aggregates += sum(1 for m in reader.consume(10_000, 0.1) if m.error() is None)
        if time.monotonic() >= next_sample:
            sample = {
                "t_s": round(time.monotonic() - started, 1),
                "aggregates": aggregates,
                "rss_mib": rss_mib(process.pid),
            }
            samples.append(sample)
            print(json.dumps(sample), flush=True)
            next_sample += opts.interval
    samples.append(
        {
            "t_s": round(time.monotonic() - started, 1),
            "aggregates": aggregates,
            "rss_mib": rss_mib(process.pid),
        }
    )
    return samples


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
    raw, agg = unique_name("memory-raw"), unique_name("memory-agg")
    produced = time.monotonic()
    produce_workload(address, raw, opts.partitions, workload)
    produce_s = round(time.monotonic() - produced, 1)
    create_topic(address, agg, opts.partitions)
    expected = expected_closed_windows(workload)
    reader = plain_consumer(address)
    assign_from_start(reader, agg)
    with (work / "processor.log").open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "sensor_stream_processor.py"),
                f"--broker-address={address}",
                f"--raw-topic={raw}",
                f"--agg-topic={agg}",
                f"--partitions={opts.partitions}",
                f"--consumer-group={unique_name('memory')}",
                f"--state-dir={work / 'state'}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        samples = sample_rss(process, reader, expected, opts)
    finally:
        process.terminate()
        process.wait(30)
        reader.close()
    return {
        "name": "memory",
        "readings": workload.total,
        "sensors": opts.sensors,
        "windows": expected,
        "produce_s": produce_s,
        "process_s": samples[-1]["t_s"],
        **summarize(samples, expected),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=2_000_000, help="default 2000000")
    parser.add_argument("--sensors", type=int, default=10_000, help="default 10000")
    parser.add_argument("--partitions", type=int, default=2, help="default 2")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up after; default 900")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    with broker_address() as address, tempfile.TemporaryDirectory() as work:
        summary = run(opts, address, Path(work))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
