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

All the runs go at once, side by side, each in a consumer group of its own: a
count still moves with how long a run takes (polls that find nothing cost
instructions too, and under valgrind a run takes minutes), and side by side all
meet the same machine. --scripts picks the scripts (default: baseline and processor);
--metrics adds processor-metrics, the processor with --metrics-port (a free
port). Nobody scrapes it during the count, and the counters behind the metrics
are kept whether they are served or not (sensor_lib/metrics.py reads them only
when scraped), so the difference is what serving costs while idle (a thread),
and the consumer-lag statistics librdkafka hands the processor every 5 s with
metrics on.

Prints one JSON line per run, then a summary: the medians of the rounds'
instructions per reading, "baseline/processor" (the baseline's over the
processor's; 1.0 or more is parity) and "metrics-on/off" (processor-metrics'
over the processor's) where both were counted, and each round's ratios.
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import repo  # noqa: F401  (before sensor_lib: the repository on sys.path)
from bench_broker import broker_address, unique_name
from groups import Run, consumer_groups
from sensor_lib.errors import CannotRun, exit_status
from sensor_lib.servers import find_free_port
from timing import side_by_side
from workload import Workload, expected_closed_windows, produce_workload, workload_arguments

PROCESSOR = "sensor_stream_processor.py"
SCRIPTS = {
    "baseline": ("benchmarks/baseline_processor.py", []),
    "processor": (PROCESSOR, ["--log-level=WARNING"]),
}
WITH_METRICS = "processor-metrics"  # the processor with --metrics-port
RATIOS = {
    "baseline/processor": ("baseline", "processor"),
    "metrics-on/off": (WITH_METRICS, "processor"),
}


def scripts(
    names: Sequence[str], taken: set[int] | None = None
) -> dict[str, tuple[str, list[str]]]:
    """The named scripts with their flags; the processor with metrics on a free port (one
    not in `taken`, which gets it)."""
    taken = set() if taken is None else taken
    chosen = {}
    for name in names:
        if name == WITH_METRICS:
            while (port := find_free_port()) in taken:
                pass
            taken.add(port)
            chosen[name] = (PROCESSOR, ["--log-level=WARNING", f"--metrics-port={port}"])
        else:
            chosen[name] = SCRIPTS[name]
    return chosen


def count_all(runs: Sequence[tuple[Run, int]], names: Sequence[str]) -> list[dict[str, Any]]:
    """Each script on each run's topic, all at once, each in a group of its own: the
    instructions each executed, every thread, from its start until it had written the
    run's windows and stopped; and the seconds until its last window."""
    started = time.monotonic()
    commands, on, outputs, ports = {}, {}, {}, set()
    for run, windows in runs:
        for name, command in scripts(names, ports).items():
            key = f"{name}-{run.readings}"
            commands[key], on[key], outputs[key] = command, run, windows
    first = runs[0][0]
    counts = {key: first.work / f"{unique_name(key)}.cachegrind" for key in commands}
    cachegrind = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--fair-sched=yes"]
    wrappers = {key: [*cachegrind, f"--cachegrind-out-file={counts[key]}"] for key in commands}
    seconds: dict[str, float] = {}
    # Leaving the block waits for every process to exit: valgrind writes its counts then.
    with consumer_groups(first, commands, wrappers, first.timeout, on) as groups:

        def on_done(key: str) -> None:
            seconds[key] = round(time.monotonic() - started, 1)
            groups[key].terminate()  # it stops while the others go on

        side_by_side(first, groups, outputs, on_done)
    results = []
    for name in names:
        for run, _ in runs:
            key = f"{name}-{run.readings}"
            summary = next(n for n in counts[key].read_text().splitlines() if "summary:" in n)
            instructions = int(summary.split()[1])
            results.append(
                {
                    "name": name,
                    "readings": run.readings,
                    "instructions": instructions,
                    "seconds": seconds[key],
                }
            )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = workload_arguments(__doc__, readings=None, timeout=900.0)
    parser.add_argument("--small", type=int, default=10_000, help="readings; default 10000")
    parser.add_argument("--large", type=int, default=30_000, help="readings; default 30000")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; default 1")
    parser.add_argument(
        "--scripts",
        nargs="+",
        choices=[*SCRIPTS, WITH_METRICS],
        default=list(SCRIPTS),
        help=f"what to count side by side; default {' '.join(SCRIPTS)}",
    )
    parser.add_argument(
        "--metrics", action="store_true", help=f"also count {WITH_METRICS} (--metrics-port)"
    )
    opts = parser.parse_args(argv)
    names = list(dict.fromkeys([*opts.scripts, *[WITH_METRICS] * opts.metrics]))
    if opts.large <= opts.small:
        parser.error("--large must be more readings than --small")
    if expected_closed_windows(Workload(opts.small, opts.sensors)) == 0:
        parser.error("--small closes no window: give it three readings per sensor or more")
    if shutil.which("valgrind") is None:
        raise CannotRun("valgrind is not installed (Debian: apt install valgrind)")
    per_reading: dict[str, list[float]] = {name: [] for name in names}
    with broker_address() as address, tempfile.TemporaryDirectory() as work:
        runs = []
        for readings in (opts.small, opts.large):
            workload = Workload(readings, opts.sensors)
            raw = unique_name("raw")
            produce_workload(address, raw, opts.partitions, workload)
            run = Run(address, raw, opts.partitions, workload.total, Path(work), opts.timeout)
            runs.append((run, expected_closed_windows(workload)))
        for _ in range(opts.repeat):
            results = count_all(runs, names)
            for line in results:
                print(json.dumps(line), flush=True)
            for few, many in zip(results[::2], results[1::2], strict=True):
                more = many["instructions"] - few["instructions"]
                per_reading[few["name"]].append(more / (many["readings"] - few["readings"]))
    print(json.dumps(summarize(per_reading)), flush=True)
    return 0


def summarize(per_reading: dict[str, list[float]]) -> dict[str, Any]:
    """Medians of the rounds' instructions per reading; the ratios of those counted (RATIOS),
    of the medians and of each round."""
    pairs = {key: pair for key, pair in RATIOS.items() if set(pair) <= per_reading.keys()}
    median = {name: statistics.median(counts) for name, counts in per_reading.items()}
    rounds = len(next(iter(per_reading.values())))
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
    sys.exit(exit_status(main, logging.getLogger("benchmark")))
