"""Before/after of single changes, as ratios from one run on one topic.

    python benchmarks/variants.py                    # 300k readings, 2 rounds
    python benchmarks/variants.py --rounds 3 --readings 100000

Without editing the project's scripts, each variant patches one thing in a
child process and then runs throughput.py's own measurement:

  processor               as shipped (orjson.loads, --log-level=WARNING)
  processor-json          parse_reading with json.loads instead of orjson.loads
  processor-info          as shipped, at its default --log-level=INFO (one line per window)
  producer                as shipped (orjson.dumps, str(uuid.uuid4()) per message)
  producer-json           encode_reading with json.dumps(...).encode() instead of orjson.dumps
  producer-no-uuid        a constant header instead of uuid4: the most any faster id could gain

Variants alternate within each round, so each ratio compares neighbours in time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench_common import (
    Workload,
    broker_address,
    expected_closed_windows,
    produce_workload,
    unique_name,
)

PROCESSORS = ("processor", "processor-json", "processor-info")
PRODUCERS = ("producer", "producer-json", "producer-no-uuid")


def patch(variant: str) -> None:
    if variant == "processor-json":
        import sensor_stream_processor

        sensor_stream_processor.orjson = types.SimpleNamespace(  # type: ignore[assignment]
            loads=json.loads, JSONDecodeError=json.JSONDecodeError
        )
    elif variant == "producer-json":
        import sensor_stream_producer

        sensor_stream_producer.encode_reading = lambda reading: json.dumps(reading).encode()
    elif variant == "producer-no-uuid":
        import sensor_stream_producer

        fixed = "00000000-0000-4000-8000-000000000000"
        sensor_stream_producer.uuid = types.SimpleNamespace(uuid4=lambda: fixed)  # type: ignore[assignment]


def run_child(argv: list[str]) -> None:
    import throughput

    parser = argparse.ArgumentParser()
    parser.add_argument("variant")
    parser.add_argument("--address", required=True)
    parser.add_argument("--topic", default="")
    parser.add_argument("--readings", type=int, required=True)
    parser.add_argument("--expected", type=int, default=0)
    parser.add_argument("--sensors", type=int, default=0)
    parser.add_argument("--partitions", type=int, required=True)
    opts = parser.parse_args(argv)
    patch(opts.variant)
    if opts.variant in PROCESSORS:
        result = throughput.measure_processor(
            opts.address,
            opts.topic,
            unique_name(f"sink-{opts.variant}"),
            opts.readings,
            opts.expected,
            opts.partitions,
            None,
            "INFO" if opts.variant == "processor-info" else "WARNING",
        )
    else:
        result = throughput.measure_producer(
            opts.address, opts.readings, opts.sensors, opts.partitions, 0
        )
    print("RESULT " + json.dumps({**asdict(result), "name": opts.variant}), flush=True)


def spawn(variant: str, log: Path, *flags: str) -> dict[str, Any]:
    import throughput

    return throughput.spawn(variant, log, *flags, script=__file__)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        run_child(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=300_000, help="default 300000")
    parser.add_argument("--sensors", type=int, default=1000, help="default 1000")
    parser.add_argument("--partitions", type=int, default=2, help="default 2")
    parser.add_argument("--rounds", type=int, default=2, help="default 2")
    opts = parser.parse_args(argv)
    workload = Workload(readings=opts.readings, sensors=opts.sensors)
    with broker_address() as address, tempfile.TemporaryDirectory() as scratch:
        topic = unique_name("raw")
        produce_workload(address, topic, opts.partitions, workload)
        common = [f"--address={address}", f"--partitions={opts.partitions}"]
        consumer_flags = [
            *common,
            f"--topic={topic}",
            f"--readings={workload.total}",
            f"--expected={expected_closed_windows(workload)}",
        ]
        producer_flags = [*common, f"--readings={workload.total}", f"--sensors={opts.sensors}"]
        rates: dict[str, list[int]] = {v: [] for v in (*PROCESSORS, *PRODUCERS)}
        for round_ in range(opts.rounds):
            for variants, flags in ((PROCESSORS, consumer_flags), (PRODUCERS, producer_flags)):
                for variant in variants:
                    result = spawn(variant, Path(scratch) / f"{variant}-{round_}.log", *flags)
                    result["round"] = round_
                    rates[variant].append(result["readings_per_s"])
                    print(json.dumps(result), flush=True)
        summary: dict[str, Any] = {"name": "summary"}
        for variant, reference in (
            ("processor-json", "processor"),
            ("processor-info", "processor"),
            ("producer-json", "producer"),
            ("producer-no-uuid", "producer"),
        ):
            summary[f"{reference}/{variant}"] = [
                round(a / b, 3) for a, b in zip(rates[reference], rates[variant], strict=True)
            ]
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
