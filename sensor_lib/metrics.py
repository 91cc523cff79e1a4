"""Prometheus metrics for the producer, the processor and the sink, at no cost per reading.

With METRICS_PORT set, a script serves /metrics on METRICS_HOST (127.0.0.1 by
default) with prometheus-client; unset, nothing listens. The numbers come from
the counters each script keeps anyway: a collector reads them only when
Prometheus scrapes, so the per-reading path does not change. docs/metrics.md has
a scrape config and queries.
"""

from __future__ import annotations

import json
import logging
import math
import ssl
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.process_collector import ProcessCollector

from sensor_lib.errors import CannotRun
from sensor_lib.settings import MetricsSettings

logger = logging.getLogger(__name__)

STATISTICS_INTERVAL_MS = 5000  # how often librdkafka reports the consumer lag


class FunctionCollector:
    """A collector that asks `collect` for its metrics at each scrape."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self.collect = collect


def serve(
    settings: MetricsSettings,
    logger: logging.Logger,
    collect: Callable[[], Iterable[Metric]],
    *histograms: Histogram,
) -> None:
    """Serve /metrics if METRICS_PORT is set: `collect`'s metrics, `histograms`, and the
    process's CPU and memory. A port that is taken raises CannotRun."""
    if settings.metrics_port is None:
        return
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FunctionCollector(collect))  # type: ignore[arg-type]
    for histogram in histograms:
        registry.register(histogram)
    ProcessCollector(registry=registry)
    host, port = settings.metrics_host, settings.metrics_port
    tls = settings.metrics_tls_certificate is not None
    try:
        start_http_server(
            port,
            addr=host,
            registry=registry,
            certfile=str(settings.metrics_tls_certificate) if tls else None,
            keyfile=str(settings.metrics_tls_key) if tls else None,
            client_cafile=str(settings.metrics_tls_client_ca or "") or None,
            client_auth_required=settings.metrics_tls_client_ca is not None,
        )
    except (ssl.SSLError, FileNotFoundError) as exc:
        why = exc.reason if isinstance(exc, ssl.SSLError) else f"no file {exc.filename}"
        raise CannotRun(
            "cannot serve metrics over TLS with METRICS_TLS_CERTIFICATE, METRICS_TLS_KEY "
            f"and METRICS_TLS_CLIENT_CA: {why or exc}"
        ) from None
    except OSError as exc:
        raise CannotRun(
            f"cannot serve metrics on {host}:{port} (METRICS_HOST:METRICS_PORT): "
            f"{exc.strerror or exc}; set METRICS_PORT to a free port, or leave it unset "
            "for no metrics"
        ) from None
    scheme = "https" if tls else "http"
    logger.info("Metrics at %s://%s:%s/metrics", scheme, host, port)


def counter(name: str, doc: str, value: float, **labels: str) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def by_reason(name: str, doc: str, counts: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["reason"])
    for reason, count in sorted(counts.items()):
        family.add_metric([reason], count)
    return family


def window_delay_histogram() -> Histogram:
    """Seconds from a window's close (end + grace, as wall-clock time) to its emission."""
    return Histogram(
        "sensor_processor_window_close_to_emit_seconds",
        "Wall clock at a window's emission minus its close time (end plus grace); "
        "0 when a watermark closed it before that time",
        buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, math.inf),
        registry=None,
    )


def write_histogram() -> Histogram:
    return Histogram(
        "sensor_sink_write_seconds",
        "Database round trip of one batch of rows, commit included",
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, math.inf),
        registry=None,
    )


class ConsumerLag:
    """Messages behind per partition, from librdkafka's own statistics (its `stats_cb`).

    librdkafka reports them every STATISTICS_INTERVAL_MS on the consumer's thread that
    polls; no second consumer asks the broker.
    """

    def __init__(self) -> None:
        self.lag: dict[tuple[str, int], int] = {}
        self.lock = threading.Lock()

    def config(self) -> dict[str, Any]:
        return {"statistics.interval.ms": STATISTICS_INTERVAL_MS, "stats_cb": self.update}

    def update(self, stats_json: str) -> None:
        lag = {}
        for topic, info in json.loads(stats_json).get("topics", {}).items():
            for partition, numbers in info.get("partitions", {}).items():
                if int(partition) < 0:  # librdkafka's own bookkeeping, no partition
                    continue
                if numbers.get("consumer_lag", -1) >= 0:
                    lag[(topic, int(partition))] = numbers["consumer_lag"]
                elif numbers.get("committed_offset", -1) < 0 <= numbers.get("hi_offset", -1):
                    lag[(topic, int(partition))] = numbers["hi_offset"]  # nothing committed yet
        with self.lock:
            self.lag = lag

    def metric(self, name: str) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            name,
            "Messages behind on each partition: its end minus the committed offset",
            labels=["topic", "partition"],
        )
        with self.lock:
            for (topic, partition), lag in sorted(self.lag.items()):
                family.add_metric([topic, str(partition)], lag)
        return family


def producer_metrics(sensors: Any, progress: Any) -> Callable[[], Iterator[Metric]]:
    """What sensor_stream_producer.py keeps: its SensorProducer and ProgressLine."""

    def collect() -> Iterator[Metric]:
        readings, watermarks = sensors.readings, sensors.watermarks
        yield counter("sensor_producer_readings", "Readings sent to the broker", sensors.produced)
        yield counter(
            "sensor_producer_readings_delivered",
            "Readings the broker confirmed",
            readings.delivered,
        )
        yield counter(
            "sensor_producer_delivery_failures",
            "Messages not delivered after retries",
            readings.failed + watermarks.failed,
        )
        yield counter(
            "sensor_producer_watermarks", "Watermarks the broker confirmed", watermarks.delivered
        )
        rate = progress.progress.tasks[0].speed or 0.0
        yield gauge(
            "sensor_producer_rate_readings_per_second",
            "Readings sent per second over the last 5 s",
            rate,
        )

    return collect


def processor_metrics(
    counters: Any, dead_letters: Any, current: Any, lag: ConsumerLag
) -> Callable[[], Iterator[Metric]]:
    """What sensor_stream_processor.py keeps: its Counters, DeadLetterSink, the current
    message, and the consumer lag."""

    def collect() -> Iterator[Metric]:
        dead = dict(dead_letters.counts)
        invalid = sum(n for reason, n in dead.items() if reason != "late")
        yield counter(
            "sensor_processor_messages", "Messages read from the raw topic", counters.processed
        )
        yield counter(
            "sensor_processor_readings",
            "Readings read, late ones included",
            counters.processed - counters.watermarks - invalid,
        )
        yield counter("sensor_processor_watermarks", "Watermarks read", counters.watermarks)
        yield counter(
            "sensor_processor_windows_emitted", "Windows emitted", counters.windows_emitted
        )
        yield counter(
            "sensor_processor_readings_aggregated",
            "Readings in the emitted windows",
            counters.aggregated,
        )
        yield by_reason("sensor_processor_dead_letters", "Messages dead-lettered, by reason", dead)
        if counters.processed:
            yield gauge(
                "sensor_processor_event_time_lag_seconds",
                "Wall clock minus the event time of the last message read (reading or watermark)",
                time.time() - current.event_ms / 1000,
            )
        yield lag.metric("sensor_processor_consumer_lag_messages")

    return collect


def sink_metrics(rows: Any, table: Any, lag: ConsumerLag) -> Callable[[], Iterator[Metric]]:
    """What sensor_stream_sink.py keeps: its Rows, the WindowsSink, and the consumer lag."""

    def collect() -> Iterator[Metric]:
        yield counter("sensor_sink_aggregates", "Aggregates read", rows.received)
        yield counter(
            "sensor_sink_rows_written",
            "Rows written (upserted) to the database",
            table.rows_written,
        )
        yield counter(
            "sensor_sink_write_errors", "Batches the database did not take", table.write_errors
        )
        yield by_reason(
            "sensor_sink_dead_letters",
            "Messages dead-lettered, by reason",
            dict(rows.dead_letters.counts),
        )
        yield lag.metric("sensor_sink_consumer_lag_messages")

    return collect


def scrape(url: str, timeout: float = 2.0) -> dict[str, float]:
    """The samples a /metrics URL serves now, each summed over its labels, by sample name
    (a counter's ends in _total). Raises OSError if nothing answers."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (our own URL)
        text = response.read().decode()
    totals: defaultdict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] += sample.value
    return dict(totals)
