"""`make demo` as a new user runs it: again and again, stopped in every way, on real brokers.

Each run is checked for a true picture: every sensor's windows shown, nothing
dead-lettered, the viewer's last line per sensor is the processor's last window
for it, the viewer shows as many windows as the processor emitted, and the
closing summary line says so too.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from helpers import (
    REPO,
    Script,
    TopicNames,
    children_of,
    command_of,
    crash,
    create_topic,
    descendants,
    read_to_end,
    running,
    tails,
    wait_until_stopped,
    while_running,
)
from sensor_lib.demo import closing_summary
from sensor_lib.polling import wait_until
from sensor_lib.servers import ServerProcess, find_free_port, is_listening

SENSORS = {f"Sensor{n}" for n in range(1, 6)}
NAME_VARIABLES = ("RAW_TOPIC", "AGG_TOPIC", "DLQ_TOPIC", "CONSUMER_GROUP")
AGGREGATE_LINE = re.compile(
    r"^(Sensor\d+) (\d\d:\d\d:\d\d)-(\d\d:\d\d:\d\d) count=(\d+) ", re.MULTILINE
)
PROCESSOR_WINDOW = re.compile(
    r"sensor_stream_processor: (Sensor\d+) \[\S+T(\d\d:\d\d:\d\d)\.000\+00:00,"
    r" \S+T(\d\d:\d\d:\d\d)\.000\+00:00\) count=(\d+) "
)
FINAL_SUMMARY = re.compile(r"Final summary: (.*)$", re.MULTILINE)
CLOSING_LINE = re.compile(
    r"^demo: (\d+) readings, (\d+) windows, (\d+) dead letters, (\d+) rows in sensor_windows "
    r"in \d+\.\d s$",
    re.MULTILINE,
)
DELIVERED = re.compile(r"^Delivered (\d+) of \1 readings .* \(0 failed\); 5 watermarks$", re.M)
TOPICS_LINE = re.compile(r"^demo: topics (\S+), (\S+), (\S+); consumer groups (\S+), (\S+)$", re.M)
BROKER_STARTED = re.compile(r"started the embedded broker on 127\.0\.0\.1:(\d+)")

Window = tuple[str, str, str, int]  # sensor, start, end (UTC clock times), count
# A bound for hangs, not a speed: under the whole suite's load a demo has taken 35 s to show
# its first windows (a database, topics, four scripts starting), against 7 s alone.
SHOWS_WITHIN = 120


def demo_env(broker_address: str, log_dir: Path, names: TopicNames | None = None) -> dict[str, str]:
    """The user's environment, with the demo's names only where a test gives them."""
    env = {k: v for k, v in os.environ.items() if k not in (*NAME_VARIABLES, "DURATION")}
    env.update(BROKER_ADDRESS=broker_address, DEMO_LOG_DIR=str(log_dir))
    if names is not None:
        env.update(RAW_TOPIC=names.raw, AGG_TOPIC=names.agg, CONSUMER_GROUP=names.group)
    return env


def nothing_listens_at() -> str:
    """An address with no broker, so the demo starts its own embedded broker there."""
    return f"127.0.0.1:{find_free_port()}"


@dataclass
class DemoRun:
    returncode: int
    stdout: str
    stderr: str
    log_dir: Path

    def log(self, name: str) -> str:
        return (self.log_dir / name).read_text()

    def windows_shown(self) -> list[Window]:
        return [(s, a, b, int(c)) for s, a, b, c in AGGREGATE_LINE.findall(self.stdout)]

    def windows_emitted(self) -> list[Window]:
        found = PROCESSOR_WINDOW.findall(self.log("processor.log"))
        return [(s, a, b, int(c)) for s, a, b, c in found]

    def final_counters(self) -> dict[str, int]:
        (summary,) = FINAL_SUMMARY.findall(self.log("processor.log"))
        pairs = (part.strip().rsplit("=", 1) for part in summary.split(","))
        return {name: int(value) for name, value in pairs}

    def topics(self) -> tuple[str, str, str, str, str]:
        found = TOPICS_LINE.search(self.stderr)
        assert found, self.stderr
        return found.groups()


def make_demo(env: dict[str, str], duration: int) -> DemoRun:
    result = subprocess.run(
        ["make", "demo", f"DURATION={duration}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=duration + 90,
        check=False,
    )
    return DemoRun(result.returncode, result.stdout, result.stderr, Path(env["DEMO_LOG_DIR"]))


def last_per_sensor(windows: list[Window]) -> dict[str, Window]:
    return {window[0]: window for window in windows}


def assert_true_picture(run: DemoRun, *, aborted_repeats: bool = False) -> None:
    """Every sensor shown up to its final window, nothing dead-lettered, counts that agree.

    The viewer shows each window the processor emitted, repeats included. With
    `aborted_repeats`, windows emitted twice were first emitted in a transaction that was
    aborted (exactly-once), which the viewer (read_committed) never sees: each shows once.
    """
    shown = run.windows_shown()
    assert {window[0] for window in shown} == SENSORS, run.stdout[-2000:] + run.stderr
    counters = run.final_counters()
    assert {k: v for k, v in counters.items() if k.startswith("dead-lettered") and v} == {}
    emitted = run.windows_emitted()
    assert sorted(shown) == sorted(set(emitted) if aborted_repeats else emitted)
    assert len(emitted) == counters["windows emitted"]
    # The viewer's last line per sensor is the window the final watermark closed.
    assert last_per_sensor(shown) == last_per_sensor(emitted)
    (delivered,) = DELIVERED.findall(run.log("producer.log"))
    closing = CLOSING_LINE.findall(run.stderr)
    windows = str(len(set(emitted)))  # one row per window, repeats or not
    assert closing == [(delivered, str(len(emitted)), "0", windows)], run.stderr
    assert "Traceback" not in run.stderr + run.log("processor.log") + run.log("producer.log")
    # The run's window state went with it.
    assert not (run.log_dir / "state").exists()


def assert_clean_run(run: DemoRun, *, interrupted: bool = False) -> None:
    """A true picture, and the closing line last; exit 0 unless make died of a Ctrl-C."""
    if not interrupted:
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr
    assert_true_picture(run)
    assert CLOSING_LINE.match(run.stderr.rstrip().splitlines()[-1]), run.stderr  # the last word


# --- Again and again --------------------------------------------------------------------


@pytest.mark.integration
def test_make_demo_runs_twice_on_a_broker_that_keeps_its_data_with_topics_of_its_own(
    broker_address: str, tmp_path: Path
) -> None:
    env = demo_env(broker_address, tmp_path)
    first = make_demo(env, duration=20)
    assert_clean_run(first)
    # The second run stops by Ctrl-C in the terminal: SIGINT to make and the demo.
    second = interrupt_make_demo(env)
    assert_true_picture(second)
    for run in (first, second):
        assert f"using the broker at {broker_address}" in run.stderr
        assert_final_windows_hold_the_last_readings(broker_address, run)
    raw, agg, dlq, group, sink_group = first.topics()
    assert re.fullmatch(r"demo-\d{8}T\d{6}-raw", raw)
    assert (agg, dlq, group, sink_group) == (
        raw[:-3] + "agg",
        raw + "-dlq",
        raw[:-3] + "group",
        raw[:-3] + "group-sink",
    )
    assert set(first.topics()).isdisjoint(second.topics())
    assert_remove_old_runs_keeps_only_what_is_not_theirs(broker_address, env, [first, second])


def assert_each_delivered_reading_once(run: DemoRun, address: str, crashed_at_ms: int) -> None:
    """After a broker crash, every acknowledged reading is on the raw topic once, as Kafka's
    system tests and Jepsen check. On failure it lists the copies, and when each reading was
    made against the crash, to show which write was repeated."""
    (delivered,) = DELIVERED.findall(run.log("producer.log"))
    readings = [r for r in read_to_end(address, run.topics()[0]) if r.is_reading]
    times = Counter(r.headers["uuid"] for r in readings)
    copies = [
        (r.partition, r.offset, r.timestamp_ms - crashed_at_ms)
        for r in readings
        if times[r.headers["uuid"]] > 1
    ]
    figures = (
        f"{len(readings)} readings on the raw topic, {len(times)} distinct, {delivered} "
        f"delivered; copies (partition, offset, made ms after the crash): {copies}"
    )
    assert len(readings) == len(times) == int(delivered), figures


@pytest.mark.integration
@pytest.mark.timeout(360)  # its own waits bound it: the first windows, the restart, the stop
@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_the_demo_rides_out_a_broker_restart_and_still_shows_a_true_picture(
    broker_to_crash: ServerProcess, tmp_path: Path, guarantee: str
) -> None:
    address = broker_to_crash.address
    crashed_at_ms: list[int] = []

    def restart_the_broker(shown: Path) -> None:
        before = len(AGGREGATE_LINE.findall(shown.read_text()))
        crashed_at_ms.append(int(time.time() * 1000))
        crash(broker_to_crash)
        broker_to_crash.start()
        wait_until(
            lambda: len(AGGREGATE_LINE.findall(shown.read_text())) >= before + len(SENSORS),
            90,
            what="a window of every sensor closed after the restart",
            explain=lambda: so_far(shown.parent),
        )

    env = {**demo_env(address, tmp_path), "PROCESSING_GUARANTEE": guarantee}
    run = interrupt_make_demo(env, meanwhile=restart_the_broker)
    assert_each_delivered_reading_once(run, address, crashed_at_ms[0])
    # The windows after the last commit come again, the same, once the processor has joined
    # its group again; exactly-once, the first ones were in the aborted transaction.
    assert_true_picture(run, aborted_repeats=guarantee == "exactly-once")
    assert f"using the broker at {address}" in run.stderr
    assert "exited early" not in run.stderr
    for script in ("producer.log", "processor.log"):
        assert run.log(script).count(f"Lost the broker at {address}") == 1, run.log(script)


def assert_remove_old_runs_keeps_only_what_is_not_theirs(
    address: str, env: dict[str, str], old: list[DemoRun]
) -> None:
    """What the README says to do about the topics that pile up: every topic and group of
    the old runs goes; a run still going (its group has a member) and a topic a user named
    stay."""
    going = f"demo-{datetime.now(UTC):%Y%m%dT%H%M%S}"  # later than both runs' start
    user_named = f"user-{going}-raw"
    for topic in (f"{going}-raw", user_named):
        create_topic(address, topic)
    member = Consumer({"bootstrap.servers": address, "group.id": f"{going}-group"})
    admin = AdminClient({"bootstrap.servers": address})
    try:
        member.subscribe([f"{going}-raw"])
        wait_until(
            lambda: member.poll(0.2) is None and member.assignment() != [],
            30,
            what=f"{going}-group having a member",
        )
        removed = run_demo(env, "--remove-old-runs")
        assert removed.returncode == 0, removed.stderr
        # Raw, aggregate, their two dead-letter topics and the changelog of each old run.
        assert removed.stderr == (
            f"demo: removed 10 topics of 2 earlier runs at {address}; kept 1 still running\n"
        )
        stamps = [run.topics()[0].removesuffix("raw") for run in old]  # "demo-<time>-"

        def theirs() -> list[str]:  # raw, agg, dlq and changelog topics
            return [t for t in admin.list_topics(timeout=10).topics if any(s in t for s in stamps)]

        wait_until(lambda: not theirs(), 30, what="the old runs' topics gone")
        assert {f"{going}-raw", user_named} <= set(admin.list_topics(timeout=10).topics)
        groups = {g.group_id for g in admin.list_consumer_groups().result(timeout=30).valid}
        assert not {group for run in old for group in run.topics()[3:]} & groups
    finally:
        member.close()
        admin.delete_topics([f"{going}-raw", user_named])


def interrupt_make_demo(
    env: dict[str, str], meanwhile: Callable[[Path], None] = lambda shown: None
) -> DemoRun:
    """`make demo`, and Ctrl-C once every sensor shows and `meanwhile(the viewer's output
    file)` has returned: SIGINT to the terminal's process group."""
    log_dir = Path(env["DEMO_LOG_DIR"])
    out, err = log_dir / "make.stdout", log_dir / "make.stderr"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        make = subprocess.Popen(
            ["make", "demo"],
            cwd=REPO,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )

        def every_sensor_shown() -> bool:
            assert make.poll() is None, f"make demo exited {make.returncode}\n{so_far(log_dir)}"
            return {w[0] for w in AGGREGATE_LINE.findall(out.read_text())} == SENSORS

        try:
            wait_until(
                every_sensor_shown,
                SHOWS_WITHIN,
                what=f"every sensor shown in {out}",
                explain=lambda: so_far(log_dir),
            )
            meanwhile(out)
            os.killpg(make.pid, signal.SIGINT)
            make.wait(timeout=60)
        finally:
            if make.poll() is None:
                os.killpg(make.pid, signal.SIGKILL)
                make.wait()
    run = DemoRun(make.returncode, out.read_text(), err.read_text(), log_dir)
    # make itself dies of the SIGINT it got; the demo under it stopped cleanly.
    assert "exited with errors" not in run.stderr
    assert "may be missing" not in run.stderr
    return run


def so_far(log_dir: Path) -> str:
    """What a demo that has not shown what it should has said: make's output and each
    script's log, their last lines."""
    names = ("make.stdout", "make.stderr", "producer.log", "processor.log", "sink.log")
    return tails(
        {name: (log_dir / name).read_text() for name in names if (log_dir / name).exists()}
    )


def assert_final_windows_hold_the_last_readings(address: str, run: DemoRun) -> None:
    """Each sensor's last window shown is the one that holds its last reading on the raw topic."""
    raw = run.topics()[0]
    last_reading: dict[str, datetime] = {}
    for record in read_to_end(address, raw):
        value = record.json()
        if record.key and not value.get("watermark"):
            moment = datetime.fromisoformat(value["ts"]).astimezone(UTC)
            last_reading[record.key] = max(moment, last_reading.get(record.key, moment))
    assert set(last_reading) == SENSORS
    for sensor, (_, start, end, _) in last_per_sensor(run.windows_shown()).items():
        clock = last_reading[sensor].strftime("%H:%M:%S")
        assert start <= clock < end or (end == "00:00:00" and start <= clock), (sensor, clock)


# --- Stopped from outside: a closed terminal, a crash ---------------------------------


@pytest.fixture
def running_demo(names, tmp_path: Path) -> Iterator[tuple[Script, list[int], int]]:
    """demo.py with its own embedded broker, once aggregates show; its children; the port."""
    env = demo_env(nothing_listens_at(), tmp_path, names)
    with Script("sensor_lib.demo", env=env) as demo:
        children: list[int] = []
        try:
            shown = while_running(lambda: AGGREGATE_LINE.search(demo.output()), demo)
            wait_until(shown, SHOWS_WITHIN, what="an aggregate shown")
            found = BROKER_STARTED.search(demo.output())
            assert found, demo.output()
            children = children_of(demo.process.pid)
            commands = [command_of(pid) for pid in children]
            assert len(children) == 6, commands  # broker, database and the four scripts
            for script in ("tansu", "bin/postgres", "processor", "producer", "sink", "viewer"):
                assert any(script in command for command in commands), commands
            yield demo, children, int(found.group(1))
        finally:  # never leave one behind, even when the test fails
            for pid in {*children, *children_of(demo.process.pid)}:
                if running(pid):
                    os.kill(pid, signal.SIGKILL)


METRICS_URL = re.compile(r"(http://127\.0\.0\.1:\d+/metrics) \((producer|processor|sink)\)")


def assert_the_metrics_urls_answer(output: str) -> None:
    """The demo prints a /metrics URL per script, and each answers with that script's metrics."""
    urls = dict((name, url) for url, name in METRICS_URL.findall(output))
    assert set(urls) == {"producer", "processor", "sink"}, output
    counts = {"producer": "readings", "processor": "readings", "sink": "rows_written"}

    def counted(name: str) -> float:
        with urllib.request.urlopen(urls[name], timeout=10) as response:  # noqa: S310
            text = response.read().decode()
        families = {f.name: f.samples for f in text_string_to_metric_families(text)}
        return families[f"sensor_{name}_{counts[name]}"][0].value

    for name in urls:  # each counts up while the demo runs (the sink commits every second)
        wait_until(lambda name=name: counted(name) > 0, 30, what=f"{name} counting at {urls}")


@pytest.mark.integration
def test_two_demos_started_at_once_serve_metrics_on_ports_of_their_own(
    broker_address: str, postgres_url: str, tmp_path: Path
) -> None:
    ports = []
    with ExitStack() as stack:
        demos = []
        for name in ("first", "second"):
            names = TopicNames(f"two_demos_{name}")
            env = demo_env(broker_address, tmp_path / name, names)
            env.update(POSTGRES_URL=postgres_url, SINK_TABLE=names.table)
            demos.append(stack.enter_context(Script("sensor_lib.demo", "--duration=10", env=env)))
        for demo in demos:
            assert demo.wait(timeout=120) == 0, demo.output()
            ports.append({url for url, _ in METRICS_URL.findall(demo.output())})
    assert len(ports[0]) == len(ports[1]) == 3, ports
    assert ports[0].isdisjoint(ports[1]), ports


@pytest.mark.integration
def test_a_second_demo_is_refused_and_sighup_then_stops_every_child_within_5s(
    running_demo: tuple[Script, list[int], int], tmp_path: Path, one_at_a_time
) -> None:
    demo, children, port = running_demo
    assert_the_metrics_urls_answer(demo.output())
    # One demo per log folder: a second one there is refused, and the first runs on.
    second = run_demo(demo_env(f"127.0.0.1:{port}", tmp_path))
    assert second.returncode == 1, second.stderr
    assert second.stderr == (
        f"demo: another demo is running with its logs in {tmp_path}/; stop it, "
        "or set DEMO_LOG_DIR to another folder\n"
    )
    assert all(map(running, children))
    assert any((tmp_path / "state").iterdir())  # the first run's window state is untouched
    with one_at_a_time():
        demo.process.send_signal(signal.SIGHUP)  # what a closed terminal sends
        wait_until_stopped(children, 5, port=port)
    assert demo.wait(timeout=30) == 0, demo.output()
    assert CLOSING_LINE.search(demo.output()), demo.output()


@pytest.mark.integration
def test_sigkill_of_the_demo_stops_every_child_within_5s_and_the_next_run_starts_clean(
    running_demo: tuple[Script, list[int], int], names, tmp_path: Path, one_at_a_time
) -> None:
    demo, children, port = running_demo
    with one_at_a_time():
        demo.process.kill()  # a crash: no chance to clean up; the kernel tells the children
        wait_until_stopped(children, 5, port=port)
    assert any((tmp_path / "state").iterdir())  # the crashed run's window state is left over
    # The next run, with the same names and log folder, on its own broker and database,
    # must not trip over it. It stops once every sensor shows: on a busy machine, a
    # DURATION could end it before the scripts start.
    env = demo_env(f"127.0.0.1:{port}", tmp_path, names)
    run = interrupt_make_demo(env)
    assert_clean_run(run, interrupted=True)
    assert BROKER_STARTED.search(run.stderr), run.stderr
    assert "started an embedded PostgreSQL" in run.stderr
    assert run.topics() == (names.raw, names.agg, names.dlq, names.group, names.group + "-sink")
    assert not list(tmp_path.glob("postgres*"))  # the database went with the run


def in_a_terminal(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`command` run by a terminal of its own, as `xterm -e make demo` does: the session
    leader of a new pseudo-terminal. Killing the returned process closes the terminal."""
    return subprocess.Popen(
        ["script", "--quiet", "--flush", "--command", command, str(log)],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def close_terminal_and_check_all_stop(
    terminal: subprocess.Popen[bytes], port: int, one_at_a_time: Callable
) -> None:
    """Close the terminal; everything it ran must stop within 5 s and free the broker's port."""
    processes = descendants(terminal.pid)
    try:
        with one_at_a_time():
            terminal.kill()  # the window closes: the kernel hangs up its terminal
            terminal.wait()
            wait_until_stopped(processes, 5, port=port)
    finally:
        for pid in processes:
            if running(pid):
                os.kill(pid, signal.SIGKILL)


# Closing a terminal sends SIGHUP to its session leader only. Where that is make itself,
# make waits for its child, which hears nothing: the launchers must notice the hang-up.


@pytest.mark.integration
def test_closing_the_terminal_that_runs_make_demo_stops_every_process_within_5s(
    names, tmp_path: Path, one_at_a_time
) -> None:
    address = nothing_listens_at()
    env = demo_env(address, tmp_path, names)
    terminal = in_a_terminal("make demo", env, tmp_path / "terminal.log")
    processor_log = tmp_path / "processor.log"
    wait_until(
        lambda: processor_log.exists() and PROCESSOR_WINDOW.search(processor_log.read_text()),
        90,
        what=f"a window in {processor_log}",
    )
    close_terminal_and_check_all_stop(terminal, int(address.rsplit(":", 1)[1]), one_at_a_time)
    # It stopped as on SIGHUP: in order, each script with its last words.
    assert FINAL_SUMMARY.search(processor_log.read_text())
    assert DELIVERED.search((tmp_path / "producer.log").read_text())
    assert not (tmp_path / "state").exists()


@pytest.mark.integration
def test_closing_the_terminal_that_runs_make_broker_stops_the_broker_within_5s(
    tmp_path: Path, one_at_a_time
) -> None:
    port = find_free_port()
    terminal = in_a_terminal(f"make broker BROKER_PORT={port}", dict(os.environ), tmp_path / "t")
    wait_until(lambda: is_listening("127.0.0.1", port), 60, what=f"a broker on port {port}")
    close_terminal_and_check_all_stop(terminal, port, one_at_a_time)


# --- Failures before anything starts ------------------------------------------------


@pytest.mark.integration
def test_unwritable_log_folder_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """DEMO_LOG_DIR under a file (or on a read-only disk): one line, before any broker."""
    (tmp_path / "a-file").write_text("")
    log_dir = tmp_path / "a-file" / "demo-logs"
    result = run_demo(demo_env(nothing_listens_at(), log_dir))
    assert result.returncode == 1, result.stderr
    assert result.stderr == f"demo: cannot write the logs to {log_dir}/: Not a directory\n"
    assert result.stdout == ""


@pytest.mark.integration
def test_bad_setting_is_a_one_line_usage_error_with_exit_2(tmp_path: Path) -> None:
    result = run_demo({**demo_env(nothing_listens_at(), tmp_path), "DURATION": "-1"})
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "--duration (DURATION)" in result.stderr
    assert not (tmp_path / "producer.log").exists()  # stopped before it started anything


PROCESSOR_COUNTS = {
    "sensor_processor_messages_total": 48.0,
    "sensor_processor_readings_total": 52.0,  # some read twice: the topic's count is used
    "sensor_processor_windows_emitted_total": 8.0,
    "sensor_processor_dead_letters_total": 3.0,
}


@pytest.mark.parametrize(
    ("readings", "processor", "line"),
    [
        ("40", PROCESSOR_COUNTS, "40 readings, 8 windows, 3 dead letters, 8 rows in t in 4.0 s"),
        # Stopped while it started (a short DURATION on a busy machine): nothing to ask.
        (
            "40",
            None,
            "40 readings, ? windows, ? dead letters, 8 rows in t in 4.0 s; "
            "the processor stopped before reporting",
        ),
    ],
    ids=["reported", "silent"],
)
def test_the_closing_line_counts_the_topics_readings_and_the_processors_windows(
    readings: str, processor: dict[str, float] | None, line: str
) -> None:
    assert closing_summary(readings, processor, 4.04, "8", "t") == line


def run_demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sensor_lib.demo", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
