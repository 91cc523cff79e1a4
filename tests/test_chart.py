"""The chart: its data and figure from recorded aggregates, and a real run's chart."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from helpers import (
    RECORDED,
    T0,
    FakeMessage,
    TopicNames,
    aggregate_message,
    consume_count,
    create_topic,
    ms,
    produce,
    reading,
    run_script,
)
from sensor_lib.aggregates import parse_aggregate
from sensor_lib.consuming import read_to_end
from sensor_lib.errors import UsageError
from sensor_lib.settings import BrokerSettings, load_settings
from sensor_stream_chart import ChartSettings, chart_figure, collect_series, window_stairs

# --- Chart data, without a broker ----------------------------------------------------------


def test_window_stairs_have_a_step_per_window_a_blank_step_per_gap_and_skip_repeats() -> None:
    windows = [
        parse_aggregate(b"S", aggregate_message(0, 1, 1.0, 2.0, 3.0)),
        parse_aggregate(b"S", aggregate_message(10, 1, 4.0, 5.0, 6.0)),
        parse_aggregate(b"S", aggregate_message(10, 1, 4.0, 5.0, 6.0)),  # a repeat
        parse_aggregate(b"S", aggregate_message(30, 1, 7.0, 8.0, 9.0)),
    ]
    edges, steps = window_stairs(windows)
    assert edges == [T0 + timedelta(seconds=s) for s in (0, 10, 20, 30, 40)]
    assert steps[:2] == [(1.0, 2.0, 3.0), (4.0, 5.0, 6.0)]
    assert all(math.isnan(value) for value in steps[2])  # the gap from 20 s to 30 s stays blank
    assert steps[3] == (7.0, 8.0, 9.0)


def test_collect_series_groups_by_sensor_and_skips_malformed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    aggregates = [FakeMessage(k, v) for k, v in RECORDED] + [FakeMessage(b"Sensor1", b"x")]
    raw = [
        FakeMessage(b"Sensor1", reading("2026-03-01T05:08:03Z", 21.4)),
        FakeMessage(b"Sensor1", reading("2026-03-01T05:08:01+00:00", 21.2)),
        FakeMessage(b"Sensor3", reading("2026-03-01T05:08:02Z", 19.0)),
        FakeMessage(None, reading("2026-03-01T05:08:02Z", 19.0)),
        FakeMessage(b"Sensor3", b'{"ts": "2026-03-01T05:08:02Z"}'),
        FakeMessage(b"Sensor1", b'{"ts": "2026-03-01T05:08:09Z", "watermark": true}'),
    ]
    with caplog.at_level(logging.WARNING, logger="sensor_stream_chart"):
        series = collect_series(aggregates, raw)
    assert list(series) == ["Sensor1", "Sensor2", "Sensor3", "Sensor10"]
    assert series["Sensor1"].readings == [
        (T0 + timedelta(seconds=1), 21.2),
        (T0 + timedelta(seconds=3), 21.4),
    ]
    assert [w.start_ms for w in series["Sensor1"].windows] == [ms(0), ms(10), ms(20)]
    assert series["Sensor3"].windows == []
    assert caplog.messages == ["Skipped 3 malformed messages while charting"]


def test_chart_has_a_panel_per_sensor_with_points_mean_and_band() -> None:
    series = collect_series(
        [FakeMessage(k, v) for k, v in RECORDED],
        [FakeMessage(b"Sensor2", reading("2026-03-01T05:08:12Z", 24.1))],
    )
    figure = chart_figure(series)
    assert [ax.get_title(loc="left") for ax in figure.axes] == [
        "Sensor1: 0 readings, 3 windows",
        "Sensor2: 1 readings, 1 windows",
        "Sensor10: 0 readings, 1 windows",
    ]
    assert [[p.get_label() for p in ax.patches] for ax in figure.axes] == [
        ["window min-max", "window mean"]
    ] * 3
    assert [len(ax.collections[0].get_offsets()) for ax in figure.axes] == [0, 1, 0]
    band, mean = figure.axes[0].patches
    assert list(band.get_data().values) == [21.9, 22.1, 21.95]  # max over min
    assert list(band.get_data().baseline) == [21.37, 21.4, 21.3]
    assert list(mean.get_data().values) == [21.5, 21.75, 21.625]
    assert mean.get_data().baseline is None  # a line, no area down to 0


# A small real run: hand-made readings spanning 35 s of event time, aggregated by
# the real processor. Each sensor gets 3 closed windows; the 4th stays open.
SENSOR_VALUES = {"Sensor1": [20.0, 20.5, 21.0, 21.5, 22.0], "Sensor2": [25.0, 24.0, 23.0]}

READINGS_PER_SENSOR = 35


@dataclass(frozen=True)
class RealRun:
    broker_address: str
    raw: str
    agg: str


@pytest.fixture(scope="module")
def real_run(broker_address: str, start_processor) -> RealRun:
    names = TopicNames("chart_real_run")
    run = RealRun(broker_address, names.raw, names.agg)
    now = datetime.now(UTC)
    base = now.replace(second=now.second // 10 * 10, microsecond=0) - timedelta(seconds=60)
    messages: list[tuple[str | bytes | None, bytes | None]] = [
        (sensor, reading((base + timedelta(seconds=i)).isoformat(), values[i % len(values)]))
        for i in range(READINGS_PER_SENSOR)
        for sensor, values in SENSOR_VALUES.items()
    ]
    messages.insert(7, ("Sensor1", b"not a reading"))
    create_topic(broker_address, run.raw)
    create_topic(broker_address, run.agg)  # a reader subscribed to a missing topic never sees it
    produce(broker_address, run.raw, messages)
    with start_processor(names, "--partitions", "1") as processor:
        consume_count(broker_address, run.agg, 6, timeout=90)
        assert processor.stop() == 0
    return run


def plot(run: RealRun, path: Path) -> None:
    result = run_script(
        "sensor_stream_chart.py",
        *("--broker-address", run.broker_address, "--raw-topic", run.raw, "--agg-topic", run.agg),
        str(path),
    )
    assert result.returncode == 0, result.stderr
    assert f"Wrote {path}: 2 sensors, 70 readings, 6 windows" in result.stderr


@pytest.mark.integration
def test_png_chart_from_a_real_run(real_run: RealRun, tmp_path: Path) -> None:
    path = tmp_path / "chart.png"
    plot(real_run, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 20_000 < path.stat().st_size < 300_000


@pytest.mark.integration
def test_chart_figure_from_a_real_run_has_the_right_series(real_run: RealRun) -> None:
    broker = BrokerSettings(broker_address=real_run.broker_address)
    series = collect_series(read_to_end(broker, real_run.agg), read_to_end(broker, real_run.raw))
    figure = chart_figure(series)
    assert [ax.get_title(loc="left") for ax in figure.axes] == [
        "Sensor1: 35 readings, 3 windows",
        "Sensor2: 35 readings, 3 windows",
    ]
    # One step per window. Sensor1 cycles 5 values, so every 10-reading window has
    # the same mean, while Sensor2's 3-value cycle shifts.
    expected = [([20.0] * 3, [21.0] * 3, [22.0] * 3), ([23.0] * 3, [24.1, 24.0, 23.9], [25.0] * 3)]
    for ax, (mins, means, maxes) in zip(figure.axes, expected, strict=True):
        band, mean = ax.patches
        (points,) = ax.collections
        assert len(points.get_offsets()) == READINGS_PER_SENSOR
        assert list(band.get_data().baseline) == mins
        assert list(mean.get_data().values) == pytest.approx(means)
        assert list(band.get_data().values) == maxes
        assert len(mean.get_data().edges) == 4  # three adjacent windows, no gap


@pytest.mark.integration
def test_chart_of_a_missing_topic_exits_1_with_one_line(
    broker_address: str, names: TopicNames, tmp_path: Path
) -> None:
    create_topic(broker_address, names.agg)
    result = run_script(
        "sensor_stream_chart.py",
        "--broker-address",
        broker_address,
        "--agg-topic",
        names.agg,
        "--raw-topic",
        names.raw,
        str(tmp_path / "chart.png"),
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert (
        f"ERROR sensor_stream_chart: Topic {names.raw} does not exist at {broker_address}" in line
    )
    assert not (tmp_path / "chart.png").exists()


def test_chart_settings_take_the_file_first_and_refuse_a_type_matplotlib_cannot_write() -> None:
    settings = load_settings(ChartSettings, ["out.SVG", "--read-timeout", "7"])
    assert (settings.chart, settings.read_timeout, settings.raw_topic) == (
        Path("out.SVG"),
        7.0,
        "raw-temperature",
    )
    with pytest.raises(UsageError) as refused:
        load_settings(ChartSettings, ["out.html"])
    assert str(refused.value).startswith(
        "--chart (CHART): Value error, the chart file must end in one of .png, .svg, .pdf"
    )
