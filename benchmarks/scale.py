"""Cost as the sensors grow: rate, CPU, memory, state and rebuild time at each size.

    python benchmarks/scale.py                     # 1k, 10k and 100k sensors
    python benchmarks/scale.py --sensors 1000000   # a million: 10 million readings

For each number of sensors, produces the workload (workload.py): --rounds readings per
sensor (10: one closed window each, and one left open), and more rounds where that
makes fewer than --min-readings, so that every rate is timed over the same work.
Then:

  run       sensor_stream_processor.py in a new group, timed from its group's Stable to
            its last window read: readings/s, CPU µs per reading (every thread), its
            resident set when the first window is read, at its peak and at the end
            (sampled every 0.1 s); every window checked against the workload's model
  state     the processor stopped (SIGTERM): its state folder's size on disk, and the
            records on its changelog topics
  rebuild   one more reading, for Sensor1, far enough ahead to close its open window;
            then the processor again, in the same group with an empty state folder,
            timed from its start to that window read (its state rebuilt from the
            changelog first), and that window checked

Prints one JSON line per size, then a summary with each size's rate and CPU per reading
over the first size's. Exits 1 if a window differs from the model.
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

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

import repo  # noqa: F401  (before sensor_lib: the repository on sys.path)
from bench_broker import broker_address, unique_name
from bench_errors import BenchmarkError, print_summary
from groups import ConsumerGroup, GroupAdmin, Run, consumer_flags
from sensor_lib.consuming import read_to_end
from sensor_lib.errors import exit_status
from sensor_lib.event_time import from_epoch_ms
from sensor_lib.settings import BrokerSettings
from supervision import Child, wait_until
from tail import records
from throughput import same_stats
from workload import (
    Workload,
    closed_windows,
    produce_workload,
    window_stats,
    workload_arguments,
)

PROCESSOR = "sensor_stream_processor.py"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = workload_arguments(
        __doc__, readings=None, sensors=[1000, 10_000, 100_000], timeout=1800.0
    )
    parser.add_argument("--rounds", type=int, default=10, help="readings per sensor; default 10")
    parser.add_argument(
        "--min-readings",
        type=int,
        default=1_000_000,
        help="more rounds for a size with fewer readings than this, so that every rate is "
        "timed over as much work; default 1000000",
    )
    parser.add_argument(
        "--processor-flag", action="append", default=[], help="a flag for the processor"
    )
    return parser.parse_args(argv)


def folder_mib(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def changelog_records(address: str, group: str, timeout: float) -> int:
    """Records on the group's changelog topics (before any compaction), counted by
    reading them: the embedded broker under-reports high watermarks (docs/brokers.md)."""
    broker = BrokerSettings(broker_address=address)
    topics = AdminClient(broker.librdkafka_config()).list_topics(timeout=30).topics
    count = 0

    def counted(message: Any) -> bool:
        nonlocal count
        count += 1
        return False

    for name in topics:
        if name.startswith("changelog__") and group in name:
            read_to_end(broker, name, timeout=timeout, keep=counted)
    return count


def check_windows(msgs: list[Any], model: dict[tuple[str, int, int], Any]) -> list[str]:
    """Differences between aggregates read and the model: each model window exactly once.
    Checked one message at a time, not as throughput.py's window_table: at a million
    sensors, a second table of nine million windows would take gigabytes."""
    problems = []
    for msg in msgs:
        value = orjson.loads(msg.value())
        window = (msg.key().decode(), value["start"], value["end"])
        expected = model.pop(window, None)
        if expected is None or not same_stats(value["temperature"], expected):
            problems.append(f"{window}: {value['temperature']} != model {expected}")
    return problems + [f"missing: {window}" for window in list(model)[:20]]


def measure_run(run: Run, group: ConsumerGroup, expected: int) -> tuple[dict, list[Any]]:
    """The processor on the whole workload, timed from its group's Stable; and its windows."""
    admin = GroupAdmin(run.address)
    stable = wait_until(lambda: group.is_stable(admin), "group Stable", run.timeout, group.children)
    cpu_at_stable = group.cpu_seconds()
    child = group.children[0]
    msgs: list[Any] = []
    first_close: float | None = None

    def all_out() -> bool:
        nonlocal first_close
        group.sample_memory()
        msgs.extend(records(group.tail.consume(10_000, 0.1)))
        if msgs and first_close is None:
            first_close = child.rss_mib()
        return len(msgs) >= expected

    done = wait_until(all_out, f"{expected} windows", run.timeout, group.children, 0)
    cpu = group.cpu_seconds() - cpu_at_stable
    result = {
        "readings_per_s": round(run.readings / (done - stable)),
        "cpu_us_per_reading": round(cpu / run.readings * 1e6, 1),
        "rss_first_close_mib": first_close,
        "rss_peak_mib": group.peak_rss_mib(),
        "rss_end_mib": child.rss_mib(),
        "windows": len(msgs),
    }
    return result, msgs


def sensor1_open_window(workload: Workload) -> tuple[str, int, int]:
    """The window Sensor1's last reading left open: (sensor, start, end)."""
    last = workload.last_time_ms(0)
    start = last - last % workload.window_ms
    return "Sensor1", start, start + workload.window_ms


def close_sensor1(address: str, raw: str, workload: Workload) -> None:
    """Produce a reading for Sensor1 that closes its open window."""
    closing = sensor1_open_window(workload)[2] + workload.window_ms + workload.grace_ms
    producer = Producer({"bootstrap.servers": address})
    reading = {"ts": from_epoch_ms(closing).isoformat(), "value": 20.0}
    producer.produce(raw, key=b"Sensor1", value=orjson.dumps(reading), timestamp=closing)
    if producer.flush(30):
        raise BenchmarkError("the closing reading for Sensor1 was not delivered")


def next_offsets(msgs: list[Any], partitions: int) -> list[int]:
    """Each partition's offset after the windows read. Not its high watermark: the
    embedded broker under-reports that (docs/brokers.md)."""
    ends = [0] * partitions
    for msg in msgs:
        ends[msg.partition()] = max(ends[msg.partition()], msg.offset() + 1)
    return ends


def measure_rebuild(
    run: Run, group: str, agg: str, ends: list[int], workload: Workload, model: dict
) -> tuple[dict, list[str]]:
    """A processor with an empty state folder, from its start to Sensor1's window (`model`
    its stats), read from `ends` on the aggregates topic."""
    close_sensor1(run.address, run.raw, workload)
    tail = Consumer({"bootstrap.servers": run.address, "group.id": unique_name("rebuild")})
    tail.assign([TopicPartition(agg, p, end) for p, end in enumerate(ends)])
    state = run.work / "rebuilt-state"
    flags = consumer_flags(run.address, run.raw, agg, group, state)
    child = Child(PROCESSOR, flags, run.work / "rebuild.log")
    msgs: list[Any] = []

    def window_out() -> bool:
        msgs.extend(records(tail.consume(100, 0.1)))
        return bool(msgs)

    try:
        done = wait_until(window_out, "the window after a rebuild", run.timeout, [child])
    finally:
        child.stop()
        tail.close()
    return {"rebuild_s": round(done - child.started, 1)}, check_windows(msgs, model)


def measure(address: str, opts: argparse.Namespace, sensors: int, work: Path) -> tuple:
    """One size: its workload produced, the processor's run on it, its state, and a
    rebuild; the size's figures, and the windows that differ from the model."""
    rounds = max(opts.rounds, -(-opts.min_readings // sensors))
    workload = Workload(readings=sensors * rounds, sensors=sensors)
    raw = unique_name("scale-raw")
    started = time.monotonic()
    produce_workload(address, raw, opts.partitions, workload)
    produce_s = round(time.monotonic() - started, 1)
    windows = window_stats(workload)
    model = closed_windows(workload, windows)
    reopened = sensor1_open_window(workload)
    rebuild_model = {reopened: windows.pop(reopened)}
    del windows  # the open ones: a million sensors' worth
    run = Run(address, raw, opts.partitions, workload.total, work, opts.timeout)
    group = ConsumerGroup(run, "scale", PROCESSOR, opts.processor_flag)
    try:
        result, msgs = measure_run(run, group, len(model))
    finally:
        group.stop()
    problems = check_windows(msgs, model)
    state = {
        "state_mib": folder_mib(group.state_dirs[0]),
        "changelog_records": changelog_records(address, group.group, opts.timeout),
    }
    ends = next_offsets(msgs, opts.partitions)
    rebuild, found = measure_rebuild(run, group.group, group.sink, ends, workload, rebuild_model)
    size = {
        "sensors": sensors,
        "readings": workload.total,
        "rounds": rounds,
        "produce_s": produce_s,
    }
    return {**size, **result, **state, **rebuild}, problems + found


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    sizes, problems = [], []
    with broker_address() as address, tempfile.TemporaryDirectory() as folder:
        for sensors in opts.sensors:
            work = Path(folder) / f"sensors-{sensors}"
            work.mkdir()
            size, found = measure(address, opts, sensors, work)
            print(json.dumps(size), flush=True)
            sizes.append(size)
            problems += [f"{sensors} sensors: {problem}" for problem in found]
    first = sizes[0]
    summary = {
        "name": "scale",
        "sizes": {
            s["sensors"]: {
                "rate_over_first": round(s["readings_per_s"] / first["readings_per_s"], 2),
                "cpu_over_first": round(s["cpu_us_per_reading"] / first["cpu_us_per_reading"], 2),
                "rss_peak_mib": s["rss_peak_mib"],
                "rebuild_s": s["rebuild_s"],
            }
            for s in sizes
        },
    }
    return print_summary(summary, problems, "windows that differ from the model")


if __name__ == "__main__":
    sys.exit(exit_status(main, logging.getLogger("benchmark")))
