"""Prometheus metrics: what each script's counters say, and its /metrics against a run.

Without a broker, the processor's first step is fed every kind of message, and its
counters must count each one once, so that the readings metric counts readings only.
With one, the pipeline runs once on a known stream with a few bad messages (module
fixture); each test scrapes an endpoint with urllib and parses it with
prometheus_client's parser. The producer is scraped while it idles between readings,
so its counts hold still.
"""

from __future__ import annotations

import socket
import urllib.request
from collections import Counter
from dataclasses import dataclass
from typing import Any

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from quixstreams.models import SerializationContext

from helpers import (
    Script,
    TopicNames,
    create_topic,
    encode_stream,
    model_of,
    produce,
    read_to_end,
    reading,
    run_script,
    sensor_stream,
    table,
    while_running,
)
from sensor_lib.dead_letters import current
from sensor_lib.metrics import ConsumerLag, processor_metrics
from sensor_lib.polling import wait_until
from sensor_lib.servers import find_free_port
from sensor_stream_processor import Counters, DeadLetters, ReadingDeserializer

# --- The processor's counts, without a broker ------------------------------------------


class DeadLettersKept:
    """A DeadLetterSink that keeps what it would write: (key, value, reason)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.sent: list[tuple[bytes | None, bytes | None, str]] = []

    def send(self, key: bytes | None, value: bytes | None, headers: Any, reason: str, *_: Any):
        self.sent.append((key, value, reason))
        self.counts[reason] += 1


CONTEXT = SerializationContext("raw", "value")
WATERMARK = b'{"ts": "2026-11-26T00:00:09Z", "watermark": true}'
# Every kind of message the first step sees, and what it is.
FIRST_STEP = [
    (b"Sensor1", reading("2026-11-26T00:00:01Z", 20.5), "reading"),
    (b"Sensor1", WATERMARK, "watermark"),
    (None, WATERMARK, "no-key"),  # a watermark without a sensor is a dead letter, not a watermark
    (None, reading("2026-11-26T00:00:02Z", 1.0), "no-key"),
    (b"Sensor2", None, "invalid-json"),  # a null value: never deserialized
    (b"Sensor2", b"not json", "invalid-json"),
    (b"Sensor2", b'{"ts": "yesterday", "value": 1.0}', "bad-ts"),
    (b"Sensor2", reading("2026-11-26T00:00:03Z", 21.0), "reading"),
]


def test_the_first_step_counts_each_message_once_and_the_readings_metric_only_readings() -> None:
    counters = Counters(grace_ms=1000)
    dead = DeadLettersKept()
    first_step = DeadLetters(dead, counters)  # type: ignore[arg-type]
    deserialize = ReadingDeserializer()
    kept = []
    for key, payload, _ in FIRST_STEP:
        # As Quix Streams does: a null value is handed on without deserializing.
        value = None if payload is None else deserialize(payload, CONTEXT)
        if first_step.keep_readings(value, key, 0, None):
            kept.append(key)
    kinds = Counter(kind for _, _, kind in FIRST_STEP)
    assert kept == [b"Sensor1", b"Sensor1", b"Sensor2"]  # the readings and the keyed watermark
    assert dead.sent == [(k, p, kind) for k, p, kind in FIRST_STEP if k is None or p is None] + [
        (b"Sensor2", b"not json", "invalid-json"),
        (b"Sensor2", b'{"ts": "yesterday", "value": 1.0}', "bad-ts"),
    ]
    collected = processor_metrics(counters, dead, current, ConsumerLag())()
    found = {
        (sample.name, sample.labels.get("reason")): sample.value
        for family in collected
        for sample in family.samples
    }
    assert found[("sensor_processor_messages_total", None)] == len(FIRST_STEP)
    assert found[("sensor_processor_readings_total", None)] == kinds["reading"]
    assert found[("sensor_processor_watermarks_total", None)] == kinds["watermark"]
    for reason in ("no-key", "invalid-json", "bad-ts"):
        assert found[("sensor_processor_dead_letters_total", reason)] == kinds[reason]


# --- /metrics, scraped from a run -------------------------------------------------------

STREAM = sensor_stream(sensors=4, seconds=60, per_second=2, seed=25)
BAD = [
    ("Sensor1", b"not json"),
    ("Sensor1", None),
    ("Sensor2", b'{"ts": "2026-11-26T00:00:01Z"}'),
    (None, reading("2026-11-26T00:00:02Z", 1.0)),
    (None, b'{"ts": "2026-11-26T00:00:03Z", "watermark": true}'),
    ("Sensor3", b"[1]"),
]
BAD_REASONS = {"invalid-json": 2, "missing-value": 1, "no-key": 2, "not-an-object": 1}


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
    """Every sample at http://127.0.0.1:<port>/metrics, (name, labels) -> value; None
    while nothing answers there."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@dataclass
class Run:
    processor: dict
    sink: dict
    windows: int
    table: dict
    processor_output: str


@pytest.fixture(scope="module")
def run(broker_address: str, postgres_url: str, start_processor, start_sink) -> Run:
    names = TopicNames("metrics_pipeline")
    messages = encode_stream(STREAM)
    create_topic(broker_address, names.raw, partitions=3)
    create_topic(broker_address, names.agg, partitions=3)
    produce(broker_address, names.raw, [*BAD, *messages])
    produce(broker_address, names.agg, [("Sensor9", b"{}")])  # not an aggregate, for the sink
    ports = find_free_port(), find_free_port()
    with (
        start_processor(names, "--metrics-port", str(ports[0])) as aggregating,
        start_sink(names, "--metrics-port", str(ports[1])) as storing,
    ):
        windows = len(model_of(STREAM).windows) + 1  # and the one that is no aggregate
        processed = scraped_when_caught_up(
            ports[0], "sensor_processor_messages_total", len(BAD) + len(messages), aggregating
        )
        stored = scraped_when_caught_up(ports[1], "sensor_sink_aggregates_total", windows, storing)
        result = Run(processed, stored, windows - 1, table(postgres_url, names.table), "")
        assert aggregating.stop() == 0
        assert storing.stop() == 0
    result.processor_output = aggregating.output()
    return result


def scraped_when_caught_up(port: int, counter: str, expected: int, script: Script) -> dict:
    """The scrape once `counter` reaches `expected` and librdkafka reports, for each of
    the three partitions, that no message is left."""

    def caught_up() -> dict | None:
        if (found := scrape(port)) is None:
            return None
        lag = [v for (name, _), v in found.items() if name.endswith("_consumer_lag_messages")]
        done = found.get((counter, ()), 0) >= expected and len(lag) == 3 and not any(lag)
        return found if done else None

    what = f"{counter} reaching {expected}, and no lag, at port {port}"
    return wait_until(while_running(caught_up, script), 90, interval=0.5, what=what)


@pytest.mark.integration
def test_the_processor_counts_what_it_read_emitted_and_dead_lettered(run: Run) -> None:
    # Counted here from the stream, independently of the processor's own counters.
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
    # None of BAD is a reading: not the keyless one, nor the keyless watermark, nor a null.
    assert run.processor[("sensor_processor_readings_total", ())] == readings
    assert run.processor[("sensor_processor_watermarks_total", ())] == watermarks
    assert run.processor[("sensor_processor_windows_emitted_total", ())] == len(model.windows)
    assert run.processor[("sensor_processor_readings_aggregated_total", ())] == readings
    closed = run.processor[("sensor_processor_window_close_to_emit_seconds_count", ())]
    assert closed == len(model.windows)
    # The stream is from 2026-11-26: its event time trails the wall clock by days, at least.
    assert run.processor[("sensor_processor_event_time_lag_seconds", ())] > 86_400
    assert f"windows emitted={len(model.windows)}" in run.processor_output


@pytest.mark.integration
def test_the_sink_counts_the_rows_it_wrote_and_what_it_dead_lettered(run: Run) -> None:
    assert run.sink[("sensor_sink_aggregates_total", ())] == run.windows + 1
    assert run.sink[("sensor_sink_rows_written_total", ())] == len(run.table) == run.windows
    assert run.sink[("sensor_sink_write_errors_total", ())] == 0
    reasons = (("reason", "not-an-aggregate"),)
    assert run.sink[("sensor_sink_dead_letters_total", reasons)] == 1
    assert run.sink[("sensor_sink_write_seconds_count", ())] >= 1  # a round trip per batch


@pytest.mark.integration
def test_the_producer_counts_what_it_sent_and_the_broker_confirmed(
    broker_address: str, names: TopicNames, start_producer
) -> None:
    port = find_free_port()
    # 600 s of history at one reading per 20 s: 30 readings at once, a 31st live, then a
    # pause of 20 s in which the counts hold still.
    flags = ["--count", "0", "--rate", "0.05", "--backfill-seconds", "600", "--sensors", "3"]
    flags += ["--idle-watermark-seconds", "0", "--metrics-port", str(port)]
    with start_producer(names, *flags) as producing:

        def delivered_31() -> dict | None:
            found = scrape(port)
            delivered = found and found[("sensor_producer_readings_delivered_total", ())]
            return found if delivered == 31 else None

        found = wait_until(
            while_running(delivered_31, producing),
            60,
            interval=0.5,
            what="the producer's /metrics counting 31 readings delivered",
        )
        on_topic = len(read_to_end(broker_address, names.raw))
        assert producing.stop() == 0
    assert found[("sensor_producer_readings_total", ())] == on_topic == 31
    assert found[("sensor_producer_delivery_failures_total", ())] == 0
    assert found[("sensor_producer_watermarks_total", ())] == 0
    assert ("sensor_producer_rate_readings_per_second", ()) in found  # its value: test-fast
    assert "Delivered 31 of 31 readings" in producing.output()


@pytest.mark.integration
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


@pytest.mark.integration
def test_without_metrics_port_nothing_listens(names: TopicNames, start_processor) -> None:
    with start_processor(names) as aggregating:  # it creates its topics
        aggregating.wait_for_output("The application started")
        listening = [
            c
            for c in psutil.Process(aggregating.process.pid).net_connections()
            if c.status == psutil.CONN_LISTEN
        ]
        assert aggregating.stop() == 0
    assert listening == []
    assert "Metrics at" not in aggregating.output()
