"""The benchmark scripts, run small against the session broker; no speed is asserted.

Each script runs once, as small as still shows its results are right. Under valgrind
(instructions.py) start-up is most of the cost, so that test counts on the embedded
broker in both suites. Also the pieces whose correctness the benchmarks rest on: the
workload's window arithmetic, the window comparison, the CPU-time source, the latency
tracker, and the producer's and processor's orjson paths (which agree with json).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import REPO, Broker, descendants, wait_until_stopped

sys.path.insert(0, str(REPO / "benchmarks"))

from confluent_kafka.admin import AdminClient

import instructions
import sensor_stream_processor as processor
import sensor_stream_producer as producer
from bench_broker import create_topics, unique_name
from groups import ConsumerGroup, Run
from latency import ClosingTracker, percentile
from sampling import machine_busy_seconds
from supervision import wait_until
from throughput import window_differences
from workload import (
    Workload,
    closed_windows,
    expected_closed_windows,
    readings_to_close,
    window_stats,
)


def run_benchmark(
    script: str, broker_address: str, *flags: str, timeout: float = 300
) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *flags],
        cwd=REPO,
        env={**os.environ, "BROKER_ADDRESS": broker_address},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.mark.integration
@pytest.mark.timeout(240)  # ten consumer groups, one after another, each joined in seconds
def test_throughput_runs_and_every_processor_and_the_sink_match_the_processor(
    broker_address: str,
) -> None:
    lines = run_benchmark(
        "throughput.py", broker_address, "--readings=2000", "--sensors=100", "--rate-seconds=0.1"
    )
    by_name = {line["name"]: line for line in lines}
    consumers = {"limit", "processor", "processor-x2", "baseline", "quix-floor"}
    producers = {"producer", "producer-rate-1000", "producer-rate-10000"}
    side_by_side = {"baseline-side-by-side", "processor-side-by-side"}
    assert set(by_name) == consumers | producers | side_by_side | {"sink", "summary"}
    for name in side_by_side:
        assert by_name[name]["readings"] == 2000
        assert by_name[name]["cpu_us_per_reading"] > 0
    for name in consumers | {"producer"}:
        assert by_name[name]["readings"] == 2000
        assert by_name[name]["peak_rss_mib"] > 0
    # Two processors can finish 2,000 readings before both have joined (on Kafka, whose
    # tests' broker lets a group's first member start alone): then nothing is timed.
    for name in (consumers | {"producer"}) - {"processor-x2"}:
        assert by_name[name]["readings_per_s"] > 0
    two = by_name["processor-x2"]
    timed = 2000 - readings_to_close(Workload(2000, 100), two.get("outputs_at_start", 0))
    assert two.get("readings_timed", 2000) == timed
    # (The printed seconds are rounded to the millisecond.)
    assert two["readings_per_s"] == pytest.approx(timed / two["seconds"], rel=0.02, abs=1)
    for name in consumers:
        assert 0 < by_name[name]["startup_s"] < by_name[name]["wall_s"]
        # Reported; their values are not checked here, as 2,000 readings can take less
        # than a clock tick. Their sources are: the machine-busy tests below, and the
        # side-by-side cpu_s.
        assert {"cores", "machine_cores"} <= by_name[name].keys()
    assert by_name["processor-x2"]["instances"] == 2
    summary = by_name["summary"]
    # 20 rounds of 1 s per sensor: windows closed by each sensor's last reading.
    assert summary["expected_windows"] == 100 * 2
    assert summary["windows"] == summary["expected_windows"]
    # The baseline, each processor-xN and the sink's table hold the processor's windows.
    assert summary["identical_windows"] is True
    processor = by_name["processor"]
    assert processor["windows_per_s"] == round(200 / processor["seconds"])
    sink = by_name["sink"]
    assert sink["rows"] == 200
    assert sink["rows_per_s"] == round(200 / sink["seconds"])
    assert sink["commit_interval_s"] == 1.0
    assert sink["peak_rss_mib"] > 0
    ratios = {"processor/limit", "processor/baseline", "scaling/2", "wall_scaling/2"}
    ratios |= {"processor/baseline per core", "sink/processor"}
    assert ratios <= summary.keys()
    assert ratios <= summary["per_round"][0].keys()
    # The sink's rows/s over the processor's windows/s, from their own lines.
    keep_up = round(sink["rows_per_s"] / processor["windows_per_s"], 3)
    assert summary["sink/processor"] == summary["per_round"][0]["sink/processor"] == keep_up
    # Per core: the baseline's CPU time over the processor's, from their own lines.
    cpu = {name: by_name[f"{name}-side-by-side"]["cpu_s"] for name in ("baseline", "processor")}
    per_core = round(cpu["baseline"] / cpu["processor"], 3)
    assert summary["per_round"][0]["processor/baseline per core"] == per_core
    assert summary["processor/baseline per core"] == per_core  # the median of one round


@pytest.mark.integration
def test_several_processors_are_timed_only_once_each_has_its_partitions(
    broker_address: str, tmp_path: Path
) -> None:
    # The embedded broker lists no group members and answers each member's join on its
    # own clock, about a second apart, so a group can be Stable before its second
    # processor has any partition. Quix Streams logs its partitions' arrival at DEBUG.
    run = Run(broker_address, unique_name("raw"), 2, 0, tmp_path)
    create_topics(broker_address, run.partitions, run.raw)
    admin = AdminClient({"bootstrap.servers": broker_address})
    group = ConsumerGroup(run, "ready", "sensor_stream_processor.py", ["--log-level=DEBUG"], 2)
    try:
        wait_until(lambda: group.is_stable(admin), "two processors", 60, group.children)
        assigned = ["assigning partitions" in child.log.read_text() for child in group.children]
    finally:
        group.stop()
    assert assigned == [True, True]


def test_machine_busy_time_is_user_nice_system_irq_and_softirq_from_proc_stat() -> None:
    # Counters since boot: read by name before and after, they bracket the benchmarks'
    # reading. Idle, iowait or steal counted in, or user left out, misses by minutes.
    def busy_by_name() -> float:
        names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
        ticks = dict(zip(names, map(int, Path("/proc/stat").read_text().split()[1:9]), strict=True))
        busy = ("user", "nice", "system", "irq", "softirq")
        return sum(ticks[name] for name in busy) / os.sysconf("SC_CLK_TCK")

    before = busy_by_name()
    reading = machine_busy_seconds()
    assert before - 1e-6 <= reading <= busy_by_name() + 1e-6  # psutil sums floats


def burn(seconds: float, spent: list[float]) -> None:
    """Hash until this thread has used `seconds` of CPU (hashlib lets go of the GIL, so
    threads burn every core); add the CPU time used to `spent`."""
    data = bytes(1 << 20)
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        hashlib.sha256(data).digest()
    spent.append(time.thread_time() - start)


def test_machine_busy_time_includes_the_cpu_time_of_a_thread_on_every_core() -> None:
    # With every core busy, idle time barely moves: counting it instead of busy
    # time, or leaving out user time, falls short. /proc/stat counts in 10 ms ticks.
    cores = os.cpu_count() or 1
    spent: list[float] = []
    threads = [threading.Thread(target=burn, args=(0.3, spent)) for _ in range(cores)]
    before = machine_busy_seconds()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert machine_busy_seconds() - before >= sum(spent) - 0.01 * (cores + 1)


@pytest.mark.integration
def test_latency_runs_times_every_closed_window_and_splits_it(
    broker_address: str, tmp_path: Path
) -> None:
    lines = run_benchmark(
        "latency.py",
        broker_address,
        "--rate=200",
        "--sensors=20",
        "--duration=3",
        "--window-seconds=1",
        "--grace-seconds=0",
        "--warmup-seconds=0",
        f"--keep={tmp_path}",
        "--configs=shipped",
    )
    assert [line["config"] for line in lines] == ["shipped"]
    for result in lines:
        assert result["missing"] == 0
        # 3 s of readings close at least the first two 1-s windows of every sensor.
        assert result["windows"] >= 2 * 20
        assert 0 <= result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"] <= result["max_ms"]
        assert set(result["hops"]) == {"producer", "processor", "reader"}
        assert set(result["processor_split"]) == {"until_emitted", "emitted_to_broker"}
        assert result["stamps"] in ("log-append-time", "reader")
    # --keep: per config, its processor's log and one line per timed window, whose
    # moments give the summary's slowest window and slowest hops.
    for result in lines:
        [kept] = tmp_path.glob(f"*{result['config']}-*-windows.jsonl")
        windows = [json.loads(line) for line in kept.read_text().splitlines()]
        assert len(windows) == result["windows"]
        moments = ["closable_ms", "reading_on_broker_ms", "emitted_ms", "aggregate_on_broker_ms"]
        moments.append("read_ms")
        spans = {
            "": (0, 4),
            "producer": (0, 1),
            "processor": (1, 3),
            "reader": (3, 4),
            "until_emitted": (1, 2),
            "emitted_to_broker": (2, 3),
        }
        for hop, (begin, end) in spans.items():
            slowest = max(w[moments[end]] - w[moments[begin]] for w in windows)
            summary = result["hops"].get(hop) or result["processor_split"].get(hop) or result
            assert round(slowest, 1) == summary["max_ms"], hop
        # The processor logs a window after its closing reading was produced, and before
        # anyone can read its aggregate.
        assert all(w["closable_ms"] <= w["emitted_ms"] <= w["read_ms"] for w in windows)
        log = kept.with_name(kept.name.replace("-windows.jsonl", "-processor.log"))
        assert "Aggregating" in log.read_text()


@pytest.mark.integration
def test_memory_runs_and_reports_rss(broker_address: str) -> None:
    lines = run_benchmark(
        "memory.py", broker_address, "--readings=4000", "--sensors=100", "--interval=0.2"
    )
    summary = lines[-1]
    assert summary["name"] == "memory"
    assert summary["windows"] == expected_closed_windows(Workload(4000, 100))
    assert len(lines) >= 2  # samples, then the summary
    assert 0 < summary["rss_first_close_mib"] <= summary["rss_max_mib"] <= summary["peak_rss_mib"]


@pytest.mark.integration
def test_scale_checks_every_window_and_rebuilds_the_state_from_the_changelog(
    broker_address: str,
) -> None:
    # scale.py exits 1 unless every window, and the one closed after the rebuild, match
    # the workload's model: run_benchmark asserts exit 0.
    lines = run_benchmark(
        "scale.py", broker_address, "--sensors", "50", "200", "--min-readings=0", timeout=240
    )
    sizes, summary = lines[:-1], lines[-1]
    assert [(s["sensors"], s["readings"], s["windows"]) for s in sizes] == [
        (50, 500, 50),
        (200, 2000, 200),
    ]
    for size in sizes:
        assert 0 < size["rss_first_close_mib"] <= size["rss_peak_mib"]
        assert size["state_mib"] > 0
        assert size["rebuild_s"] > 0
        # At least one record per window and per key's latest time.
        assert size["changelog_records"] >= 2 * size["sensors"]
    assert list(summary["sizes"]) == ["50", "200"]


@pytest.mark.integration
def test_variants_compare_settings_of_the_real_processor(broker_address: str) -> None:
    lines = run_benchmark(
        "variants.py",
        broker_address,
        "--readings=2000",
        "--sensors=100",
        "--rounds=1",
        "--variants",
        "log-info",
    )
    assert [line["name"] for line in lines] == ["shipped", "log-info", "summary"]
    assert len(lines[-1]["shipped/log-info"]) == 1


@pytest.mark.one_at_a_time
@pytest.mark.integration
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
@pytest.mark.timeout(300)  # two processes under valgrind, beside other tests on two cores
def test_instructions_per_reading_are_the_difference_between_two_counted_runs(
    embedded_broker: Broker,
) -> None:
    # Counted instructions do not depend on the broker, and under valgrind start-up is
    # most of the cost: on the embedded broker in both suites (its own under test-kafka).
    broker_address = embedded_broker.address
    # One script with metrics on: under valgrind start-up is most of the cost, so each
    # script more adds as much again. The ratios between scripts are checked below.
    lines = run_benchmark(
        "instructions.py",
        broker_address,
        "--small=1000",
        "--large=2000",
        "--sensors=100",
        "--scripts=processor-metrics",
        timeout=280,
    )
    *runs, summary = lines
    counted = {(run["name"], run["readings"]): run["instructions"] for run in runs}
    assert sorted(counted) == [("processor-metrics", 1000), ("processor-metrics", 2000)]
    per_reading = (counted["processor-metrics", 2000] - counted["processor-metrics", 1000]) / 1000
    assert per_reading > 0  # 1000 more readings cost more
    assert summary["instructions_per_reading"] == {"processor-metrics": round(per_reading)}
    assert summary["per_round"] == [{}]  # no ratio without a second script


def test_the_scripts_to_count_and_the_processor_with_metrics_on_a_port_of_its_own() -> None:
    scripts = instructions.scripts(["baseline", "processor", "processor-metrics"])
    assert list(scripts) == ["baseline", "processor", "processor-metrics"]
    assert scripts["baseline"][0] == "benchmarks/baseline_processor.py"
    (processor, flags), (same, with_port) = scripts["processor"], scripts["processor-metrics"]
    assert processor == same == "sensor_stream_processor.py"
    assert with_port[:-1] == flags
    assert with_port[-1].startswith("--metrics-port=")
    assert int(with_port[-1].removeprefix("--metrics-port=")) > 0
    # Each run of it at once gets a port of its own.
    taken: set[int] = set()
    flags = [
        instructions.scripts(["processor-metrics"], taken)["processor-metrics"][1][-1]
        for _ in range(3)
    ]
    assert len(set(flags)) == len(taken) == 3


def test_the_instructions_summary_divides_the_medians_and_each_round() -> None:
    per_reading = {
        "baseline": [300.0, 310.0, 290.0],
        "processor": [310.0, 300.0, 320.0],
        "processor-metrics": [320.0, 300.0, 330.0],
    }
    summary = instructions.summarize(per_reading)
    assert summary["name"] == "summary"
    assert summary["instructions_per_reading"] == {
        "baseline": 300,
        "processor": 310,
        "processor-metrics": 320,
    }
    assert summary["baseline/processor"] == round(300 / 310, 3)
    assert summary["metrics-on/off"] == round(320 / 310, 3)
    assert summary["per_round"] == [
        {"baseline/processor": round(b / p, 3), "metrics-on/off": round(m / p, 3)}
        for b, p, m in zip(*per_reading.values(), strict=True)
    ]
    # A ratio only where both of its scripts were counted.
    assert set(instructions.summarize({"processor": [1.0], "baseline": [2.0]})) == {
        "name",
        "instructions_per_reading",
        "baseline/processor",
        "per_round",
    }


# --- The workload ---------------------------------------------------------------


@pytest.mark.parametrize(("readings", "sensors"), [(300_000, 1000), (5000, 1000), (3001, 7)])
def test_the_last_reading_of_every_sensor_closes_a_window(readings: int, sensors: int) -> None:
    workload = Workload(readings, sensors)
    last_round = (workload.rounds - 1) * sensors
    for slot in (0, sensors - 1):
        last = workload.event_time_ms(last_round + slot)
        previous = workload.event_time_ms(last_round - sensors + slot)
        boundary = last - workload.grace_ms
        # `last` is the first reading at or past a window end + grace.
        assert previous - workload.grace_ms < boundary - boundary % workload.window_ms <= boundary


def brute_force_closed_windows(workload: Workload, readings: int | None = None) -> int:
    """Windows closed by the first `readings` readings (all, by default)."""
    starts: dict[int, set[int]] = {}
    last: dict[int, int] = {}
    for index in range(workload.total if readings is None else readings):
        slot = index % workload.sensors
        ts = workload.event_time_ms(index)
        starts.setdefault(slot, set()).add(ts - ts % workload.window_ms)
        last[slot] = ts
    return sum(
        1
        for slot, windows in starts.items()
        for start in windows
        if start + workload.window_ms <= last[slot] - workload.grace_ms
    )


def test_the_model_has_every_window_with_the_stats_of_its_readings_and_knows_which_close() -> None:
    workload = Workload(readings=6, sensors=2)  # three rounds, a second apart
    windows = window_stats(workload)
    readings = list(workload.readings_in_order())
    for (sensor, start, end), window in windows.items():
        values = [v for s, t, v in readings if f"Sensor{s + 1}" == sensor and start <= t < end]
        assert window == {
            "count": len(values),
            "min": min(values),
            "max": max(values),
            "mean": pytest.approx(sum(values) / len(values)),
        }
    assert sum(window["count"] for window in windows.values()) == len(readings)
    closed = closed_windows(workload, windows)
    assert len(closed) == expected_closed_windows(workload)
    assert closed.items() <= windows.items()


@pytest.mark.parametrize(
    ("readings", "sensors", "interval_ms"),
    [
        (3000, 100, 1000),
        (1234, 7, 1000),
        (50, 50, 1000),
        (20, 3, 1000),
        (3000, 100, 10_000),
        (1234, 7, 10_000),
    ],
)
def test_expected_closed_windows_matches_brute_force(
    readings: int, sensors: int, interval_ms: int
) -> None:
    workload = Workload(readings, sensors, sensor_interval_ms=interval_ms)
    assert expected_closed_windows(workload) == brute_force_closed_windows(workload)


@pytest.mark.parametrize(("readings", "sensors"), [(3000, 100), (1234, 7)])
def test_readings_to_close_is_the_shortest_prefix_that_closes_that_many_windows(
    readings: int, sensors: int
) -> None:
    workload = Workload(readings, sensors)
    expected = expected_closed_windows(workload)
    assert readings_to_close(workload, 0) == 0
    assert readings_to_close(workload, expected) == workload.total  # the last one closes one
    for windows in (1, sensors - 1, sensors, sensors + 1, expected // 2, expected - 1):
        prefix = readings_to_close(workload, windows)
        closed = brute_force_closed_windows(workload, prefix)
        assert closed >= windows > brute_force_closed_windows(workload, prefix - 1)


def test_the_workload_is_readings_in_the_raw_topic_format_at_its_event_times() -> None:
    workload = Workload(250, 7)
    messages = list(workload.messages())
    assert len(messages) == workload.total == 252
    assert messages == list(workload.messages())  # deterministic
    for index in (0, 8, 251):
        key, value, ts_ms = messages[index]
        assert key == f"Sensor{index % 7 + 1}".encode()
        reading = json.loads(value)
        assert set(reading) == {"ts", "value"}
        assert datetime.fromisoformat(reading["ts"]) == datetime.fromtimestamp(ts_ms / 1000, UTC)
        assert ts_ms == workload.event_time_ms(index)


# --- Comparing windows ----------------------------------------------------------


def stats(count: int = 3, low: float = 1.0, high: float = 2.0, mean: float = 1.5) -> dict:
    return {"count": count, "min": low, "max": high, "mean": mean}


def test_identical_windows_have_no_differences() -> None:
    table = {("Sensor1", 0, 10): stats()}
    assert window_differences(table, dict(table)) == []


def test_means_within_the_tolerance_match_and_beyond_it_do_not() -> None:
    left = {("Sensor1", 0, 10): stats(mean=21.5)}
    assert window_differences(left, {("Sensor1", 0, 10): stats(mean=21.5 * (1 + 1e-12))}) == []
    assert window_differences(left, {("Sensor1", 0, 10): stats(mean=21.5 * (1 + 1e-6))})


@pytest.mark.parametrize("field", ["count", "min", "max"])
def test_any_other_difference_is_reported(field: str) -> None:
    changed = stats()
    changed[field] += 1
    problems = window_differences({("S", 0, 10): stats()}, {("S", 0, 10): changed})
    assert len(problems) == 1


def test_missing_and_extra_windows_are_reported() -> None:
    problems = window_differences({("S", 0, 10): stats()}, {("S", 10, 20): stats()})
    assert problems == ["only in processor: ('S', 0, 10)", "only in baseline: ('S', 10, 20)"]
    problems = window_differences({}, {("S", 10, 20): stats()}, "processor-x2")
    assert problems == ["only in processor-x2: ('S', 10, 20)"]


# --- The latency tracker --------------------------------------------------------


def test_a_window_becomes_closable_at_the_first_reading_past_end_plus_grace() -> None:
    tracker = ClosingTracker(window_ms=10_000, grace_ms=1_000)
    for ts in (1_000, 9_999, 10_500, 10_999):
        tracker.on_reading("S", ts)
    assert tracker.closable_at == {}
    tracker.on_reading("S", 11_000)
    tracker.on_reading("S", 11_500)
    tracker.on_reading("T", 30_000)  # another sensor's clock closes nothing of S
    assert tracker.closable_at == {("S", 0): 11_000}


def test_a_window_closed_by_a_watermark_is_not_timed() -> None:
    tracker = ClosingTracker(window_ms=10_000, grace_ms=1_000)
    tracker.on_reading("S", 1_000, arrived_ms=1_020.0)
    tracker.on_reading("S", 11_000, arrived_ms=11_030.0)  # a reading closes [0, 10 s)
    tracker.on_reading("S", 30_000)  # a watermark closes [10 s, 20 s)
    assert tracker.closable_at == {("S", 0): 11_000, ("S", 10_000): 30_000}
    assert tracker.arrived_at == {("S", 0): 11_030.0, ("S", 10_000): None}


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.95) == 7.0


# --- The fast JSON paths give the standard library's results --------------------


@given(
    st.floats(allow_nan=False, allow_infinity=False, width=64)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
)
def test_encoded_readings_decode_to_the_same_values(value: float) -> None:
    moment = datetime(2024, 1, 1, 0, 0, 0, 123000, tzinfo=UTC)
    reading = {"ts": "2024-01-01T00:00:00.123000+00:00", "value": value}
    payload = producer.make_reading(moment, value)
    assert json.loads(payload) == reading
    assert processor.parse_reading(payload) == reading


@pytest.mark.integration
def test_a_benchmark_stopped_by_sigterm_stops_the_broker_it_started(tmp_path: Path) -> None:
    # No BROKER_ADDRESS: the benchmark starts a broker of the kind under test, with its
    # data folder (Kafka's) under TMPDIR, where this test can look for it. Every benchmark
    # gets its broker from bench_broker.broker_address; memory.py is the quickest to be using it.
    env = {k: v for k, v in os.environ.items() if k != "BROKER_ADDRESS"}
    env.update(BENCH_BROKER=os.environ.get("TEST_BROKER", "embedded"), TMPDIR=str(tmp_path))
    bench = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "benchmarks" / "memory.py"),
            "--readings=2000",
            "--sensors=100",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert bench.stdout is not None
        first = bench.stdout.readline()  # the first sample: the broker is up, the processor runs
        assert first.startswith('{"t_s": '), first + bench.stderr.read()
        children = descendants(bench.pid)
        assert len(children) >= 2, "the benchmark runs no broker or no processor"
        bench.send_signal(signal.SIGTERM)
        _, stderr = bench.communicate(timeout=60)
    finally:
        bench.kill()
    assert bench.returncode == 1
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("stopped; the ")
    wait_until_stopped(children, 10)  # the benchmark has exited; what it started must too
    assert list(tmp_path.glob("kafka-broker-*")) == []
