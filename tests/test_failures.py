"""When things go wrong: the scripts as a user runs them, one test per row of the README's
"When things go wrong" table that no other test covers.

Each failure must end in one clear line, a documented exit status, no traceback, and
nothing lost. Tests that need a broker to refuse a topic name, or to keep its data over
a restart, run where the broker does that (`make test-kafka`) and say so where they skip.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from helpers import (
    Broker,
    Script,
    approx_means,
    crash,
    create_topic,
    encode_stream,
    error_lines,
    model_of_records,
    one_error_line,
    produce,
    read_to_end,
    run_script,
    sensor_stream,
    stream_messages,
    wait_until_caught_up,
    while_running,
    windows_allowing_identical_repeats,
)
from sensor_lib.embedded_broker import PROCESSOR_PRODUCER_CONFIG, EmbeddedBroker
from sensor_lib.errors import CannotRun
from sensor_lib.polling import Deadline, wait_until
from sensor_lib.preflight import check_saved_state_matches_broker
from sensor_lib.servers import ServerProcess, find_free_port
from sensor_lib.topics import TopicError, ensure_topic
from sensor_stream_processor import ProcessorSettings

pytestmark = pytest.mark.integration

PRODUCER = "sensor_stream_producer.py"
PROCESSOR = "sensor_stream_processor.py"
VIEWER = "sensor_stream_viewer.py"
REFUSED_NAME = "bad topic!"  # Apache Kafka allows only ASCII letters, digits, '.', '_', '-'


# --- No broker ------------------------------------------------------------------------


@pytest.mark.parametrize("script", [PRODUCER, PROCESSOR, VIEWER])
def test_missing_broker_is_one_clear_line(script: str) -> None:
    address = f"127.0.0.1:{find_free_port()}"
    started = time.monotonic()
    result = run_script(script, "--broker-address", address, "--broker-timeout", "2", timeout=30)
    assert result.returncode == 1
    assert time.monotonic() - started < 20
    assert result.stdout == ""
    (error,) = result.stderr.splitlines()
    assert f" ERROR {script[:-3]}: no Kafka broker answered at {address} within 2s" in error
    # What fits each setup, all on that one line.
    for way in (
        "`docker compose up -d` (Redpanda",
        "`make broker` (embedded, no Docker)",
        "`make kafka` (Apache Kafka",
    ):
        assert way in error


# --- Ctrl-C and SIGTERM ---------------------------------------------------------------


@contextmanager
def silent_broker() -> Iterator[socket.socket]:
    """A port that takes connections and never answers, like a broker still starting."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    try:
        yield server
    finally:
        server.close()


def wait_for_a_connection(server: socket.socket, script: Script, timeout: float = 30) -> None:
    """Return once `script` has connected: it is then waiting for the broker to answer."""

    def connected() -> bool:
        try:
            connection, _ = server.accept()  # waits up to the server's timeout
        except TimeoutError:
            return False
        connection.close()
        return True

    wait_until(while_running(connected, script), timeout, interval=0, what="a connection")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize(
    ("script", "line"),
    [
        (PRODUCER, "Stopped before producing anything"),
        (PROCESSOR, "Stopped before processing"),
        (VIEWER, "Stopped before showing anything"),
    ],
    ids=["producer", "processor", "viewer"],
)
def test_a_stop_while_waiting_for_the_broker_exits_0_at_once_with_one_line(
    script: str, line: str, signum: int, tmp_path: Path
) -> None:
    with silent_broker() as server:
        address = f"127.0.0.1:{server.getsockname()[1]}"
        with Script(
            script,
            "--broker-address",
            address,
            "--broker-timeout",
            "600",
            env={"STATE_DIR": str(tmp_path / "state")},
        ) as waiting:
            wait_for_a_connection(server, waiting)
            # Stopped within the bound, the script did not wait out the broker timeout.
            assert waiting.stop(signum, timeout=60) == 0
    output = waiting.output()
    assert "Traceback" not in output
    assert error_lines(output) == []
    assert [entry for entry in output.splitlines() if line in entry] != [], output


def wait_for_messages(address: str, topic: str, at_least: int, script: Script) -> None:
    """Wait until the topic's high watermarks sum to `at_least` (no consumer group to join)."""
    consumer = Consumer({"bootstrap.servers": address, "group.id": "watermarks-only"})

    def enough() -> bool:
        with suppress(KafkaException):
            partitions = consumer.list_topics(topic, timeout=5).topics[topic].partitions
            high = sum(
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                for p in partitions
            )
            return high >= at_least
        return False

    try:
        wait_until(while_running(enough, script), 30, what=f"{at_least} messages on {topic}")
    finally:
        consumer.close()


def test_producer_stopped_with_ctrl_c_delivers_every_reading_and_closes_every_window(
    broker_address: str, names, start_producer
) -> None:
    endless = ["--count", "0", "--rate", "100", "--sensors", "2", "--quiet"]
    with start_producer(names, *endless) as producer:
        wait_for_messages(broker_address, names.raw, 20, producer)
        assert producer.stop(signal.SIGINT) == 0
    output = producer.output()
    assert "Traceback" not in output
    assert error_lines(output) == []
    records = read_to_end(broker_address, names.raw)
    readings = [r for r in records if r.is_reading]
    watermarks = [r for r in records if r.json().get("watermark") is True]
    assert f"Delivered {len(readings)} of {len(readings)} readings" in output
    assert "(0 failed); 2 watermarks" in output
    # Every window is closed: the watermarks are a window and its grace past the last reading.
    assert model_of_records(records).open_windows == {}
    assert sorted(r.key for r in watermarks) == ["Sensor1", "Sensor2"]


# --- The broker goes away -------------------------------------------------------------


def test_processor_resumes_after_the_broker_is_killed_and_back_and_loses_no_window(
    broker_to_crash: ServerProcess, names, start_processor
) -> None:
    messages, model = stream_messages(sensors=4, seconds=60, per_second=4, seed=7)
    half = len(messages) // 2
    address = broker_to_crash.address
    create_topic(address, names.raw, partitions=3)
    produce(address, names.raw, messages[:half])
    with start_processor(names, address=address) as proc:
        wait_until_caught_up(address, names.group, names.raw, half, scripts=[proc])
        crash(broker_to_crash)
        broker_to_crash.start()
        produce(address, names.raw, messages[half:])
        wait_until_caught_up(
            address, names.group, names.raw, len(messages), timeout=120, scripts=[proc]
        )
        records = read_to_end(address, names.agg)
        assert proc.stop() == 0
    output = proc.output()
    assert "Traceback" not in output
    assert error_lines(output) == []
    assert output.count(f"Lost the broker at {address}") == 1  # not a line per retry
    assert windows_allowing_identical_repeats(records) == approx_means(model.windows)


def test_a_broker_gone_right_after_it_answered_is_one_line_at_each_start_up_check(
    tmp_path: Path,
) -> None:
    # Nothing listens at the address: what the checks after wait_for_broker meet if the
    # broker stops just after it answered, a moment no subprocess test can aim at.
    address = f"127.0.0.1:{find_free_port()}"
    settings = ProcessorSettings(broker_address=address, broker_timeout=1, state_dir=tmp_path)
    (settings.group_state_dir / "default" / settings.raw_topic / "0").mkdir(parents=True)
    with pytest.raises(TopicError) as creating:
        ensure_topic(settings, settings.raw_topic, 3, timeout=1)
    with pytest.raises(CannotRun) as checking:
        check_saved_state_matches_broker(settings, settings.raw_topic)
    # Creating a topic starts by counting the brokers, for its replication.
    assert str(creating.value).startswith(f"could not list the brokers at {address}: ")
    assert str(checking.value).startswith(f"could not list the topics at {address}: ")


def test_processor_whose_broker_stays_away_exits_1_with_one_line(names, start_processor) -> None:
    # The client notices the outage, whatever the broker: a throwaway embedded one will do.
    port = find_free_port()
    address = f"127.0.0.1:{port}"
    gone = EmbeddedBroker(port).start()
    try:
        with start_processor(names, "--broker-outage-timeout", "2", address=address) as proc:
            proc.wait_for_output("The application started")
            crash(gone)
            assert proc.wait(timeout=60) == 1
    finally:
        gone.stop()
    error = one_error_line(proc.output())
    assert f"the broker at {address} has been unreachable for more than 2 s" in error
    assert "BROKER_OUTAGE_TIMEOUT" in error


# --- Window state that cannot be used -------------------------------------------------


def test_processor_with_unwritable_state_dir_exits_1_with_one_line(
    names, tmp_path: Path, start_processor
) -> None:
    # A path under a file cannot be made, whoever runs the test (root ignores permissions).
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    state_dir = blocker / "state"
    with start_processor(names, state_dir=state_dir) as proc:
        assert proc.wait(timeout=30) == 1
    error = one_error_line(proc.output())
    assert f"cannot write window state under STATE_DIR {state_dir} (Not a directory)" in error


def test_processor_restarted_on_the_embedded_broker_without_its_setting_exits_1_with_one_line(
    embedded_broker: Broker, names, tmp_path: Path, start_processor
) -> None:
    """On `make broker`, a processor run without PRODUCER_CONFIG, stopped and started
    again, cannot restore its window state: one line says what to do.

    That what the line says works (a new state directory, rebuilt from the changelog,
    loses no window) is test_restart_mid_stream_loses_no_window[state-from-changelog].
    """
    address = embedded_broker.address  # Kafka reports exact high watermarks: Tansu's quirk
    messages = encode_stream(sensor_stream(sensors=3, seconds=60, per_second=4, seed=8))
    state = tmp_path / "state"
    without_setting = {"address": address, "state_dir": state, "env": {"PRODUCER_CONFIG": "{}"}}
    create_topic(address, names.raw, partitions=3)
    produce(address, names.raw, messages)
    with start_processor(names, **without_setting) as first:
        wait_until_caught_up(address, names.group, names.raw, len(messages), scripts=[first])
        assert first.stop(signal.SIGINT) == 0
    with start_processor(names, **without_setting) as second:
        assert second.wait(timeout=60) == 1
    error = one_error_line(second.output())
    assert "InvalidStoreChangelogOffset" in error
    assert f"remove {state / names.group} and start again" in error
    assert f"PRODUCER_CONFIG='{PROCESSOR_PRODUCER_CONFIG}'" in error


def test_processor_with_state_from_a_broker_that_is_gone_exits_1_with_one_line(
    broker_address: str, names, tmp_path: Path, start_processor
) -> None:
    """The demo's case: window state kept while the broker was replaced by an empty one.
    Restored, its old sensor clocks would count new readings as late. (The old broker is a
    throwaway embedded one; what counts is that the broker under test lacks its topics.)"""
    state = tmp_path / "state"
    messages = encode_stream(sensor_stream(sensors=2, seconds=20, per_second=2, seed=9))
    with EmbeddedBroker() as old:
        create_topic(old.address, names.raw, partitions=2)
        produce(old.address, names.raw, messages)
        with start_processor(names, address=old.address, state_dir=state) as first:
            wait_until_caught_up(
                old.address, names.group, names.raw, len(messages), scripts=[first]
            )
            assert first.stop() == 0
    create_topic(broker_address, names.raw, partitions=2)
    with start_processor(names, state_dir=state) as second:
        assert second.wait(timeout=60) == 1
    error = one_error_line(second.output())
    assert f"changelog__{names.group}--{names.raw}--" in error
    assert f"which the broker at {broker_address} does not have" in error
    assert f"remove {state / names.group} and start again" in error
    assert "Dead-lettered" not in second.output()  # it stopped before judging any reading


# --- Topics -------------------------------------------------------------------------------


def test_scripts_use_a_raw_topic_with_another_partition_count_and_say_so(
    broker_address: str, names, start_producer, start_processor
) -> None:
    create_topic(broker_address, names.raw, partitions=1)
    env = {"PARTITIONS": "3"}
    flags = ["--count", "90", "--sensors", "3", "--rate", "0", "--backfill-seconds", "30"]
    with start_producer(names, *flags, env=env) as producer:
        assert producer.wait() == 0, producer.output()
    note = f"Topic {names.raw} already exists with 1 partition; PARTITIONS=3 applies only"
    assert note in producer.output()
    assert "Delivered 90 of 90 readings" in producer.output()
    assert "Traceback" not in producer.output()
    with start_processor(names, env=env) as proc:
        wait_until_caught_up(broker_address, names.group, names.raw, 90 + 3, scripts=[proc])
        assert proc.stop() == 0
    assert note in proc.output()
    assert "Traceback" not in proc.output()
    assert error_lines(proc.output()) == []
    # Every reading is in an emitted window (the final watermarks closed the last ones).
    assert "Final summary: processed=93, aggregated=90," in proc.output()


def test_processor_on_a_raw_topic_created_without_settings_exits_1_with_one_line(
    embedded_broker: Broker, names, start_processor
) -> None:
    address = embedded_broker.address  # Kafka reports every topic config: Tansu's quirk
    # A plain client's metadata request makes the embedded broker create the topic,
    # with none of the settings the scripts create it with.
    produce(address, names.raw, [("Sensor1", b'{"ts": "2026-11-26T00:00:00Z"}')])
    with start_processor(names, address=address) as proc:
        assert proc.wait(timeout=60) == 1
    error = one_error_line(proc.output())
    assert f"topic {names.raw} at {address} has no retention.ms setting" in error


def recreate_topic(address: str, name: str, partitions: int, timeout: float = 30) -> None:
    """Delete `name`, then create it again with `partitions`, waiting for each step."""
    admin = AdminClient({"bootstrap.servers": address})
    admin.delete_topics([name])[name].result(timeout)
    deadline = Deadline(timeout)
    while True:
        topics = admin.list_topics(timeout=5).topics
        if name in topics and len(topics[name].partitions) == partitions:
            return
        assert not deadline.passed(), f"{name} not re-created within {timeout}s"
        if name not in topics:
            with suppress(KafkaException):  # Kafka may still be deleting it
                create_topic(address, name, partitions)
        time.sleep(0.2)


def test_processor_after_its_raw_topic_was_recreated_with_other_partitions_exits_1_with_one_line(
    broker_address: str, names, tmp_path: Path, start_processor
) -> None:
    create_topic(broker_address, names.raw, partitions=3)
    with start_processor(names, state_dir=tmp_path / "state") as first:
        first.wait_for_output("The application started")  # its changelog topic exists now
        assert first.stop() == 0, first.output()
    recreate_topic(broker_address, names.raw, partitions=1)
    with start_processor(names, state_dir=tmp_path / "state") as second:
        assert second.wait(timeout=60) == 1
    error = one_error_line(second.output())
    assert f"topic {names.raw} does not have as many partitions" in error
    assert "new CONSUMER_GROUP" in error


@pytest.mark.parametrize(
    ("script", "flag"),
    [(PRODUCER, "--raw-topic"), (PROCESSOR, "--agg-topic")],
    ids=["producer-raw-topic", "processor-agg-topic"],
)
def test_a_topic_name_the_broker_refuses_exits_1_with_one_line(
    script: str, flag: str, broker: Broker, names, start_producer, start_processor
) -> None:
    if broker.kind == "embedded":
        pytest.skip(
            "the embedded broker (Tansu) accepts any topic name; this test runs under "
            "`make test-kafka`"
        )
    start = start_producer if script == PRODUCER else start_processor
    with start(names, flag, REFUSED_NAME) as refused:  # the last of a flag given twice counts
        assert refused.wait(timeout=60) == 1
    error = one_error_line(refused.output())
    assert f"could not create topic {REFUSED_NAME!r} at {broker.address}" in error
