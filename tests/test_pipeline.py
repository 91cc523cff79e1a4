"""The scripts as subprocesses against a real broker: windows checked value by value
against the reference model, with out-of-order, late and bad input, a quiet sensor, and
producer, processor and sink together into PostgreSQL."""

from __future__ import annotations

import json
import re
import signal
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from helpers import (
    BASE_MS,
    GRACE_MS,
    WINDOW_MS,
    approx_means,
    as_windows,
    create_topic,
    encode_stream,
    model_of_records,
    produce,
    read_to_end,
    table,
    wait_until_caught_up,
)
from reference_model import expected_windows

pytestmark = pytest.mark.integration


# Offsets in ms from BASE. Sensor1 exercises grace to the millisecond.
DATASET = [
    ("Sensor1", 500, 20.0),
    ("Sensor2", 1_000, -3),
    ("Sensor1", 3_200, 21.5),
    ("Sensor2", 2_000, -4.5),
    ("Sensor1", 9_999, 19.25),
    ("Sensor1", 10_000, 22.0),
    ("Sensor1", 9_700, 18.5),  # out of order, 300 ms after its window ended: within grace
    ("Sensor2", 12_000, 0),
    ("Sensor1", 10_999, 22.5),
    ("Sensor1", 9_000, 18.0),  # window [0, 10 s) still open: 10_999 - 1_000 < 10_000
    ("Sensor1", 11_000, 23.0),
    ("Sensor1", 9_500, 17.0),  # late: 11_000 - 1_000 reaches the window's end exactly
    ("Sensor2", 15_000, 7),
    ("Sensor1", 25_000, 24.0),
    ("Sensor1", 19_999, 30.0),  # late by far
    ("Sensor2", 31_000, -1.25),
    ("Sensor1", 40_000, 25.0),
]


def test_processor_emits_exactly_the_expected_windows(
    broker_address: str, names, start_processor
) -> None:
    create_topic(broker_address, names.raw, partitions=3)
    produce(broker_address, names.raw, encode_stream(DATASET))
    model = expected_windows([(s, BASE_MS + t, v) for s, t, v in DATASET], WINDOW_MS, GRACE_MS)
    assert (len(model.windows), len(model.late)) == (5, 2)  # the dataset does what it says

    with start_processor(names) as processor:
        wait_until_caught_up(
            broker_address, names.group, names.raw, len(DATASET), scripts=[processor]
        )
        windows = as_windows(read_to_end(broker_address, names.agg))
        assert windows == approx_means(model.windows)
        # The same line as every dead letter: where it was on the raw topic, key and reason.
        late = (
            rf"Dead-lettered {re.escape(names.raw)}\[\d+\]@\d+ key=b'Sensor\d+': late: reading at "
        )
        assert len(re.findall(late, processor.output())) == 2
        assert "reading at 2026-11-26T00:00:09.500+00:00 is 500 ms late" in processor.output()
        assert processor.process.poll() is None
        assert processor.stop(signal.SIGTERM) == 0


def test_a_quiet_sensor_keeps_its_last_window_until_it_reports_again(
    broker_address: str, names, start_processor
) -> None:
    chatty = [("Sensor1", t, 20.0 + t / 10_000) for t in range(0, 60_000, 2_000)]
    quiet = [("Sensor3", 1_000, 5.0), ("Sensor3", 4_000, 7.0)]
    create_topic(broker_address, names.raw, partitions=3)
    produce(broker_address, names.raw, encode_stream(quiet + chatty))
    with start_processor(names) as processor:
        wait_until_caught_up(
            broker_address, names.group, names.raw, len(quiet) + len(chatty), scripts=[processor]
        )
        windows = as_windows(read_to_end(broker_address, names.agg))
        # Sensor1's clock is at 58 s, but Sensor3's window [0, 10 s) waits for Sensor3.
        assert sorted(windows) == [("Sensor1", BASE_MS + s) for s in range(0, 50_000, 10_000)]

        produce(broker_address, names.raw, encode_stream([("Sensor3", 12_000, 6.0)]))
        wait_until_caught_up(
            broker_address,
            names.group,
            names.raw,
            len(quiet) + len(chatty) + 1,
            scripts=[processor],
        )
        windows = as_windows(read_to_end(broker_address, names.agg))
        assert windows[("Sensor3", BASE_MS)]["temperature"] == {
            "count": 2,
            "min": 5.0,
            "max": 7.0,
            "mean": 6.0,
        }
        assert processor.stop(signal.SIGINT) == 0
    assert "Traceback" not in processor.output()


BAD_MESSAGES: list[tuple[str | None, bytes]] = [
    ("Sensor1", b"\x00\x01 not json at all"),
    ("Sensor1", b"[1, 2, 3]"),
    ("Sensor1", json.dumps(json.dumps({"ts": "2026-11-26T00:00:01Z", "value": 1})).encode()),
    ("Sensor1", b'{"value": 20.0}'),
    ("Sensor1", b'{"ts": "not a time", "value": 20.0}'),
    ("Sensor1", b'{"ts": "2026-11-26T00:00:02Z"}'),
    ("Sensor1", b'{"ts": "2026-11-26T00:00:02Z", "value": "21.5"}'),
    ("Sensor1", b'{"ts": "2026-11-26T00:00:02Z", "value": true}'),
    (None, b'{"ts": "2026-11-26T00:00:03Z", "value": 99.0}'),
]


def test_bad_input_is_skipped_with_a_warning_and_good_readings_still_count(
    broker_address: str, names, start_processor
) -> None:
    good = [("Sensor1", t, float(t % 7)) for t in range(0, 24_000, 1_500)]
    messages: list[tuple[str | None, bytes]] = []
    for i, message in enumerate(encode_stream(good)):
        messages.append(message)
        if i < len(BAD_MESSAGES):
            messages.append(BAD_MESSAGES[i])
    create_topic(broker_address, names.raw, partitions=1)
    produce(broker_address, names.raw, messages)
    model = expected_windows([(s, BASE_MS + t, v) for s, t, v in good], WINDOW_MS, GRACE_MS)

    with start_processor(names) as processor:
        wait_until_caught_up(
            broker_address, names.group, names.raw, len(messages), scripts=[processor]
        )
        windows = as_windows(read_to_end(broker_address, names.agg))
        assert windows == approx_means(model.windows)
        warnings = [line for line in processor.output().splitlines() if "WARNING" in line]
        assert len(warnings) == len(BAD_MESSAGES), "\n".join(warnings)
        for reason in (
            "invalid-json",
            "not-an-object",
            "missing-ts",
            "bad-ts",
            "missing-value",
            "non-numeric-value",
            "no-key",
        ):
            assert reason in processor.output()
        assert processor.process.poll() is None
        assert processor.stop() == 0


def test_producer_count_makes_exactly_that_many_well_formed_messages(
    broker_address: str, names, start_producer
) -> None:
    flags = ["--count", "60", "--sensors", "4", "--rate", "0", "--seed", "3"]
    with start_producer(names, *flags) as producer:
        assert producer.wait() == 0, producer.output()
    assert "Delivered 60 of 60 readings" in producer.output()
    records = read_to_end(broker_address, names.raw)
    readings = [r for r in records if "watermark" not in r.json()]
    watermarks = [r for r in records if "watermark" in r.json()]
    assert len(readings) == 60
    assert sorted({r.key for r in readings}) == ["Sensor1", "Sensor2", "Sensor3", "Sensor4"]
    for record in readings:
        value = record.json()
        assert set(value) == {"ts", "value"}
        assert isinstance(value["value"], float)
        moment = datetime.fromisoformat(value["ts"])
        assert moment.utcoffset() == timedelta(0)
        assert record.timestamp_ms == (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
            milliseconds=1
        )
        uuid.UUID(record.headers["uuid"].decode())
    # On its clean stop, one watermark per sensor, 11 s past the last reading.
    assert sorted(r.key for r in watermarks) == ["Sensor1", "Sensor2", "Sensor3", "Sensor4"]
    last_reading_ms = max(r.timestamp_ms for r in readings)
    assert all(r.timestamp_ms >= last_reading_ms + 11_000 for r in watermarks)
    assert len({r.headers["uuid"] for r in records}) == len(records)


def test_producer_processor_and_sink_together_store_exactly_the_expected_windows(
    broker_address: str, names, postgres_url: str, start_producer, start_processor, start_sink
) -> None:
    one_second_windows = ["--window-seconds", "1", "--grace-seconds", "0"]
    with (
        start_processor(names, *one_second_windows) as processor,
        start_sink(names) as storing,
        start_producer(names, "--count", "150", "--sensors", "3", "--rate", "50") as producer,
    ):
        assert producer.wait() == 0, producer.output()
        raw = read_to_end(broker_address, names.raw)
        assert len(raw) == 150 + 3  # and a watermark per sensor when the producer stopped
        wait_until_caught_up(broker_address, names.group, names.raw, len(raw), scripts=[processor])
        model = model_of_records(raw, 1_000, 0)
        assert model.open_windows == {}  # the watermarks closed even the last windows
        assert len(model.windows) >= 9  # 3 s of readings: at least three windows each
        windows = as_windows(read_to_end(broker_address, names.agg))
        assert windows == approx_means(model.windows)
        assert processor.output().count("INFO sensor_stream_processor: Sensor") == len(windows)
        wait_until_caught_up(
            broker_address, names.sink_group, names.agg, len(windows), scripts=[storing]
        )
        assert table(postgres_url, names.table) == approx_means(model.windows)  # one row each
        assert processor.stop() == 0
        assert storing.stop() == 0
