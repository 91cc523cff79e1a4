"""The sink on a real PostgreSQL: one row per window, through a crash, a replay and an outage.

Every test runs the processor and the sink as subprocesses against the session's
broker and a real PostgreSQL server (the pgserver wheel's), and checks the table
row for row against the reference model's windows.
"""

from __future__ import annotations

import signal
import time

import psycopg2
import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from helpers import (
    Script,
    TopicNames,
    approx_means,
    create_topic,
    one_error_line,
    produce,
    read_to_end,
    stream_messages,
    table,
    wait_until_caught_up,
    while_running,
)
from sensor_lib.polling import wait_until
from sensor_lib.postgres_server import PostgresServer

pytestmark = pytest.mark.integration

MESSAGES, MODEL = stream_messages(sensors=6, seconds=90, per_second=2, seed=24)
HALF = len(MESSAGES) // 2


def wait_for_rows(url: str, name: str, count: int, script: Script, timeout: float = 90) -> None:
    def enough_rows() -> bool:
        try:
            return len(table(url, name)) >= count
        except psycopg2.errors.UndefinedTable:
            return False  # the sink makes it when it starts

    wait_until(while_running(enough_rows, script), timeout, interval=0.2, what=f"{count} rows")


def run_pipeline_halfway(address: str, names: TopicNames, start_processor) -> Script:
    """The raw topic with the first half of STREAM, and a processor that has aggregated it."""
    create_topic(address, names.raw, partitions=3)
    produce(address, names.raw, MESSAGES[:HALF])
    aggregating = start_processor(names)
    wait_until_caught_up(address, names.group, names.raw, HALF, scripts=[aggregating])
    return aggregating


def finish_pipeline(address: str, names: TopicNames, aggregating: Script) -> None:
    produce(address, names.raw, MESSAGES[HALF:])
    wait_until_caught_up(address, names.group, names.raw, len(MESSAGES), scripts=[aggregating])


def test_a_crashed_sink_and_a_replayed_topic_leave_exactly_one_row_per_window(
    broker_address: str, names: TopicNames, postgres_url: str, start_processor, start_sink
) -> None:
    with run_pipeline_halfway(broker_address, names, start_processor) as aggregating:
        with start_sink(names) as first:
            wait_for_rows(postgres_url, names.table, 10, first)
            first.process.kill()  # a crash, mid-stream: rows written since the commit repeat
            first.process.wait()
        finish_pipeline(broker_address, names, aggregating)
        windows = len(read_to_end(broker_address, names.agg))
        with start_sink(names) as second:
            wait_until_caught_up(
                broker_address, names.sink_group, names.agg, windows, scripts=[second]
            )
            assert second.stop() == 0
        assert aggregating.stop() == 0
    assert table(postgres_url, names.table) == approx_means(MODEL.windows)
    # Replay: the group goes back to the start of the topic; every row is written again.
    reset_to_start(broker_address, names.sink_group, names.agg)
    with start_sink(names) as replay:
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
    broker_address: str, names: TopicNames, start_postgres, start_processor, start_sink
) -> None:
    database: PostgresServer = start_postgres()
    with (
        run_pipeline_halfway(broker_address, names, start_processor) as aggregating,
        start_sink(names, database=database.url) as storing,
    ):
        wait_for_rows(database.url, names.table, 10, storing)
        database.stop(keep_data=True)
        away = time.monotonic()
        finish_pipeline(broker_address, names, aggregating)  # the aggregates keep coming
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
    broker_address: str, names: TopicNames, postgres_url: str, start_sink
) -> None:
    create_topic(broker_address, names.agg)
    good = b'{"start": 0, "end": 10000, "temperature": {"count": 2, "min": 1, "max": 3, "mean": 2}}'
    empty = good.replace(b'"count": 2', b'"count": 0')
    messages = [("Sensor1", b"not json"), ("Sensor1", good), (None, good), ("Sensor2", empty)]
    produce(broker_address, names.agg, messages)
    with start_sink(names) as storing:
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
    names: TopicNames, postgres_url: str, start_sink, problem: str
) -> None:
    url = postgres_url.replace(":sensor@", ":not-the-password@")
    if problem == "no-database":
        url = "postgresql://sensor:not-the-password@127.0.0.1:9/sensors"  # nothing listens on 9
    with start_sink(names, database=url) as refused:
        assert refused.wait() == 1, refused.output()
    error = one_error_line(refused.output())
    where = url.replace(":not-the-password@", ":***@")
    assert f"could not use the database at POSTGRES_URL {where} (" in error
    assert "make postgres" in error
    assert "not-the-password" not in refused.output()


def test_the_sink_stops_on_sigint_with_its_summary(
    broker_address: str, names: TopicNames, start_sink
) -> None:
    create_topic(broker_address, names.agg)
    with start_sink(names) as storing:
        storing.wait_for_output("The application started")
        assert storing.stop(signal.SIGINT) == 0
    assert "Final summary: aggregates=0, rows written=0, write errors=0" in storing.output()
