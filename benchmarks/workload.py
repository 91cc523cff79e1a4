"""The benchmark workload: deterministic readings, and the windows they close.

M sensors each send one reading every `sensor_interval_ms` of *event* time, in
rounds (Sensor1..SensorM, then again), in the raw topic's documented format. The
start time is chosen so that the last round lands exactly `grace` past a window
end: the last reading of every sensor closes a window, so "last window" means
"every reading processed".

    BROKER_ADDRESS=127.0.0.1:19092 python benchmarks/workload.py --topic bench-raw

fills a topic with the workload, for example to profile the processor on it.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Producer

import repo  # noqa: F401  (before sensor_lib: the repository on sys.path)
from bench_broker import create_topics
from bench_errors import BenchmarkError
from sensor_lib.errors import UsageError, exit_status
from sensor_lib.event_time import from_epoch_ms
from sensor_lib.producing import DeliveryReport, produce

# Event times start at 2024-01-01T00:00:00Z: results do not depend on the host clock.
ORIGIN_MS = 1_704_067_200_000


@dataclass(frozen=True)
class Workload:
    readings: int
    sensors: int
    sensor_interval_ms: int = 1000
    window_ms: int = 10_000
    grace_ms: int = 1_000
    seed: int = 7

    @property
    def rounds(self) -> int:
        return -(-self.readings // self.sensors)

    @property
    def total(self) -> int:
        """Readings actually produced: whole rounds, so every sensor ends together."""
        return self.rounds * self.sensors

    @property
    def start_ms(self) -> int:
        last_round_offset = (self.rounds - 1) * self.sensor_interval_ms
        return ORIGIN_MS + (self.grace_ms - last_round_offset) % self.window_ms

    def event_time_ms(self, index: int) -> int:
        round_, slot = divmod(index, self.sensors)
        return (
            self.start_ms
            + round_ * self.sensor_interval_ms
            + slot * self.sensor_interval_ms // self.sensors
        )

    def last_time_ms(self, slot: int) -> int:
        """The event time of sensor `slot`'s last reading."""
        return self.event_time_ms((self.rounds - 1) * self.sensors + slot)

    def readings_in_order(self) -> Iterator[tuple[int, int, float]]:
        """(sensor slot, event time ms, value) in production order: a random walk per sensor."""
        rng = random.Random(self.seed)
        values = [rng.uniform(18.0, 26.0) for _ in range(self.sensors)]
        for index in range(self.total):
            slot = index % self.sensors
            values[slot] += rng.gauss(0.0, 0.15)
            yield slot, self.event_time_ms(index), round(values[slot], 2)

    def messages(self) -> Iterator[tuple[bytes, bytes, int]]:
        """(key, value, timestamp ms) in production order, in the raw topic's format."""
        for slot, ts_ms, value in self.readings_in_order():
            reading = {"ts": from_epoch_ms(ts_ms).isoformat(), "value": value}
            yield f"Sensor{slot + 1}".encode(), orjson.dumps(reading), ts_ms


def expected_closed_windows(workload: Workload) -> int:
    """Windows that per-key closing must emit: end <= that sensor's last time - grace."""
    closed = 0
    for slot in range(workload.sensors):
        first = workload.event_time_ms(slot)
        last = workload.last_time_ms(slot)
        first_start = first - first % workload.window_ms
        # Window starts first_start, first_start + W, ... whose end <= last - grace.
        latest_end = last - workload.grace_ms
        if latest_end >= first_start + workload.window_ms:
            closed += (latest_end - first_start) // workload.window_ms
    return closed


def window_stats(workload: Workload) -> dict[tuple[str, int, int], dict[str, Any]]:
    """(sensor, start, end) -> count, min, max and mean of every window the workload's
    readings fall in, closed or not."""
    values: dict[tuple[int, int], list[float]] = {}
    for slot, ts_ms, value in workload.readings_in_order():
        values.setdefault((slot, ts_ms - ts_ms % workload.window_ms), []).append(value)
    return {
        (f"Sensor{slot + 1}", start, start + workload.window_ms): {
            "count": len(window),
            "min": min(window),
            "max": max(window),
            "mean": math.fsum(window) / len(window),
        }
        for (slot, start), window in values.items()
    }


def closed_windows(workload: Workload, windows: dict[tuple[str, int, int], Any]) -> dict:
    """The model of what the processor emits: those of `windows` that per-key closing
    closes (as expected_closed_windows counts), end <= that sensor's last time - grace."""
    last = {f"Sensor{s + 1}": workload.last_time_ms(s) for s in range(workload.sensors)}
    return {w: stats for w, stats in windows.items() if w[2] <= last[w[0]] - workload.grace_ms}


def readings_to_close(workload: Workload, windows: int) -> int:
    """How many readings, in production order, it takes to close `windows` windows: the
    work a group had done when that many of its windows were out. Windows close in bursts
    (every sensor's in the same round), so their count is no linear measure of the work."""
    closed_by = [0] * workload.sensors  # windows closed so far, per sensor
    closed = 0
    for index in range(workload.total):
        if closed >= windows:
            return index
        slot = index % workload.sensors
        first = workload.event_time_ms(slot)
        first_start = first - first % workload.window_ms
        latest_end = workload.event_time_ms(index) - workload.grace_ms
        now = max(0, (latest_end - first_start) // workload.window_ms)
        closed += now - closed_by[slot]
        closed_by[slot] = now
    return workload.total


def workload_arguments(
    doc: str,
    *,
    readings: int | None = 300_000,
    sensors: int | list[int] = 1000,
    timeout: float | None = None,
) -> argparse.ArgumentParser:
    """A parser described by `doc`'s first line, with the workload's flags every benchmark
    takes: --readings (unless None), --sensors (one or more, as the default is) and
    --partitions, and --timeout if given."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if readings is not None:
        parser.add_argument("--readings", type=int, default=readings, help=f"default {readings}")
    many = {"nargs": "+"} if isinstance(sensors, list) else {}
    shown = " ".join(map(str, sensors)) if isinstance(sensors, list) else sensors
    parser.add_argument("--sensors", type=int, default=sensors, help=f"default {shown}", **many)
    parser.add_argument("--partitions", type=int, default=2, help="default 2")
    if timeout is not None:
        parser.add_argument("--timeout", type=float, default=timeout, help=f"default {timeout:g} s")
    return parser


def produce_workload(address: str, topic: str, partitions: int, workload: Workload) -> None:
    """Create `topic` and produce the workload to it, every reading confirmed."""
    create_topics(address, partitions, topic)
    # Idempotent: a retried batch stays in order, so every run sees the same windows.
    producer = Producer({"bootstrap.servers": address, "linger.ms": 50, "enable.idempotence": True})
    report = DeliveryReport(logging.getLogger("benchmark"))
    for key, value, ts_ms in workload.messages():
        produce(producer, topic, value=value, key=key, timestamp=ts_ms, on_delivery=report)
    undelivered = producer.flush(60)
    if report.failed or undelivered:
        raise BenchmarkError(f"{report.failed} failed and {undelivered} undelivered readings")


def main(argv: list[str] | None = None) -> int:
    parser = workload_arguments("Fill a topic with the benchmark workload.")
    parser.add_argument("--topic", required=True)
    opts = parser.parse_args(argv)
    address = os.environ.get("BROKER_ADDRESS")
    if not address:
        raise UsageError("set BROKER_ADDRESS: the topic must outlive this command")
    workload = Workload(opts.readings, opts.sensors)
    produce_workload(address, opts.topic, opts.partitions, workload)
    print(f"{workload.total} readings on {opts.topic}; {expected_closed_windows(workload)} windows")
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, logging.getLogger("benchmark")))
