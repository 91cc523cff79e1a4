"""Prometheus metrics: each script's /metrics, scraped and parsed, against the run's own counts.

The pipeline runs once on a known stream with a few bad messages (module fixture);
each test scrapes an endpoint with urllib and parses it with prometheus_client's
parser. The producer is scraped while it idles between readings, so its counts
hold still.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import TopicNames
from helpers import Script, create_topic, produce, read_to_end, reading, run_script, sink, table
from sensor_lib.servers import find_free_port
from test_reliability import encode_stream, model_of, processor, sensor_stream

pytestmark = pytest.mark.integration

STREAM = sensor_stream(sensors=4, seconds=60, per_second=2, seed=25)
BAD = [
    ("Sensor1", b"not json"),
    ("Sensor2", b'{"ts": "2026-11-26T00:00:01Z"}'),
    (None, reading("2026-11-26T00:00:02Z", 1.0)),
    ("Sensor3", b"[1]"),
]
BAD_REASONS = {"invalid-json": 1, "missing-value": 1, "no-key": 1, "not-an-object": 1}


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample at http://127.0.0.1:<port>/metrics: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def poll(check, script: Script, timeout: float = 60.0):
    """`check()`'s result once it is truthy; fail after `timeout` s or if `script` exits."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert script.process.poll() is None, script.output()
        assert time.monotonic() < deadline, f"not within {timeout}s"
        time.sleep(0.5)
    return found


@dataclass
class Run:
    processor: dict
    sink: dict
    windows: int
    table: dict
    processor_output: str


@pytest.fixture(scope="module")
def run(broker_address: str, postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Run:
    names = TopicNames("metrics_pipeline")
    messages = encode_stream(STREAM)
    create_topic(broker_address, names.raw, partitions=3)
    create_topic(broker_address, names.agg, partitions=3)
    produce(broker_address, names.raw, [*BAD, *messages])
    produce(broker_address, names.agg, [("Sensor9", b"{}")])  # not an aggregate, for the sink
    ports = find_free_port(), find_free_port()
    state = tmp_path_factory.mktemp("state")
    with (
        processor(broker_address, names, state, "--metrics-port", str(ports[0])) as aggregating,
        sink(broker_address, names, postgres_url, "--metrics-port", str(ports[1])) as storing,
    ):
        windows = len(model_of(STREAM).windows) + 1  # and the one that is no aggregate
        processed = poll(
            lambda: caught_up(
                ports[0], "sensor_processor_messages_total", len(BAD) + len(messages)
            ),
            aggregating,
            timeout=90,
        )
        stored = poll(
            lambda: caught_up(ports[1], "sensor_sink_aggregates_total", windows),
            storing,
            timeout=90,
        )
        result = Run(processed, stored, windows - 1, table(postgres_url, names.table), "")
        assert aggregating.stop() == 0
        assert storing.stop() == 0
    result.processor_output = aggregating.output()
    return result


def caught_up(port: int, read: str, expected: int) -> dict | None:
    """The scrape once `read` reaches `expected` and librdkafka reports, for each of the
    three partitions, that no message is left."""
    if (found := scrape_if_up(port)) is None:
        return None
    lag = [value for (name, _), value in found.items() if name.endswith("_consumer_lag_messages")]
    done = found.get((read, ()), 0) >= expected and len(lag) == 3 and not any(lag)
    return found if done else None


def test_the_processor_counts_what_it_read_emitted_and_dead_lettered(run: Run) -> None:
    model = model_of(STREAM)
    watermarks = sum(value is None for _, _, value in STREAM)
    readings = len(STREAM) - watermarks
    dead = {
        dict(labels)["reason"]: value
        for (name, labels), value in run.processor.items()
        if name == "sensor_processor_dead_letters_total"
    }
    assert dead == BAD_REASONS
    assert run.processor[("sensor_processor_messages_total", ())] == len(BAD) + len(STREAM)
    assert run.processor[("sensor_processor_readings_total", ())] == readings  # no keyless one
    assert run.processor[("sensor_processor_watermarks_total", ())] == watermarks
    assert run.processor[("sensor_processor_windows_emitted_total", ())] == len(model.windows)
    assert run.processor[("sensor_processor_readings_aggregated_total", ())] == readings
    closed = run.processor[("sensor_processor_window_close_to_emit_seconds_count", ())]
    assert closed == len(model.windows)
    # The stream is from 2026-11-26: its event time trails the wall clock by days, at least.
    assert run.processor[("sensor_processor_event_time_lag_seconds", ())] > 86_400
    assert f"windows emitted={len(model.windows)}" in run.processor_output


def test_the_sink_counts_the_rows_it_wrote_and_what_it_dead_lettered(run: Run) -> None:
    assert run.sink[("sensor_sink_aggregates_total", ())] == run.windows + 1
    assert run.sink[("sensor_sink_rows_written_total", ())] == len(run.table) == run.windows
    assert run.sink[("sensor_sink_write_errors_total", ())] == 0
    reasons = (("reason", "not-an-aggregate"),)
    assert run.sink[("sensor_sink_dead_letters_total", reasons)] == 1
    assert run.sink[("sensor_sink_write_seconds_count", ())] >= 1  # a round trip per batch


def test_the_producer_counts_what_it_sent_and_the_broker_confirmed(
    broker_address: str, names: TopicNames
) -> None:
    port = find_free_port()
    # 600 s of history at one reading per 20 s: 30 readings at once, a 31st live, then a
    # pause of 20 s in which the counts hold still.
    with Script(
        "sensor_stream_producer.py",
        "--broker-address",
        broker_address,
        "--raw-topic",
        names.raw,
        "--count",
        "0",
        "--rate",
        "0.05",
        "--backfill-seconds",
        "600",
        "--sensors",
        "3",
        "--idle-watermark-seconds",
        "0",
        "--metrics-port",
        str(port),
    ) as producing:
        found = poll(
            lambda: (
                (s := scrape_if_up(port))
                and s[("sensor_producer_readings_delivered_total", ())] == 31
                and s
            ),
            producing,
        )
        on_topic = len(read_to_end(broker_address, names.raw))
        assert producing.stop() == 0
    assert found[("sensor_producer_readings_total", ())] == on_topic == 31
    assert found[("sensor_producer_delivery_failures_total", ())] == 0
    assert found[("sensor_producer_watermarks_total", ())] == 0
    assert ("sensor_producer_rate_readings_per_second", ()) in found  # its value: test-fast
    assert "Delivered 31 of 31 readings" in producing.output()


def scrape_if_up(port: int) -> dict | None:
    try:
        return scrape(port)
    except OSError:
        return None


@pytest.mark.parametrize("script", ["sensor_stream_processor.py", "sensor_stream_sink.py"])
def test_a_metrics_port_that_is_taken_is_one_line_naming_metrics_port(script: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_script(script, "--metrics-port", str(port), "--broker-timeout", "1")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert f" ERROR {script[:-3]}: cannot serve metrics on 127.0.0.1:{port} " in line
    assert "(METRICS_HOST:METRICS_PORT): Address already in use; set METRICS_PORT" in line


def test_without_metrics_port_nothing_listens(
    broker_address: str, names: TopicNames, tmp_path: Path
) -> None:
    create_topic(broker_address, names.raw)
    with processor(broker_address, names, tmp_path / "state") as aggregating:
        aggregating.wait_for_output("The application started")
        listening = [
            c
            for c in psutil.Process(aggregating.process.pid).net_connections()
            if c.status == psutil.CONN_LISTEN
        ]
        assert aggregating.stop() == 0
    assert listening == []
    assert "Metrics at" not in aggregating.output()
