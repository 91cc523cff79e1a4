"""Before/after of single settings, as ratios from one run on one topic.

    python benchmarks/variants.py                    # 300k readings, 2 rounds, every variant
    python benchmarks/variants.py --rounds 3 --readings 100000 --variants log-info commit-1s

Each variant is sensor_stream_processor.py with one setting changed from how
throughput.py runs it ("shipped": --log-level=WARNING, every other setting at
its default), measured by the harness exactly as throughput.py measures the
processor. Variants alternate within each round, so each ratio compares
neighbours in time. With exactly-once, the last window counts when a
read_committed reader sees it, after the processor's last commit.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path

import repo  # noqa: F401  (before sensor_lib: the repository on sys.path)
from bench_broker import broker_address, unique_name
from groups import Run
from sensor_lib.errors import exit_status
from timing import time_consumers
from workload import Workload, expected_closed_windows, produce_workload, workload_arguments

SHIPPED = ["--log-level=WARNING"]
VARIANTS = {
    "log-info": ["--log-level=INFO"],  # the default level: one log line per window
    "commit-1s": ["--commit-interval=1"],
    "commit-30s": ["--commit-interval=30"],
    "one-record-batches": ['--producer-config={"batch.num.messages": 1}'],  # the embedded broker's
    "exactly-once": ["--processing-guarantee=exactly-once"],
    "fetch-wait-500": ['--consumer-config={"fetch.wait.max.ms": 500}'],  # librdkafka's default
}


def main(argv: list[str] | None = None) -> int:
    parser = workload_arguments(__doc__)
    parser.add_argument("--rounds", type=int, default=2, help="default 2")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    opts = parser.parse_args(argv)
    workload = Workload(readings=opts.readings, sensors=opts.sensors)
    expected = expected_closed_windows(workload)
    rates: dict[str, list[int]] = {name: [] for name in ["shipped", *opts.variants]}
    with broker_address() as address, tempfile.TemporaryDirectory() as work:
        raw = unique_name("raw")
        produce_workload(address, raw, opts.partitions, workload)
        run = Run(address, raw, opts.partitions, workload.total, Path(work))
        for round_ in range(opts.rounds):
            for name in rates:
                flags = [*SHIPPED, *VARIANTS.get(name, [])]
                result, _ = time_consumers(run, name, "sensor_stream_processor.py", flags, expected)
                print(json.dumps({**result, "round": round_}), flush=True)
                rates[name].append(result["readings_per_s"])
    summary = {
        f"shipped/{name}": [
            round(a / b, 3) for a, b in zip(rates["shipped"], rates[name], strict=True)
        ]
        for name in opts.variants
    }
    print(json.dumps({"name": "summary", **summary}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, logging.getLogger("benchmark")))
