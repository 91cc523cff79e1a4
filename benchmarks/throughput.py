"""Side-by-side throughput: plain consumer, our processor, the tutorial baseline, producer.

    python benchmarks/throughput.py                      # 300k readings, 1k sensors, 2 partitions
    python benchmarks/throughput.py --readings 5000      # a quick check

Uses BROKER_ADDRESS if set, else starts the embedded broker. Produces the
workload once to a fresh topic, then measures on that same data, one after
another, each in its own process (so peak RSS is per measurement):

  limit      a plain confluent-kafka consumer that json.loads every message
  processor  sensor_stream_processor's own parse_args/make_application/build_pipeline
  baseline   benchmarks/baseline_processor.py, the fixed tutorial-style reference
  quix-floor a Quix Streams app that only deserializes (no window, no output):
             the framework's own per-message cost, for context
  producer   sensor_stream_producer.py's max-rate mode (--rate 0), in-process

Consumers are timed from the first message consumed to the last message (limit)
or the last aggregate produced (processors). Prints one JSON line per
measurement, then a summary line with processor/limit and processor/baseline.

It then reads both processors' sink topics and exits non-zero, printing the
differences, unless they hold the same windows: same keys and window bounds,
equal count/min/max, and means equal within 1e-9 relative (the processor's mean
comes from a compensated sum, the baseline's from a plain one; with these
readings they differ, if at all, in the last bits).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench_common import (
    Workload,
    assign_from_start,
    broker_address,
    create_topic,
    expected_closed_windows,
    peak_rss_mib,
    plain_consumer,
    produce_workload,
    read_all,
    unique_name,
)

MEAN_RELATIVE_TOLERANCE = 1e-9
CONSUMERS = ("limit", "processor", "baseline", "quix-floor")


@dataclass(frozen=True)
class Measurement:
    name: str
    readings: int
    seconds: float
    readings_per_s: float
    peak_rss_mib: float

    @classmethod
    def of(cls, name: str, readings: int, seconds: float) -> Measurement:
        return cls(name, readings, round(seconds, 4), round(readings / seconds), peak_rss_mib())


# --- The measurements, each run in a child process ------------------------------


def measure_limit(address: str, topic: str, readings: int) -> Measurement:
    consumer = plain_consumer(address)
    try:
        assign_from_start(consumer, topic)
        seen = 0
        first = 0.0
        while seen < readings:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            if seen == 0:
                first = time.perf_counter()
            json.loads(msg.value())
            seen += 1
        return Measurement.of("limit", readings, time.perf_counter() - first)
    finally:
        consumer.close()


class RunClock:
    """Times an Application from its first processed message to the Nth aggregate."""

    def __init__(self, app: Any, expected: int) -> None:
        self.app = app
        self.expected = expected
        self.aggregates = 0
        self.first = 0.0
        self.last = 0.0

    def on_message_processed(self, topic: str, partition: int, offset: int) -> None:
        self.first = time.perf_counter()
        # Private, but the only per-message hook after construction; unset it so
        # the clock costs nothing after the first message.
        self.app._on_message_processed = None

    def on_aggregate(self, value: Any) -> None:
        self.aggregates += 1
        if self.aggregates == self.expected:
            self.last = time.perf_counter()
            self.app.stop()

    def run(self, name: str, readings: int, profile: Path | None) -> Measurement:
        if not hasattr(self.app, "_on_message_processed"):
            raise RuntimeError("quixstreams changed: Application._on_message_processed is gone")
        self.app._on_message_processed = self.on_message_processed
        if profile is None:
            self.app.run()
        else:
            from pyinstrument import Profiler

            with Profiler(interval=0.0005) as profiler:
                self.app.run()
            profile.write_text(profiler.output_text(unicode=True, show_all=False))
        if self.aggregates != self.expected:
            raise RuntimeError(f"{name} stopped after {self.aggregates} of {self.expected}")
        return Measurement.of(name, readings, self.last - self.first)


def measure_processor(
    address: str,
    topic: str,
    sink: str,
    readings: int,
    expected: int,
    partitions: int,
    profile: Path | None,
    log_level: str = "WARNING",
) -> Measurement:
    import sensor_stream_processor as processor
    from sensor_settings import configure_logging

    with tempfile.TemporaryDirectory() as state_dir:
        args = processor.parse_args(
            [
                f"--broker-address={address}",
                f"--raw-topic={topic}",
                f"--agg-topic={sink}",
                f"--consumer-group={unique_name('processor')}",
                f"--state-dir={state_dir}",
                f"--partitions={partitions}",
                "--auto-offset-reset=earliest",
                # At tens of thousands of readings a second, run as you would in
                # production: the default INFO logs one line per window, which
                # costs several per cent of the rate (--processor-log-level=INFO).
                f"--log-level={log_level}",
            ]
        )
        configure_logging(args.log_level)  # as processor.main() does
        dead_letters = processor.make_dead_letters(args)
        app = processor.make_application(args, dead_letters)
        sdf = processor.build_pipeline(app, args, dead_letters)
        clock = RunClock(app, expected)
        sdf.update(clock.on_aggregate)
        return clock.run("processor", readings, profile)


def measure_baseline(
    address: str,
    topic: str,
    sink: str,
    readings: int,
    expected: int,
    partitions: int,
    profile: Path | None,
) -> Measurement:
    from baseline_processor import make_baseline

    with tempfile.TemporaryDirectory() as state_dir:
        app, sdf = make_baseline(
            address,
            topic,
            sink,
            unique_name("baseline"),
            state_dir,
            partitions,
        )
        clock = RunClock(app, expected)
        sdf.update(clock.on_aggregate)
        return clock.run("baseline", readings, profile)


def measure_floor(address: str, topic: str, readings: int, partitions: int) -> Measurement:
    """Quix Streams' own per-message floor: json deserializer, one no-op step, no state."""
    from quixstreams import Application

    with tempfile.TemporaryDirectory() as state_dir:
        app = Application(
            broker_address=address,
            consumer_group=unique_name("floor"),
            auto_offset_reset="earliest",
            state_dir=state_dir,
            consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1500},
        )
        sdf = app.dataframe(app.topic(topic, value_deserializer="json"))
        clock = RunClock(app, readings)
        sdf.update(clock.on_aggregate)
        return clock.run("quix-floor", readings, None)


def measure_producer(
    address: str, readings: int, sensors: int, partitions: int, rate: float
) -> Measurement:
    """sensor_stream_producer.main() itself, timed from call to return (flush included)."""
    import sensor_stream_producer as producer

    topic = unique_name("producer")
    create_topic(address, topic, partitions)
    started = time.perf_counter()
    status = producer.main(
        [
            f"--broker-address={address}",
            f"--raw-topic={topic}",
            f"--partitions={partitions}",
            f"--count={readings}",
            f"--sensors={sensors}",
            f"--rate={rate:g}",
        ]
    )
    seconds = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"the producer exited with {status}")
    if rate == 0:
        return Measurement.of("producer", readings, seconds)
    # Paced: the rate the broker saw, from the readings' own timestamps.
    # On its clean stop the producer adds one watermark per sensor: leave them out.
    records = read_all(address, topic, readings + sensors)
    stamps = sorted(ts for _, value, ts in records if "watermark" not in value)
    if len(stamps) != readings:
        raise RuntimeError(f"{topic} holds {len(stamps)} readings, expected {readings}")
    span = (stamps[-1] - stamps[0]) / 1000
    return Measurement.of(f"producer-rate-{rate:g}", readings - 1, span)


def run_child(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("--address", required=True)
    parser.add_argument("--topic", default="")
    parser.add_argument("--sink", default="")
    parser.add_argument("--readings", type=int, required=True)
    parser.add_argument("--expected", type=int, default=0)
    parser.add_argument("--sensors", type=int, default=0)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--log-level", default="WARNING")
    opts = parser.parse_args(argv)
    if opts.name == "limit":
        result = measure_limit(opts.address, opts.topic, opts.readings)
    elif opts.name == "processor":
        result = measure_processor(
            opts.address,
            opts.topic,
            opts.sink,
            opts.readings,
            opts.expected,
            opts.partitions,
            opts.profile,
            opts.log_level,
        )
    elif opts.name == "baseline":
        result = measure_baseline(
            opts.address,
            opts.topic,
            opts.sink,
            opts.readings,
            opts.expected,
            opts.partitions,
            opts.profile,
        )
    elif opts.name == "quix-floor":
        result = measure_floor(opts.address, opts.topic, opts.readings, opts.partitions)
    elif opts.name == "producer":
        result = measure_producer(
            opts.address, opts.readings, opts.sensors, opts.partitions, opts.rate
        )
    else:
        raise SystemExit(f"unknown measurement {opts.name}")
    print("RESULT " + json.dumps(asdict(result)), flush=True)


# --- The parent: produce once, run each measurement, compare --------------------


def spawn(name: str, log: Path, *flags: str, script: str = __file__) -> dict[str, Any]:
    """Run one measurement in a fresh process of `script`; return its RESULT line."""
    with log.open("w") as stderr:
        done = subprocess.run(
            [sys.executable, script, "--child", name, *flags],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            check=False,
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(f"measurement {name} failed ({done.returncode}):\n{tail}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def window_table(records: list[tuple[str, Any, int]]) -> dict[tuple[str, int, int], Any]:
    table: dict[tuple[str, int, int], Any] = {}
    for key, value, _ in records:
        window = (key, value["start"], value["end"])
        if window in table:
            raise SystemExit(f"window {window} emitted twice")
        table[window] = value["temperature"]
    return table


def same_stats(left: dict[str, Any], right: dict[str, Any]) -> bool:
    return (
        left["count"] == right["count"]
        and left["min"] == right["min"]
        and left["max"] == right["max"]
        and math.isclose(left["mean"], right["mean"], rel_tol=MEAN_RELATIVE_TOLERANCE)
    )


def window_differences(processor: dict[Any, Any], baseline: dict[Any, Any]) -> list[str]:
    problems = [f"only in processor: {w}" for w in sorted(processor.keys() - baseline.keys())]
    problems += [f"only in baseline: {w}" for w in sorted(baseline.keys() - processor.keys())]
    for window in sorted(processor.keys() & baseline.keys()):
        if not same_stats(processor[window], baseline[window]):
            problems.append(f"{window}: processor {processor[window]} != {baseline[window]}")
    return problems


def ratio(numerator: dict[str, Any], denominator: dict[str, Any]) -> float:
    return round(numerator["readings_per_s"] / denominator["readings_per_s"], 3)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=300_000, help="default 300000")
    parser.add_argument("--sensors", type=int, default=1000, help="default 1000")
    parser.add_argument("--partitions", type=int, default=2, help="default 2")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of (a)-(c); default 1")
    parser.add_argument(
        "--rate-seconds",
        type=float,
        default=10.0,
        help="seconds for each paced producer check at 1000/s and 10000/s; 0 skips them",
    )
    parser.add_argument(
        "--processor-log-level",
        default="WARNING",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="the processor's --log-level; default WARNING (at INFO it logs every window)",
    )
    parser.add_argument("--profile-dir", type=Path, help="write pyinstrument profiles here")
    parser.add_argument("--log-dir", type=Path, help="keep each measurement's log here")
    return parser.parse_args(argv)


def run(opts: argparse.Namespace, address: str, log_dir: Path) -> int:
    workload = Workload(readings=opts.readings, sensors=opts.sensors)
    topic = unique_name("raw")
    produce_workload(address, topic, opts.partitions, workload)
    expected = expected_closed_windows(workload)
    common = [
        f"--address={address}",
        f"--topic={topic}",
        f"--readings={workload.total}",
        f"--expected={expected}",
        f"--partitions={opts.partitions}",
    ]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in CONSUMERS}
    for round_ in range(opts.repeat):
        for name in CONSUMERS:
            flags = [*common, f"--sink={topic}-agg-{name}-{round_}"]
            if opts.profile_dir and name in ("processor", "baseline"):
                opts.profile_dir.mkdir(parents=True, exist_ok=True)
                flags.append(f"--profile={opts.profile_dir / f'{name}-{round_}.txt'}")
            if name == "processor":
                flags.append(f"--log-level={opts.processor_log_level}")
            result = spawn(name, log_dir / f"{name}-{round_}.log", *flags)
            results[name].append(result)
            print(json.dumps(result), flush=True)
    producer_flags = [
        f"--address={address}",
        f"--readings={workload.total}",
        f"--sensors={opts.sensors}",
        f"--partitions={opts.partitions}",
    ]
    print(json.dumps(spawn("producer", log_dir / "producer.log", *producer_flags)), flush=True)
    if opts.rate_seconds > 0:
        for rate in (1000, 10_000):
            flags = [*producer_flags[:1], f"--readings={round(rate * opts.rate_seconds)}"]
            flags += [*producer_flags[2:], f"--rate={rate}"]
            paced = spawn("producer", log_dir / f"producer-rate-{rate}.log", *flags)
            paced["target_per_s"] = rate
            paced["within_2_percent"] = abs(paced["readings_per_s"] / rate - 1) <= 0.02
            print(json.dumps(paced), flush=True)

    best = {name: max(runs, key=lambda r: r["readings_per_s"]) for name, runs in results.items()}
    per_round = [
        {
            "processor/limit": ratio(results["processor"][i], results["limit"][i]),
            "processor/baseline": ratio(results["processor"][i], results["baseline"][i]),
        }
        for i in range(opts.repeat)
    ]
    problems: list[str] = []
    windows = 0
    for round_ in range(opts.repeat):
        tables = {
            name: window_table(read_all(address, f"{topic}-agg-{name}-{round_}", expected))
            for name in ("processor", "baseline")
        }
        windows = len(tables["processor"])
        if windows != expected:
            problems.append(f"round {round_}: {windows} windows, expected {expected}")
        problems += window_differences(tables["processor"], tables["baseline"])
    summary = {
        "name": "summary",
        "readings": workload.total,
        "sensors": opts.sensors,
        "partitions": opts.partitions,
        "processor_log_level": opts.processor_log_level,
        "windows": windows,
        "expected_windows": expected,
        "identical_windows": not problems,
        "processor/limit": ratio(best["processor"], best["limit"]),
        "processor/baseline": ratio(best["processor"], best["baseline"]),
        "per_round": per_round,
    }
    print(json.dumps(summary), flush=True)
    if problems:
        print(f"FAIL: {len(problems)} window differences:", *problems[:20], sep="\n")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        run_child(argv[1:])
        return 0
    opts = parse_args(argv)
    with broker_address() as address, tempfile.TemporaryDirectory() as scratch:
        log_dir = opts.log_dir or Path(scratch)
        log_dir.mkdir(parents=True, exist_ok=True)
        return run(opts, address, log_dir)


if __name__ == "__main__":
    sys.exit(main())
