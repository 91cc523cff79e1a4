"""Draw each sensor's readings against its windows: a .png, .svg or .pdf chart.

Reads the raw and the aggregate topic to their end, and draws one panel per
sensor: the readings as dots, each window's mean as a step line inside its
min-max band. Then it exits.

    python sensor_stream_chart.py docs/chart.png
"""

from __future__ import annotations

import logging
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException, Message
from pydantic import Field, PositiveFloat, field_validator
from pydantic_settings import CliPositionalArg

from sensor_lib.aggregates import Aggregate, InvalidAggregate, parse_aggregate, sensor_order
from sensor_lib.broker import start_up
from sensor_lib.consuming import read_to_end
from sensor_lib.errors import CannotRun, StoppedEarly, exit_status
from sensor_lib.event_time import from_epoch_ms, parse_iso_ms
from sensor_lib.readings import InvalidReading, parse_reading
from sensor_lib.settings import BrokerSettings, load_settings

if TYPE_CHECKING:
    from matplotlib.figure import Figure  # matplotlib loads only when a chart is drawn

logger = logging.getLogger("sensor_stream_chart")

CHART_SUFFIXES = (".png", ".svg", ".pdf")  # what matplotlib writes with nothing else installed


class ChartSettings(BrokerSettings):
    """Chart each sensor's readings and window aggregates, and exit."""

    chart: CliPositionalArg[Path] = Field(description="the chart to write: .png, .svg or .pdf")
    raw_topic: str = Field("raw-temperature", description="topic of raw readings")
    agg_topic: str = Field("agg-temperature", description="topic of window aggregates")
    read_timeout: PositiveFloat = Field(30.0, description="seconds to read each topic")

    @field_validator("chart")
    @classmethod
    def _chart_type(cls, path: Path) -> Path:
        if path.suffix.lower() not in CHART_SUFFIXES:
            raise ValueError(f"the chart file must end in one of {', '.join(CHART_SUFFIXES)}")
        return path


@dataclass
class SensorSeries:
    readings: list[tuple[datetime, float]] = field(default_factory=list)
    windows: list[Aggregate] = field(default_factory=list)


def collect_series(
    aggregate_messages: list[Message], raw_messages: list[Message]
) -> dict[str, SensorSeries]:
    """Group valid readings and aggregates by sensor; malformed ones are counted and skipped."""
    series: defaultdict[str, SensorSeries] = defaultdict(SensorSeries)
    skipped = 0
    for message in aggregate_messages:
        try:
            aggregate = parse_aggregate(message.key(), message.value())
            series[aggregate.sensor].windows.append(aggregate)
        except InvalidAggregate:
            skipped += 1
    for message in raw_messages:
        try:
            reading = parse_reading(message.value() or b"")
            moment = from_epoch_ms(parse_iso_ms(reading["ts"]))
            if reading["value"] is not None:  # a watermark is no reading
                series[message.key().decode()].readings.append((moment, reading["value"]))
        except (InvalidReading, ValueError, AttributeError):
            skipped += 1
    if skipped:
        logger.warning("Skipped %d malformed messages while charting", skipped)
    for one in series.values():
        one.readings.sort()
        one.windows.sort(key=lambda a: a.start_ms)
    return dict(sorted(series.items(), key=lambda item: sensor_order(item[0])))


def window_stairs(windows: list[Aggregate]) -> tuple[list[datetime], list[tuple[float, ...]]]:
    """The edges and the (min, mean, max) steps between them that `Axes.stairs` draws.

    Windows come sorted by start. A gap between two is a NaN step, which stays blank.
    """
    edges, steps = [windows[0].start_ms], []
    for window in windows:
        if window.start_ms < edges[-1]:
            continue  # overlaps the window before: a repeat, after a processor restart
        if window.start_ms > edges[-1]:
            edges.append(window.start_ms)
            steps.append((math.nan, math.nan, math.nan))
        edges.append(window.end_ms)
        steps.append((window.min, window.mean, window.max))
    return [from_epoch_ms(edge) for edge in edges], steps


def chart_figure(series: dict[str, SensorSeries]) -> Figure:
    """One panel per sensor: readings as dots, the mean as a step line in a min-max band."""
    import matplotlib.dates as mdates
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 1.2 + 2.0 * len(series)), layout="constrained")
    axes = figure.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (sensor, one) in zip(axes, series.items(), strict=True):
        if one.windows:
            edges, steps = window_stairs(one.windows)
            mins, means, maxes = zip(*steps, strict=True)
            ax.stairs(
                maxes,
                edges,
                baseline=mins,
                fill=True,
                color="tab:blue",
                alpha=0.2,
                label="window min-max",
            )
            # baseline=None draws the mean as a line alone, with no sides down to 0.
            ax.stairs(
                means, edges, baseline=None, color="tab:blue", linewidth=1.5, label="window mean"
            )
        readings = list(zip(*one.readings, strict=True)) or [[], []]
        ax.scatter(*readings, s=6, color="tab:orange", label="reading")
        ax.set_title(
            f"{sensor}: {len(one.readings)} readings, {len(one.windows)} windows",
            loc="left",
            fontsize="medium",
        )
        ax.set_ylabel("°C")
        ax.grid(alpha=0.3)
    figure.suptitle("Readings and window mean inside the window's min-max band", x=0.01, ha="left")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
    axes[-1].set_xlabel("event time (UTC)")
    return figure


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(ChartSettings, argv)
    stop = start_up(settings, logger, "writing the chart")
    topics = (settings.agg_topic, settings.raw_topic)
    messages = []
    try:
        with stop.interrupting():
            for topic in topics:
                messages.append(read_to_end(settings, topic, timeout=settings.read_timeout))
    except KeyboardInterrupt:
        raise StoppedEarly("Stopped before writing the chart") from None
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise
        raise CannotRun(f"Topic {topic} does not exist at {settings.broker_address}") from None
    if not (series := collect_series(*messages)):
        raise CannotRun(f"Nothing to chart: {topics[0]} and {topics[1]} hold no valid messages")
    chart_figure(series).savefig(settings.chart, dpi=100)
    readings = sum(len(one.readings) for one in series.values())
    windows = sum(len(one.windows) for one in series.values())
    logger.info(
        "Wrote %s: %d sensors, %d readings, %d windows",
        settings.chart,
        len(series),
        readings,
        windows,
    )


if __name__ == "__main__":
    sys.exit(exit_status(main, logger))
