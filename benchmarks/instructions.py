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

With --metrics, a third process counts the processor with --metrics-port (a free
port): Prometheus metrics served, on a thread of their own. Nobody scrapes them
during the count, and the counters behind them are kept with metrics on or off
(sensor_lib/metrics.py reads them only when scraped), so the difference is what
serving costs while idle, and the consumer-lag statistics librdkafka reports to
the processor every 5 s with metrics on.

Prints one JSON line per run, then a summary with "baseline/processor": the
baseline's instructions per reading over the processor's, medians of the rounds
(1.0 or more is parity), with --metrics "metrics-on/off": the processor's with
metrics over without, and each round's ratios.
"""

from __future__ import annotations

import json
import shutil
import signal
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
from sensor_lib.processes import find_free_port

PROCESSOR = "sensor_stream_processor.py"
SCRIPTS = {
    "baseline": ("benchmarks/baseline_processor.py", []),
    "processor": (PROCESSOR, ["--log-level=WARNING"]),
}
WITH_METRICS = "processor-metrics"  # the processor with --metrics-port, under --metrics


def scripts(metrics: bool) -> dict[str, tuple[str, list[str]]]:
    """The scripts to count side by side; with metrics, a new free port for the third."""
    if not metrics:
        return dict(SCRIPTS)
    flags = ["--log-level=WARNING", f"--metrics-port={find_free_port()}"]
    return {**SCRIPTS, WITH_METRICS: (PROCESSOR, flags)}


def count_side_by_side(run: Run, outputs: int, metrics: bool) -> list[dict[str, Any]]:
    """Instructions each script executed, every thread, from its start until it had
    written `outputs` windows and stopped; and the seconds until its last window."""
    started = time.monotonic()
    chosen = scripts(metrics)
    counts = {name: run.work / f"{unique_name(name)}.cachegrind" for name in chosen}
    cachegrind = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--fair-sched=yes"]
    wrappers = {name: [*cachegrind, f"--cachegrind-out-file={counts[name]}"] for name in chosen}
    seconds: dict[str, float] = {}
    # Leaving the block waits for every process to exit: valgrind writes its counts then.
    with consumer_groups(run, chosen, wrappers, stop_timeout=run.timeout) as groups:

        def on_done(name: str) -> None:
            seconds[name] = round(time.monotonic() - started, 1)
            for child in groups[name].children:  # stopped, while the others go on
                child.process.send_signal(signal.SIGTERM)

        side_by_side(run, groups, outputs, on_done)
    results = []
    for name, path in counts.items():
        summary = next(n for n in path.read_text().splitlines() if "summary:" in n)
        instructions = int(summary.split()[1])
        results.append({"name": name, "readings": run.readings,
                        "instructions": instructions, "seconds": seconds[name]})  # fmt: skip
    return results


def main(argv: list[str] | None = None) -> int:
    parser = workload_arguments(__doc__, readings=None, timeout=900.0)
    parser.add_argument("--small", type=int, default=10_000, help="readings; default 10000")
    parser.add_argument("--large", type=int, default=30_000, help="readings; default 30000")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; default 1")
    parser.add_argument(
        "--metrics", action="store_true", help="also count the processor with --metrics-port"
    )
    opts = parser.parse_args(argv)
    if opts.large <= opts.small:
        parser.error("--large must be more readings than --small")
    if expected_closed_windows(Workload(opts.small, opts.sensors)) == 0:
        parser.error("--small closes no window: give it three readings per sensor or more")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt install valgrind)")
    per_reading: dict[str, list[float]] = {name: [] for name in scripts(opts.metrics)}
    with broker_address() as address, tempfile.TemporaryDirectory() as work:
        runs = []
        for readings in (opts.small, opts.large):
            workload = Workload(readings, opts.sensors)
            raw = unique_name("raw")
            produce_workload(address, raw, opts.partitions, workload)
            run = Run(address, raw, opts.partitions, workload.total, Path(work), opts.timeout)
            runs.append((run, expected_closed_windows(workload)))
        for _ in range(opts.repeat):
            small, large = (count_side_by_side(run, outputs, opts.metrics) for run, outputs in runs)
            for few, many in zip(small, large, strict=True):
                print(json.dumps(few), json.dumps(many), sep="\n", flush=True)
                more = many["instructions"] - few["instructions"]
                per_reading[few["name"]].append(more / (many["readings"] - few["readings"]))
    print(json.dumps(summarize(per_reading)), flush=True)
    return 0


def summarize(per_reading: dict[str, list[float]]) -> dict[str, Any]:
    """Medians of the rounds' instructions per reading, their ratios, and each round's."""
    pairs = {"baseline/processor": ("baseline", "processor")}
    if WITH_METRICS in per_reading:
        pairs["metrics-on/off"] = (WITH_METRICS, "processor")
    median = {name: statistics.median(counts) for name, counts in per_reading.items()}
    rounds = len(per_reading["processor"])
    return {
        "name": "summary",
        "instructions_per_reading": {name: round(n) for name, n in median.items()},
        **{key: round(median[a] / median[b], 3) for key, (a, b) in pairs.items()},
        "per_round": [
            {key: round(per_reading[a][i] / per_reading[b][i], 3) for key, (a, b) in pairs.items()}
            for i in range(rounds)
        ],
    }


if __name__ == "__main__":
    sys.exit(main())
