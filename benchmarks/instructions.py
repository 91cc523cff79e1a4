"""Machine instructions per reading, processor against baseline: counted, not timed.

    python benchmarks/instructions.py                     # 10k and 30k readings, 1k sensors
    python benchmarks/instructions.py --small 2000 --large 4000 --sensors 100

On a VM with noisy neighbours no timing resolves a gap of a few per cent; an
instruction count comes closer. Each script runs under valgrind's cachegrind
(`--cache-sim=no`: instructions only, every thread; `--fair-sched=yes`, or
valgrind can starve librdkafka's heartbeat thread until the group drops the
consumer), started with the flags throughput.py gives it, once on a topic of
`--small` readings and once on one of `--large`, and is stopped (SIGTERM) once
its last window is on its output topic. The difference between its two counts
over the difference in readings is its instructions per reading, with start-up
and shut-down taken out. The broker runs outside valgrind. Needs valgrind
(Debian: `apt install valgrind`).

The baseline and the processor run side by side, each in its own consumer group
on the same topic: a count still moves with how long a run takes (polls that find
nothing cost instructions too, and under valgrind a run takes minutes), and side
by side both meet the same machine.

Prints one JSON line per run, then a summary with "baseline/processor": the
baseline's instructions per reading over the processor's, medians of the rounds
(1.0 or more is parity), and each round's ratio.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import (
    Run,
    Workload,
    broker_address,
    consumer_groups,
    expected_closed_windows,
    produce_workload,
    side_by_side,
    unique_name,
    workload_arguments,
)

SCRIPTS = {
    "baseline": ("benchmarks/baseline_processor.py", []),
    "processor": ("sensor_stream_processor.py", ["--log-level=WARNING"]),
}


def count_side_by_side(run: Run, outputs: int) -> list[dict[str, Any]]:
    """Instructions each script executed, every thread, from its start until it had
    written `outputs` windows and stopped; and the seconds that took under valgrind."""
    started = time.monotonic()
    counts = {name: run.work / f"{unique_name(name)}.cachegrind" for name in SCRIPTS}
    cachegrind = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--fair-sched=yes"]
    wrappers = {name: [*cachegrind, f"--cachegrind-out-file={counts[name]}"] for name in SCRIPTS}
    results = []
    with consumer_groups(run, SCRIPTS, wrappers, stop_timeout=run.timeout) as groups:

        def on_done(name: str) -> None:
            groups[name].stop(timeout=run.timeout)  # valgrind writes its counts at exit
            summary = next(n for n in counts[name].read_text().splitlines() if "summary:" in n)
            results.append({"name": name, "readings": run.readings,
                            "instructions": int(summary.split()[1]),
                            "seconds": round(time.monotonic() - started, 1)})  # fmt: skip

        side_by_side(run, groups, outputs, on_done)
    return sorted(results, key=lambda r: r["name"])


def main(argv: list[str] | None = None) -> int:
    parser = workload_arguments(__doc__, readings=None, timeout=900.0)
    parser.add_argument("--small", type=int, default=10_000, help="readings; default 10000")
    parser.add_argument("--large", type=int, default=30_000, help="readings; default 30000")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; default 1")
    opts = parser.parse_args(argv)
    if opts.large <= opts.small:
        parser.error("--large must be more readings than --small")
    if expected_closed_windows(Workload(opts.small, opts.sensors)) == 0:
        parser.error("--small closes no window: give it three readings per sensor or more")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt install valgrind)")
    per_reading: dict[str, list[float]] = {name: [] for name in SCRIPTS}
    with broker_address() as address, tempfile.TemporaryDirectory() as work:
        runs = []
        for readings in (opts.small, opts.large):
            workload = Workload(readings, opts.sensors)
            raw = unique_name("raw")
            produce_workload(address, raw, opts.partitions, workload)
            run = Run(address, raw, opts.partitions, workload.total, Path(work), opts.timeout)
            runs.append((run, expected_closed_windows(workload)))
        for _ in range(opts.repeat):
            small, large = (count_side_by_side(run, outputs) for run, outputs in runs)
            for few, many in zip(small, large, strict=True):
                print(json.dumps(few), json.dumps(many), sep="\n", flush=True)
                more = many["instructions"] - few["instructions"]
                per_reading[few["name"]].append(more / (many["readings"] - few["readings"]))
    median = {name: statistics.median(counts) for name, counts in per_reading.items()}
    baseline, processor = per_reading["baseline"], per_reading["processor"]
    summary = {
        "name": "summary",
        "instructions_per_reading": {name: round(n) for name, n in median.items()},
        "baseline/processor": round(median["baseline"] / median["processor"], 3),
        "per_round": [round(b / p, 3) for b, p in zip(baseline, processor, strict=True)],
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
