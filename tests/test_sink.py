"""The sink on a real PostgreSQL: one row per window, through a crash, a replay and an outage.

Every test runs the processor and the sink as subprocesses against the session's
broker and a real PostgreSQL server (the pgserver wheel's), and checks the table
row for row against the reference model's windows.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psycopg2
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import TopicNames
from helpers import (
    Script,
    create_topic,
    produce,
    read_to_end,
    run_script,
    sink,
    table,
    wait_until_caught_up,
)
from sensor_lib.postgres_server import PostgresServer
from test_pipeline import approx_means
from test_reliability import encode_stream, model_of, processor, sensor_stream

pytestmark = pytest.mark.integration

STREAM = sensor_stream(sensors=6, seconds=90, per_second=2, seed=24)
MODEL = model_of(STREAM)


def wait_for_rows(url: str, name: str, count: int, script: Script, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if len(table(url, name)) >= count:
                return
        except psycopg2.errors.UndefinedTable:
            pass  # the sink makes it when it starts
        assert script.process.poll() is None, script.output()
        assert time.monotonic() < deadline, f"fewer than {count} rows after {timeout}s"
        time.sleep(0.2)


def run_pipeline_halfway(address: str, names: TopicNames, tmp_path: Path) -> tuple[Script, int]:
    """The raw topic with the first half of STREAM, and a processor that has aggregated it."""
    messages = encode_stream(STREAM)
    create_topic(address, names.raw, partitions=3)
    produce(address, names.raw, messages[: len(messages) // 2])
    aggregating = processor(address, names, tmp_path / "state")
    wait_until_caught_up(address, names.group, names.raw, len(messages) // 2, scripts=[aggregating])
    return aggregating, len(messages)


def finish_pipeline(address: str, names: TopicNames, aggregating: Script, total: int) -> None:
    produce(address, names.raw, encode_stream(STREAM)[total // 2 :])
    wait_until_caught_up(address, names.group, names.raw, total, scripts=[aggregating])


def test_a_crashed_sink_and_a_replayed_topic_leave_exactly_one_row_per_window(
    broker_address: str, names: TopicNames, postgres_url: str, tmp_path: Path
) -> None:
    aggregating, total = run_pipeline_halfway(broker_address, names, tmp_path)
    with aggregating:
        with sink(broker_address, names, postgres_url) as first:
            wait_for_rows(postgres_url, names.table, 10, first)
            first.process.kill()  # a crash, mid-stream: rows written since the commit repeat
            first.process.wait()
        finish_pipeline(broker_address, names, aggregating, total)
        windows = len(read_to_end(broker_address, names.agg))
        with sink(broker_address, names, postgres_url) as second:
            wait_until_caught_up(
                broker_address, names.sink_group, names.agg, windows, scripts=[second]
            )
            assert second.stop() == 0
        assert aggregating.stop() == 0
    assert table(postgres_url, names.table) == approx_means(MODEL.windows)
    # Replay: the group goes back to the start of the topic; every row is written again.
    reset_to_start(broker_address, names.sink_group, names.agg)
    with sink(broker_address, names, postgres_url) as replay:
        wait_until_caught_up(broker_address, names.sink_group, names.agg, windows, scripts=[replay])
        assert replay.stop() == 0
    assert f"rows written={windows}" in replay.output()  # upserted, every one of them
    assert table(postgres_url, names.table) == approx_means(MODEL.windows)
    assert "Traceback" not in first.output() + second.output() + replay.output()


def reset_to_start(address: str, group: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": address})
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    start = [TopicPartition(topic, p, 0) for p in partitions]
    for future in admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, start)]
    ).values():
        future.result(timeout=30)


def test_a_database_away_for_10s_mid_stream_loses_no_row(
    broker_address: str, names: TopicNames, start_postgres, tmp_path: Path
) -> None:
    database: PostgresServer = start_postgres()
    aggregating, total = run_pipeline_halfway(broker_address, names, tmp_path)
    with aggregating, sink(broker_address, names, database.url) as storing:
        wait_for_rows(database.url, names.table, 10, storing)
        database.stop(keep_data=True)
        away = time.monotonic()
        finish_pipeline(broker_address, names, aggregating, total)  # the aggregates keep coming
        storing.wait_for_output(f"Lost the database at postgresql://sensor:***@{database.address}")
        time.sleep(max(0.0, away + 10 - time.monotonic()))  # away for 10 s
        database.start()
        windows = len(read_to_end(broker_address, names.agg))
        wait_until_caught_up(
            broker_address, names.sink_group, names.agg, windows, scripts=[storing]
        )
        assert storing.stop() == 0
        assert aggregating.stop() == 0
    assert table(database.url, names.table) == approx_means(MODEL.windows)
    output = storing.output()
    assert output.count("Lost the database at") == 1
    assert "is back after" in output
    assert "Traceback" not in output


def test_a_message_that_is_no_aggregate_is_dead_lettered_with_its_reason(
    broker_address: str, names: TopicNames, postgres_url: str
) -> None:
    create_topic(broker_address, names.agg)
    good = b'{"start": 0, "end": 10000, "temperature": {"count": 2, "min": 1, "max": 3, "mean": 2}}'
    empty = good.replace(b'"count": 2', b'"count": 0')
    messages = [("Sensor1", b"not json"), ("Sensor1", good), (None, good), ("Sensor2", empty)]
    produce(broker_address, names.agg, messages)
    with sink(broker_address, names, postgres_url) as storing:
        wait_until_caught_up(broker_address, names.sink_group, names.agg, 4, scripts=[storing])
        assert storing.stop() == 0
    dead = read_to_end(broker_address, f"{names.agg}-dlq")
    assert sorted(((r.key, r.value, r.headers["error"]) for r in dead), key=str) == sorted(
        [
            ("Sensor1", b"not json", b"invalid-json"),
            (None, good, b"no-key"),
            ("Sensor2", empty, b"bad-count"),
        ],
        key=str,
    )
    assert list(table(postgres_url, names.table)) == [("Sensor1", 0)]
    assert "dead-lettered bad-count=1, dead-lettered invalid-json=1, dead-lettered no-key=1" in (
        storing.output()
    )


@pytest.mark.parametrize("problem", ["wrong-password", "no-database"])
def test_a_database_that_refuses_or_is_not_there_is_one_line_naming_postgres_url(
    broker_address: str, names: TopicNames, postgres_url: str, problem: str
) -> None:
    url = postgres_url.replace(":sensor@", ":not-the-password@")
    if problem == "no-database":
        url = "postgresql://sensor:not-the-password@127.0.0.1:9/sensors"  # nothing listens on 9
    result = run_script(
        "sensor_stream_sink.py",
        "--broker-address",
        broker_address,
        "--agg-topic",
        names.agg,
        env={"POSTGRES_URL": url},
    )
    assert result.returncode == 1, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if " ERROR " in line]
    where = url.replace(":not-the-password@", ":***@")
    assert f"could not use the database at POSTGRES_URL {where} (" in error
    assert "make postgres" in error
    assert "not-the-password" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_the_sink_stops_on_sigint_with_its_summary(
    broker_address: str, names: TopicNames, postgres_url: str
) -> None:
    create_topic(broker_address, names.agg)
    with sink(broker_address, names, postgres_url) as storing:
        storing.wait_for_output("The application started")
        assert storing.stop(signal.SIGINT) == 0
    assert "Final summary: aggregates=0, rows written=0, write errors=0" in storing.output()
