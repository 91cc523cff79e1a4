"""The viewer: board, sparkline and table without a broker; plain lines and table with one."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import pty
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from rich.console import Console

from helpers import (
    RECORDED,
    REPO,
    T0,
    FakeMessage,
    aggregate_message,
    crash,
    create_topic,
    ms,
    produce,
    python_command,
    run_script,
)
from sensor_lib.aggregates import Aggregate, InvalidAggregate, parse_aggregate
from sensor_lib.consuming import read_to_end
from sensor_lib.embedded_broker import EmbeddedBroker
from sensor_lib.errors import UsageError
from sensor_lib.servers import ServerProcess, find_free_port
from sensor_lib.settings import BrokerSettings, load_settings
from sensor_stream_viewer import (
    SensorBoard,
    ViewerSettings,
    board_aggregates,
    format_footer,
    format_plain_line,
    render_table,
    sparkline,
)


def recorded_board() -> SensorBoard:
    board = SensorBoard()
    for key, value in RECORDED:
        board.add(parse_aggregate(key, value))
    return board


# --- Sparkline -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "width", "line"),
    [
        ([0, 1, 2, 3, 4, 5, 6, 7], 8, "▁▂▃▄▅▆▇█"),
        ([9, 0, 7, 7], 3, "▁██"),
        ([20.0, 20.5, 21.0], 10, "▁▅█"),
        ([21.5, 21.5, 21.5], 5, "▅▅▅"),
        ([], 5, ""),
        ([1.0, 2.0], 0, ""),
    ],
    ids=[
        "spans-lowest-to-highest-block",
        "keeps-only-the-last-width-values",
        "rounds-to-the-nearest-block",
        "a-flat-series-sits-in-the-middle",
        "nothing-is-empty",
        "no-width-is-empty",
    ],
)
def test_sparkline(values: list[float], width: int, line: str) -> None:
    assert sparkline(values, width) == line


# --- Parsing aggregates ----------------------------------------------------------------------


def test_parse_aggregate_reads_the_processor_output() -> None:
    assert parse_aggregate(*RECORDED[0]) == Aggregate(
        sensor="Sensor1", start_ms=ms(0), end_ms=ms(10), count=8, min=21.37, mean=21.5, max=21.9
    )


def stats(**changes: Any) -> bytes:
    message = json.loads(aggregate_message(0, 8, 21.0, 21.5, 22.0))
    for name, value in changes.items():
        if name in ("start", "end"):
            message[name] = value
        else:
            message["temperature"][name] = value
    return json.dumps(message).encode()


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, stats(), "no sensor key"),
        (b"Sensor1", None, "not an object"),
        (b"Sensor1", b"{not json", "not UTF-8 JSON"),
        (b"\xff", stats(), "not UTF-8 JSON"),
        (b"Sensor1", b"[1, 2]", "not an object"),
        (b"Sensor1", b'{"start": 0, "end": 10}', "not an object with a 'temperature'"),
        (b"Sensor1", stats(end=ms(0)), "bad window bounds"),
        (b"Sensor1", stats(start="05:08:00"), "bad window bounds"),
        (b"Sensor1", stats(count=0), "bad count 0"),
        (b"Sensor1", stats(count=True), "bad count True"),
        (b"Sensor1", stats(mean="21.5"), "not all numbers"),
        (b"Sensor1", stats(max=math.nan), "not all numbers"),
        (b"Sensor1", stats(min=None), "not all numbers"),
    ],
)
def test_parse_aggregate_rejects_malformed_messages(
    key: bytes | None, value: bytes | None, reason: str
) -> None:
    with pytest.raises(InvalidAggregate, match=re.escape(reason)):
        parse_aggregate(key, value)


def test_a_malformed_message_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    board = SensorBoard()
    messages = [FakeMessage(b"Sensor1", b"garbage", 41), FakeMessage(*RECORDED[0])]
    with caplog.at_level(logging.WARNING, logger="sensor_stream_viewer"):
        assert list(board_aggregates(iter(messages), board)) == [parse_aggregate(*RECORDED[0])]
    assert board.skipped == 1
    assert list(board.rows) == ["Sensor1"]
    assert [r.getMessage() for r in caplog.records] == [
        "Skipped malformed aggregate agg[0]@41: "
        "not UTF-8 JSON (Expecting value: line 1 column 1 (char 0))"
    ]


# --- The board ------------------------------------------------------------------------------


def test_board_counts_windows_and_keeps_recent_means_per_sensor() -> None:
    board = recorded_board()
    assert sorted(board.rows) == ["Sensor1", "Sensor10", "Sensor2"]
    assert [board.rows[s].windows for s in ("Sensor1", "Sensor2", "Sensor10")] == [3, 1, 1]
    assert list(board.rows["Sensor1"].means) == [21.5, 21.75, 21.625]
    assert board.rows["Sensor1"].last == parse_aggregate(*RECORDED[4])


def test_board_input_rate_sums_each_sensors_newest_complete_window() -> None:
    # Sensor1 8/10 s (its window at 10 s: a later one followed), Sensor2 8/10 s,
    # Sensor10 7/10 s (their only windows).
    assert recorded_board().input_rate() == pytest.approx(2.3)


def test_board_input_rate_ignores_the_last_window_a_stop_cut_short() -> None:
    board = recorded_board()
    board.add(parse_aggregate(b"Sensor1", aggregate_message(30, 3, 21.0, 21.2, 21.4)))
    assert board.input_rate() == pytest.approx(2.3)
    assert board.rows["Sensor1"].last.count == 3  # the table still shows the newest


def test_board_lag_is_now_minus_the_newest_window_end() -> None:
    assert recorded_board().lag_seconds(T0 + timedelta(seconds=42.5)) == 12.5
    assert SensorBoard().lag_seconds(T0) is None


def test_lag_is_never_negative_when_a_final_watermark_closed_a_window_ending_after_now() -> None:
    board = recorded_board()  # the newest window ends at T0 + 30 s
    assert board.lag_seconds(T0 + timedelta(seconds=21.2)) == 0.0
    assert "lag 0.0 s behind the newest window" in format_footer(board, T0)


def test_board_keeps_the_newest_window_when_an_older_one_arrives_later() -> None:
    board = SensorBoard()
    board.add(parse_aggregate(b"Sensor1", aggregate_message(10, 8, 21.0, 21.5, 22.0)))
    board.add(parse_aggregate(b"Sensor1", aggregate_message(0, 6, 20.0, 20.5, 21.0)))
    assert board.rows["Sensor1"].last.start_ms == ms(10)
    assert board.rows["Sensor1"].windows == 2


# --- Rendering ----------------------------------------------------------------------------


def render_text(board: SensorBoard, now: datetime, width: int = 80) -> list[str]:
    console = Console(record=True, width=width, color_system=None, file=io.StringIO())
    console.print(render_table(board, now))
    # Title and footer are centred; strip the padding so the lines read plainly.
    return [line.strip() for line in console.export_text().splitlines()]


def test_render_table_shows_one_row_per_sensor_in_natural_order() -> None:
    rendered_rows = render_text(recorded_board(), T0 + timedelta(seconds=42))
    assert rendered_rows == [
        "Temperature per sensor, latest window",
        "Sensor    Window (UTC)       Count    Min   Mean    Max  Recent means  Windows",
        "──────────────────────────────────────────────────────────────────────────────",
        "Sensor1   05:08:20-05:08:30      8  21.30  21.62  21.95  ▁█▅                 3",
        "Sensor2   05:08:10-05:08:20      8  24.00  24.12  24.30  ▅                   1",
        "Sensor10  05:08:00-05:08:10      7  18.02  18.25  18.60  ▅                   1",
        "input 2.3 readings/s · lag 12.0 s behind the newest window · 5 windows",
    ]


def test_footer_counts_skipped_messages() -> None:
    board = recorded_board()
    board.skipped = 2
    assert format_footer(board, T0 + timedelta(seconds=31)) == (
        "input 2.3 readings/s · lag 1.0 s behind the newest window · 5 windows"
        " · 2 malformed skipped"
    )


def test_render_table_of_an_empty_board_has_headers_only() -> None:
    assert render_text(SensorBoard(), T0)[1:4] == [
        "Sensor  Window (UTC)  Count  Min  Mean  Max  Recent means  Windows",
        "─" * 66,
        "input 0.0 readings/s · lag - · 0 windows",
    ]


def test_plain_line_format_is_stable() -> None:
    assert format_plain_line(parse_aggregate(*RECORDED[0])) == (
        "Sensor1 05:08:00-05:08:10 count=8 min=21.37 mean=21.50 max=21.90"
    )


def test_settings_come_from_flags_over_environment_over_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = load_settings(ViewerSettings, [])
    assert (defaults.agg_topic, defaults.start_at, defaults.duration) == (
        "agg-temperature",
        "earliest",
        0.0,
    )
    assert defaults.plain is False
    for name, value in {"START_AT": "latest", "DURATION": "5", "PLAIN": "true"}.items():
        monkeypatch.setenv(name, value)
    from_env = load_settings(ViewerSettings, ["--duration", "9"])
    assert (from_env.start_at, from_env.duration, from_env.plain) == ("latest", 9.0, True)


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--start-at", "middle"], "--start-at (START_AT): Input should be 'earliest' or 'latest'"),
        (["--duration", "-1"], "--duration (DURATION): Input should be greater than or equal to 0"),
    ],
)
def test_a_bad_setting_is_a_one_line_usage_error(flags: list[str], error: str) -> None:
    with pytest.raises(UsageError) as refused:
        load_settings(ViewerSettings, flags)
    (line,) = str(refused.value).splitlines()
    assert error in line


# --- With a real broker ---------------------------------------------------------------------


def viewer_command(address: str, names: Any, *flags: str) -> list[str]:
    return [
        *python_command("sensor_stream_viewer.py"),
        *("--broker-address", address, "--agg-topic", names.agg, *flags),
    ]


@pytest.mark.integration
def test_plain_mode_prints_one_line_per_aggregate(broker_address: str, names: Any) -> None:
    create_topic(broker_address, names.agg)
    produce(broker_address, names.agg, [*RECORDED[:3], (b"Sensor1", b"not json"), RECORDED[3]])
    result = run_script(
        "sensor_stream_viewer.py",
        *("--broker-address", broker_address, "--agg-topic", names.agg, "--duration", "5"),
        "--plain",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Sensor1 05:08:00-05:08:10 count=8 min=21.37 mean=21.50 max=21.90",
        "Sensor10 05:08:00-05:08:10 count=7 min=18.02 mean=18.25 max=18.60",
        "Sensor1 05:08:10-05:08:20 count=8 min=21.40 mean=21.75 max=22.10",
        "Sensor2 05:08:10-05:08:20 count=8 min=24.00 mean=24.12 max=24.30",
    ]
    assert f"Skipped malformed aggregate {names.agg}[0]@3: not UTF-8 JSON" in result.stderr
    assert "Consumer error" not in result.stderr  # reaching a partition's end is no error


@pytest.mark.integration
def test_plain_mode_stops_quietly_when_the_reader_goes_away(
    broker_address: str, names: Any
) -> None:
    create_topic(broker_address, names.agg)
    produce(broker_address, names.agg, RECORDED * 50)
    viewer = subprocess.Popen(
        viewer_command(broker_address, names, "--duration", "20"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert viewer.stdout is not None
    assert viewer.stderr is not None
    assert viewer.stdout.readline().startswith(b"Sensor1 05:08:00-05:08:10")
    viewer.stdout.close()  # like `| head -1`
    assert viewer.wait(timeout=30) == 0
    assert b"Traceback" not in viewer.stderr.read()


@pytest.mark.integration
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_stopped_viewer_reads_the_topic_to_its_end_and_exits_0(
    broker_address: str, names: Any, start_viewer, signum: int
) -> None:
    create_topic(broker_address, names.agg, partitions=3)
    produce(broker_address, names.agg, RECORDED[:1])
    with start_viewer(names) as viewer:
        viewer.wait_for_output("Sensor1 05:08:00-05:08:10 count=8", timeout=30)
        # The last windows arrive just before the stop, as in `make demo`: many
        # per record batch, whose tail the embedded broker's high watermark hides.
        last = [
            (f"Sensor{n}".encode(), aggregate_message(s, 9, 20.0, 21.0, 22.0))
            for s in range(10, 3010, 10)
            for n in (1, 2, 3)
        ]
        produce(broker_address, names.agg, last)
        assert viewer.stop(signum) == 0
    output = viewer.output()
    lines = [line for line in output.splitlines() if " count=" in line]
    assert len(lines) == 1 + len(last)
    assert lines.count("Sensor3 05:58:00-05:58:10 count=9 min=20.00 mean=21.00 max=22.00") == 1
    assert "Traceback" not in output
    assert " ERROR " not in output


@pytest.mark.integration
def test_live_table_in_a_terminal(broker_address: str, names: Any) -> None:
    create_topic(broker_address, names.agg)
    produce(broker_address, names.agg, RECORDED)
    terminal, viewer_end = pty.openpty()
    viewer = subprocess.Popen(
        viewer_command(broker_address, names, "--duration", "3"),
        cwd=REPO,
        stdout=viewer_end,
        stderr=subprocess.PIPE,
    )
    os.close(viewer_end)
    screen = b""
    with contextlib.suppress(OSError):  # EIO once the viewer has exited
        while chunk := os.read(terminal, 65536):
            screen += chunk
    os.close(terminal)
    assert viewer.wait(timeout=30) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode())  # drop cursor movements
    last_frame = text[text.rindex("Temperature per sensor") :]
    rows = [line.strip() for line in last_frame.splitlines() if line.startswith("Sensor")]
    assert rows == [
        "Sensor    Window (UTC)       Count    Min   Mean    Max  Recent means  Windows",
        "Sensor1   05:08:20-05:08:30      8  21.30  21.62  21.95  ▁█▅                 3",
        "Sensor2   05:08:10-05:08:20      8  24.00  24.12  24.30  ▅                   1",
        "Sensor10  05:08:00-05:08:10      7  18.02  18.25  18.60  ▅                   1",
    ]
    assert "5 windows" in last_frame


@pytest.mark.integration
def test_a_second_stop_gives_up_reading_to_the_end_with_what_was_read(
    broker_address: str, names: Any
) -> None:
    # A second Ctrl-C sets the stop's hurry, which the viewer's last read_to_end gives up on.
    create_topic(broker_address, names.agg)
    produce(broker_address, names.agg, RECORDED)
    broker = BrokerSettings(broker_address=broker_address)
    assert len(read_to_end(broker, names.agg)) == len(RECORDED)
    hurry = threading.Event()
    hurry.set()
    assert read_to_end(broker, names.agg, give_up=hurry) == []


@pytest.mark.integration
def test_a_lost_broker_is_one_line_and_a_stop_still_exits_0(
    names: Any, start_broker: Callable[..., ServerProcess], start_viewer
) -> None:
    port = find_free_port()
    address = f"127.0.0.1:{port}"
    with start_broker(port) as broker:
        create_topic(address, names.agg)
        produce(address, names.agg, RECORDED[:1])
        with start_viewer(names, address=address) as viewer:
            viewer.wait_for_output("Sensor1 05:08:00-05:08:10 count=8", timeout=30)
            broker.stop()
            viewer.wait_for_output(f"Lost the broker at {address}", timeout=30)
            time.sleep(3)  # librdkafka retries meanwhile, and would log each attempt
            assert viewer.stop(signal.SIGTERM) == 0
    output = viewer.output()
    # It saw the broker gone and did not try to read on to the end (DRAIN_TIMEOUT).
    assert f"The broker is away: {names.agg} not read to its end" in output
    assert output.count(f"Lost the broker at {address}") == 1
    assert "Connection refused" not in output
    assert "Traceback" not in output


@pytest.mark.integration
def test_a_viewer_waiting_for_its_topic_waits_on_through_a_broker_outage(
    names: Any, start_viewer
) -> None:
    # A broker that comes back empty, as a throwaway embedded one does, on either suite.
    port = find_free_port()
    address = f"127.0.0.1:{port}"
    broker = EmbeddedBroker(port).start()
    try:
        with start_viewer(names, address=address) as viewer:
            viewer.wait_for_output(f"Waiting for topic {names.agg}", timeout=30)
            broker.stop()
            viewer.wait_for_output(f"Lost the broker at {address}", timeout=30)
            # Away longer than one metadata request may take: the request fails, and the
            # viewer must wait on rather than end in a traceback.
            time.sleep(10 + 2)  # sensor_lib.topics.partitions_of asks for 10 s
            viewer.assert_running()
            broker.start()  # empty: the topic comes as a processor would create it
            create_topic(address, names.agg)
            produce(address, names.agg, RECORDED[:1])
            viewer.wait_for_output("Sensor1 05:08:00-05:08:10 count=8", timeout=60)
            assert viewer.stop(signal.SIGTERM) == 0
    finally:
        broker.stop()
    output = viewer.output()
    assert "Traceback" not in output
    assert output.count(f"Lost the broker at {address}") == 1


@pytest.mark.integration
def test_the_viewer_goes_on_showing_windows_once_the_broker_is_back(
    broker_to_crash: ServerProcess, names: Any, start_viewer
) -> None:
    address = broker_to_crash.address
    create_topic(address, names.agg)
    produce(address, names.agg, RECORDED[:1])
    with start_viewer(names, address=address) as viewer:
        viewer.wait_for_output("Sensor1 05:08:00-05:08:10 count=8", timeout=30)
        crash(broker_to_crash)
        viewer.wait_for_output(f"Lost the broker at {address}", timeout=30)
        broker_to_crash.start()
        produce(address, names.agg, RECORDED[1:3])
        viewer.wait_for_output("Sensor1 05:08:10-05:08:20 count=8", timeout=60)
        assert viewer.stop(signal.SIGTERM) == 0
    lines = [line for line in viewer.output().splitlines() if line.startswith("Sensor")]
    assert lines == [
        "Sensor1 05:08:00-05:08:10 count=8 min=21.37 mean=21.50 max=21.90",
        "Sensor10 05:08:00-05:08:10 count=7 min=18.02 mean=18.25 max=18.60",
        "Sensor1 05:08:10-05:08:20 count=8 min=21.40 mean=21.75 max=22.10",
    ]
    assert "Traceback" not in viewer.output()
