"""Throughput: plain consumer, processor (1..N processes), baseline, sink, producer.

    python benchmarks/throughput.py                      # 300k readings, 1k sensors, 2 partitions
    python benchmarks/throughput.py --readings 5000      # a quick check
    python benchmarks/throughput.py --sensor-interval-ms 10000  # nearly every reading closes one

Uses BROKER_ADDRESS if set, else starts a broker (BENCH_BROKER=embedded|kafka|cluster),
and starts a PostgreSQL server of its own for the sink. Produces the workload
once to a fresh topic, then runs each consumer on that same data, one after
another, as a process started with its flags:

  limit         reference_consumers.py limit: confluent-kafka + json.loads per message
  baseline      baseline_processor.py, the fixed tutorial-style reference
  processor     sensor_stream_processor.py --log-level=WARNING (see --processor-log-level)
  processor-xN  N processors in one consumer group, each with its own --state-dir
  quix-floor    reference_consumers.py quix-floor: Quix Streams with no window, for context
  sink          sensor_stream_sink.py on the processor's whole aggregate topic, into a new
                table (POSTGRES_URL in its environment), with --sink-commit-interval
  producer      sensor_stream_producer.py --rate 0, and paced at 1,000/s and 10,000/s

and then, each round, baseline and processor side by side: both at once, each in
its own group on the same data, measured by the CPU time each spends per reading.

The harness times each consumer from its consumer group's join to the last
output read from its output topic (start-up is `startup_s`; see timing.py);
where windows were out before that (`outputs_at_start`: a process of a group
that worked before the others had joined), the readings that closed them (in
production order) are left out of `readings_timed` and the rates. It times
the sink from its group's join to the table holding a row per window
(SELECT count(*)); the sink writes at each checkpoint, so that time includes up
to one commit interval of waiting for the last. Prints one JSON line per
measurement (the processors' with `windows_per_s`, the sink's with
`rows_per_s`), then a summary with processor/limit, processor/baseline,
scaling/N and sink/processor (the sink's rows/s over the processor's windows/s:
how far the sink keeps up), best of --repeat rounds and per round, and
"processor/baseline per core": baseline CPU per reading / processor CPU per
reading, side by side (the median of the rounds, and per round).

It then reads the output topics back and exits 1, printing the differences,
unless the baseline, every processor-xN and the sink's table hold the
processor's windows: same keys and bounds, equal count/min/max, means equal
within 1e-9 relative (the processor's mean comes from a compensated sum, the
baseline's from a plain one), and the sink's final summary line counts every
window written and no write error.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

import repo  # noqa: F401  (before sensor_lib: the repository on sys.path)
from bench_broker import broker_address, create_topics, unique_name
from bench_errors import BenchmarkError, print_summary
from groups import GroupAdmin, Run, group_is_stable
from sampling import Sampler, machine_busy_seconds
from sensor_lib.consuming import read_to_end
from sensor_lib.errors import exit_status
from sensor_lib.postgres_server import PostgresServer
from sensor_lib.settings import BrokerSettings
from supervision import Child, wait_until
from timing import cpu_side_by_side, measurement, time_consumers
from workload import (
    Workload,
    expected_closed_windows,
    produce_workload,
    readings_to_close,
    workload_arguments,
)

MEAN_RELATIVE_TOLERANCE = 1e-9
REFERENCES = "benchmarks/reference_consumers.py"
PROCESSOR = "sensor_stream_processor.py"
SINK = "sensor_stream_sink.py"
SINK_SUMMARY = re.compile(
    r"Final summary: aggregates=(\d+), rows written=(\d+), write errors=(\d+)"
)


def window_table(messages: list[Any]) -> dict[tuple[str, int, int], Any]:
    table: dict[tuple[str, int, int], Any] = {}
    for msg in messages:
        value = json.loads(msg.value())
        window = (msg.key().decode(), value["start"], value["end"])
        if window in table:
            raise BenchmarkError(f"window {window} emitted twice")
        table[window] = value["temperature"]
    return table


def same_stats(left: dict[str, Any], right: dict[str, Any]) -> bool:
    return (
        left["count"] == right["count"]
        and left["min"] == right["min"]
        and left["max"] == right["max"]
        and math.isclose(left["mean"], right["mean"], rel_tol=MEAN_RELATIVE_TOLERANCE)
    )


def window_differences(
    processor: dict[Any, Any], other: dict[Any, Any], other_name: str = "baseline"
) -> list[str]:
    problems = [f"only in processor: {w}" for w in sorted(processor.keys() - other.keys())]
    problems += [f"only in {other_name}: {w}" for w in sorted(other.keys() - processor.keys())]
    for window in sorted(processor.keys() & other.keys()):
        if not same_stats(processor[window], other[window]):
            problems.append(f"{window}: processor {processor[window]} != {other[window]}")
    return problems


def ratio(numerator: dict[str, Any], denominator: dict[str, Any], key: str) -> float:
    """How many times faster: by readings_per_s, or by wall_s (start to last window)."""
    if key == "wall_s":
        return round(denominator[key] / numerator[key], 3)
    return round(numerator[key] / denominator[key], 3)


def leave_out_head_start(result: dict[str, Any], workload: Workload, windows: int) -> None:
    """Add `windows_per_s` to a processor's measurement (time_consumers) of `windows`
    windows. Windows out before the clock started (one process of a group working before
    the others had joined) were work done outside the timed span: the readings that closed
    them are left out of `readings_timed` and the rates."""
    seconds = max(result["seconds"], 0.001)  # printed to the millisecond
    if early := result.get("outputs_at_start", 0):
        timed = workload.total - readings_to_close(workload, early)
        result["readings_timed"] = timed
        result["readings_per_s"] = round(timed / seconds)
    result["windows_per_s"] = round((windows - early) / seconds)


def measure_producer(run: Run, sensors: int, count: int, rate: float) -> dict[str, Any]:
    """The producer script against a new topic, timed by the readings' own timestamps
    (it stamps each with the moment it produced it): at --rate 0, from the first
    reading to the process's exit, final flush included; paced, first to last."""
    topic = unique_name("producer")
    create_topics(run.address, run.partitions, topic)
    started = time.time()
    flags = [f"--broker-address={run.address}", f"--raw-topic={topic}", f"--count={count}"]
    flags += [f"--sensors={sensors}", f"--rate={rate:g}", "--quiet"]
    child = Child("sensor_stream_producer.py", flags, run.work / f"{topic}.log")
    try:
        peak = child.wait(run.timeout)
    finally:
        child.stop()
    ended = time.time()
    everything = read_to_end(BrokerSettings(broker_address=run.address), topic, timeout=120)
    readings = [m for m in everything if b'"watermark"' not in m.value()]
    stamps = sorted(m.timestamp()[1] / 1000 for m in readings)
    if len(stamps) != count:
        raise BenchmarkError(f"{topic} holds {len(stamps)} readings, expected {count}")
    if rate == 0:
        result = measurement("producer", count, ended - stamps[0], peak_rss_mib=peak)
        result["startup_s"] = round(stamps[0] - started, 3)
        return result
    result = measurement(f"producer-rate-{rate:g}", count - 1, stamps[-1] - stamps[0])
    within = abs(result["readings_per_s"] / rate - 1) <= 0.02
    return {**result, "peak_rss_mib": peak, "target_per_s": rate, "within_2_percent": within}


def table_rows(connection: Any, table: str) -> dict[tuple[str, int, int], Any]:
    """The sink's table as window_table gives the processor's windows."""
    with connection.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT sensor_id, (extract(epoch FROM window_start) * 1000)::bigint,"
                " (extract(epoch FROM window_end) * 1000)::bigint, count, min, max, mean"
                " FROM {}"
            ).format(sql.Identifier(table))
        )
        return {
            (sensor, start, end): {"count": count, "min": low, "max": high, "mean": mean}
            for sensor, start, end, count, low, high, mean in cur.fetchall()
        }


def row_count(connection: Any, table: str) -> int:
    """SELECT count(*); 0 before the sink has made its table."""
    try:
        with connection.cursor() as cur:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
            return cur.fetchone()[0]
    except psycopg2.errors.UndefinedTable:
        return 0


def measure_sink(
    run: Run, aggregates: str, windows: dict[Any, Any], database: str, commit_interval: float
) -> tuple[dict[str, Any], list[str]]:
    """sensor_stream_sink.py writing a whole aggregate topic into a new table, timed from
    its consumer group's Stable to the table holding a row per window (SELECT count(*),
    polled every 20 ms). The rows land at the sink's checkpoints, so the time includes up
    to one --commit-interval of waiting for the last one.

    Returns the measurement and the problems found: rows that differ from `windows` (the
    processor's, read from the topic), or a final summary line that does not say every
    window was written without an error.
    """
    table = unique_name("rows").replace("-", "_")
    group = unique_name("sink")
    flags = [
        f"--broker-address={run.address}",
        f"--agg-topic={aggregates}",
        f"--consumer-group={group}",
        f"--sink-table={table}",
        f"--commit-interval={commit_interval:g}",
    ]
    env = {**os.environ, "POSTGRES_URL": database}  # the database never goes in a flag
    admin = GroupAdmin(run.address)
    connection = psycopg2.connect(database, connect_timeout=10)
    connection.autocommit = True
    sink = Child(SINK, flags, run.work / f"{group}.log", env=env)
    try:
        sample_memory = Sampler(sink.rss_mib)
        ready = wait_until(lambda: group_is_stable(admin, group), "sink group", 120, [sink])
        cpu, busy = sink.cpu_seconds(), machine_busy_seconds()

        def all_written() -> bool:
            sample_memory()
            return row_count(connection, table) >= len(windows)

        done = wait_until(all_written, f"{len(windows)} rows", run.timeout, [sink])
        cores = (sink.cpu_seconds() - cpu) / (done - ready)
        machine_cores = (machine_busy_seconds() - busy) / (done - ready)  # PostgreSQL's too
        sink.stop()
        written = table_rows(connection, table)
        with connection.cursor() as cur:
            cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
    finally:
        sink.stop()
        connection.close()
    seconds = round(done - ready, 3)
    problems = window_differences(windows, written, "sink")
    final = SINK_SUMMARY.findall(sink.log.read_text(errors="replace"))
    if [tuple(map(int, line)) for line in final] != [(len(windows), len(windows), 0)]:
        problems.append(f"sink: final summary {final}, expected {len(windows)} rows, no errors")
    result = {
        "name": "sink",
        "rows": len(written),
        "seconds": seconds,
        "rows_per_s": round(len(written) / seconds),
        "commit_interval_s": commit_interval,
        "peak_rss_mib": sink.peak_rss_mib,
        "cores": round(cores, 2),
        "machine_cores": round(machine_cores, 2),
        "startup_s": round(ready - sink.started, 3),
    }
    return result, problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = workload_arguments(__doc__, timeout=600.0)
    parser.add_argument(
        "--sensor-interval-ms",
        type=int,
        default=1000,
        help="event time between one sensor's readings; default 1000 (one window close per "
        "10 readings); 10000, one reading per window, makes nearly every reading close one",
    )
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the consumers; default 1")
    parser.add_argument(
        "--instances",
        type=int,
        nargs="+",
        default=[1, 2],
        help="processor processes in one group to compare; default 1 2",
    )
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
    parser.add_argument(
        "--sink-commit-interval",
        type=float,
        default=1.0,
        help="the sink's --commit-interval: it writes its rows at each checkpoint; default 1 s "
        "(0 skips the sink and its PostgreSQL server)",
    )
    parser.add_argument("--log-dir", type=Path, help="keep every process's log here")
    return parser.parse_args(argv)


def run_consumers(
    opts: argparse.Namespace, run: Run, workload: Workload, database: str | None
) -> dict[str, Any]:
    """Every round of the consumers, and of the sink on the processor's aggregates; returns
    the summary's figures and the problems found."""
    expected = expected_closed_windows(workload)
    count = f"--count={run.readings}"
    processor = (PROCESSOR, [f"--log-level={opts.processor_log_level}"], expected)
    baseline = ("benchmarks/baseline_processor.py", [], expected)
    plan: list[tuple[str, tuple[str, list[str], int], int]] = [
        ("limit", (REFERENCES, ["limit", count], 1), 1),
        ("baseline", baseline, 1),
        ("processor", processor, 1),
        *[(f"processor-x{n}", processor, n) for n in opts.instances if n > 1],
        ("quix-floor", (REFERENCES, ["quix-floor", count], 1), 1),
    ]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in plan}
    sinks: list[dict[str, Any]] = []
    per_core: list[float] = []
    problems: list[str] = []
    windows = 0
    broker = BrokerSettings(broker_address=run.address)
    for round_ in range(opts.repeat):
        tables, topics = {}, {}
        for name, (script, flags, outputs), instances in plan:
            result, topics[name] = time_consumers(run, name, script, flags, outputs, instances)
            if instances > 1:
                result["instances"] = instances
            if outputs == expected:
                leave_out_head_start(result, workload, outputs)
                tables[name] = window_table(read_to_end(broker, topics[name], timeout=120))
            print(json.dumps(result), flush=True)
            results[name].append(result)
        if database is not None:
            sink, found = measure_sink(
                run, topics["processor"], tables["processor"], database, opts.sink_commit_interval
            )
            print(json.dumps(sink), flush=True)
            sinks.append(sink)
            problems += [f"round {round_}: {problem}" for problem in found]
        pair = {"baseline": baseline[:2], "processor": processor[:2]}
        if round_ % 2:  # alternate which one starts first
            pair = dict(reversed(pair.items()))
        cpu = cpu_side_by_side(run, pair, expected)
        for result, sink_topic in cpu.values():
            print(json.dumps(result), flush=True)
            tables[result["name"]] = window_table(read_to_end(broker, sink_topic, timeout=120))
        spent = {name: result["cpu_s"] for name, (result, _) in cpu.items()}
        per_core.append(
            round(spent["baseline"] / spent["processor"], 3) if spent["processor"] else math.nan
        )
        windows = len(tables["processor"])
        if windows != expected:
            problems.append(f"round {round_}: {windows} windows, expected {expected}")
        for name, table in tables.items():
            if name != "processor":
                problems += window_differences(tables["processor"], table, name)
    scaled = [name for name, _, n in plan if n > 1]

    def ratios(of: dict[str, dict[str, Any]], sink: dict[str, Any] | None) -> dict[str, float]:
        figures = {
            "processor/limit": ratio(of["processor"], of["limit"], "readings_per_s"),
            "processor/baseline": ratio(of["processor"], of["baseline"], "readings_per_s"),
        }
        for name in scaled:
            n = name.removeprefix("processor-x")
            figures[f"scaling/{n}"] = ratio(of[name], of["processor"], "readings_per_s")
            figures[f"wall_scaling/{n}"] = ratio(of[name], of["processor"], "wall_s")
        if sink is not None:  # sink rows/s over processor windows/s: how far the sink keeps up
            figures["sink/processor"] = round(
                sink["rows_per_s"] / of["processor"]["windows_per_s"], 3
            )
        return figures

    def best(runs: list[dict[str, Any]], key: str = "readings_per_s") -> dict[str, Any]:
        return max(runs, key=lambda r: r[key])

    per_round = [
        ratios({n: r[i] for n, r in results.items()}, sinks[i] if sinks else None)
        for i in range(opts.repeat)
    ]
    for figures, ratio_per_core in zip(per_round, per_core, strict=True):
        figures["processor/baseline per core"] = ratio_per_core
    return {
        "windows": windows,
        "problems": problems,
        **ratios(
            {name: best(runs) for name, runs in results.items()},
            best(sinks, "rows_per_s") if sinks else None,
        ),
        "processor/baseline per core": statistics.median(per_core),
        "per_round": per_round,
    }


def run_producers(opts: argparse.Namespace, run: Run) -> None:
    print(json.dumps(measure_producer(run, opts.sensors, run.readings, 0)), flush=True)
    if opts.rate_seconds > 0:
        for rate in (1000, 10_000):
            paced = measure_producer(run, opts.sensors, round(rate * opts.rate_seconds), rate)
            print(json.dumps(paced), flush=True)


@contextmanager
def database(opts: argparse.Namespace) -> Iterator[str | None]:
    """A PostgreSQL server of the benchmark's own for the sink (its URL), unless it is skipped."""
    if opts.sink_commit_interval <= 0:
        yield None
        return
    with PostgresServer(Path(tempfile.mkdtemp(prefix="bench-postgres-"))) as server:
        yield server.url


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    workload = Workload(opts.readings, opts.sensors, sensor_interval_ms=opts.sensor_interval_ms)
    expected = expected_closed_windows(workload)
    with (
        broker_address() as address,
        tempfile.TemporaryDirectory() as scratch,
        database(opts) as postgres_url,
    ):
        work = opts.log_dir or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        raw = unique_name("raw")
        produce_workload(address, raw, opts.partitions, workload)
        run = Run(address, raw, opts.partitions, workload.total, work, opts.timeout)
        figures = run_consumers(opts, run, workload, postgres_url)
        run_producers(opts, run)
    problems = figures.pop("problems")
    summary = {
        "name": "summary",
        "readings": workload.total,
        "sensors": opts.sensors,
        "sensor_interval_ms": opts.sensor_interval_ms,
        "partitions": opts.partitions,
        "processor_log_level": opts.processor_log_level,
        "expected_windows": expected,
        "identical_windows": not problems,
        **figures,
    }
    return print_summary(summary, problems, "window differences")


if __name__ == "__main__":
    sys.exit(exit_status(main, logging.getLogger("benchmark")))
