"""Test support that is not a fixture. The fixtures are in suite_fixtures.py; the
model of the windowing rules is reference_model.py.

- Test data: event times, readings and watermarks as the producer writes them, sensor
  streams and the windows the reference model expects of them, aggregates as the
  processor writes them.
- Topics: create, produce, consume, read to the end, a consumer group's progress.
- Scripts: a script running in the background (`Script`), or run to its end (`run_script`).
- Processes: who runs below whom and who still runs (psutil); a broker's crash.

Every wait polls with sensor_lib.polling's `wait_until`, or counts down its `Deadline`
where the loop does work of its own; `while_running` makes a wait fail at once, with
the output, when a script it depends on has exited.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import psutil
import psycopg2
import pytest
from confluent_kafka import Consumer, KafkaException, Message, Producer

from reference_model import Expected, expected_windows
from sensor_lib import consuming
from sensor_lib.event_time import to_epoch_ms
from sensor_lib.polling import Deadline, wait_until
from sensor_lib.servers import ServerProcess, is_listening
from sensor_lib.settings import BrokerSettings
from sensor_lib.topics import ensure_topic

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
# The SCRAM user the session's Kafka broker is formatted with (SCRAM-SHA-256 and -512).
SCRAM_USER = ("sensor-app", "correct-horse-battery-staple")


@dataclass(frozen=True)
class Broker:
    """The broker a fixture hands a test."""

    kind: str  # "embedded", "kafka" or "external"
    address: str
    sasl_address: str | None = None  # SASL_PLAINTEXT with SCRAM_USER, where the broker has it


class TopicNames:
    """A test's own topic, group and table names: <test name>_<uuid>-<role>."""

    def __init__(self, test_name: str) -> None:
        clean = "".join(c if c.isalnum() else "_" for c in test_name)[:40]
        self.prefix = f"{clean}_{uuid.uuid4().hex[:8]}"
        self.raw = f"{self.prefix}-raw"
        self.agg = f"{self.prefix}-agg"
        self.dlq = f"{self.prefix}-raw-dlq"
        self.group = f"{self.prefix}-group"
        self.sink_group = f"{self.prefix}-sink"
        self.table = f"windows_{self.prefix[-8:]}"


# --- Test data: raw readings ------------------------------------------------------

BASE = datetime(2026, 11, 26, tzinfo=UTC)
BASE_MS = 1_795_651_200_000  # BASE in epoch milliseconds
WINDOW_MS = 10_000  # the processor's default window
GRACE_MS = 1_000  # and grace

Stream = list[tuple[str, int, float | None]]  # (sensor, ms after BASE, value; None: a watermark)


def reading(ts: str, value: Any) -> bytes:
    return json.dumps({"ts": ts, "value": value}).encode()


def iso(offset_ms: int, style: int) -> str:
    """BASE + `offset_ms`, written in one of five ways the processor must all accept."""
    moment = BASE + timedelta(milliseconds=offset_ms)
    match style % 5:
        case 0:
            return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        case 1:
            return moment.astimezone(timezone(timedelta(hours=2))).isoformat()
        case 2:
            return moment.replace(tzinfo=None).isoformat(timespec="milliseconds")
        case 3:
            return moment.astimezone(timezone(timedelta(hours=-5, minutes=-30))).isoformat()
        case _:
            return moment.isoformat(timespec="microseconds")


def encode_stream(stream: Stream) -> list[tuple[str, bytes]]:
    """(key, value) messages: readings with their times written every way in turn, and
    watermarks as the producer writes them."""
    messages = []
    for i, (sensor, offset_ms, value) in enumerate(stream):
        if value is None:
            payload = json.dumps({"ts": iso(offset_ms, 0), "watermark": True}).encode()
        else:
            payload = reading(iso(offset_ms, i), value)
        messages.append((sensor, payload))
    return messages


def sensor_stream(sensors: int, seconds: int, per_second: int, seed: int) -> Stream:
    """Readings every 1/per_second s per sensor, a little out of order, then final watermarks."""
    rng = random.Random(seed)
    stream: Stream = []
    for step in range(seconds * per_second):
        for n in range(1, sensors + 1):
            jitter = rng.randint(0, 400)  # within the 1 s grace
            stream.append(
                (f"Sensor{n}", step * 1000 // per_second + jitter, round(rng.uniform(15, 30), 2))
            )
    end = seconds * 1000 + 400
    stream += [(f"Sensor{n}", end + WINDOW_MS + GRACE_MS, None) for n in range(1, sensors + 1)]
    return stream


def model_of(stream: Stream) -> Expected:
    """The windows the reference model expects of `stream`, every one closed."""
    model = expected_windows([(s, BASE_MS + t, v) for s, t, v in stream], WINDOW_MS, GRACE_MS)
    assert model.open_windows == {}  # the final watermarks close every window
    return model


def stream_messages(
    sensors: int, seconds: int, per_second: int, seed: int
) -> tuple[list[tuple[str, bytes]], Expected]:
    """A sensor_stream's messages, and the windows the reference model expects of them."""
    stream = sensor_stream(sensors, seconds, per_second, seed)
    return encode_stream(stream), model_of(stream)


def model_of_records(
    records: list[Record], window_ms: int = WINDOW_MS, grace_ms: int = GRACE_MS
) -> Expected:
    """The windows the reference model expects of what is on a raw topic."""
    readings = [(r.key, r.timestamp_ms, r.json().get("value")) for r in records]
    return expected_windows(readings, window_ms, grace_ms)


# --- Test data: windows -------------------------------------------------------------


def as_windows(records: list[Record]) -> dict[tuple[str, int], dict[str, object]]:
    """Aggregates by (sensor, start); each window once, stamped with its start."""
    windows: dict[tuple[str, int], dict[str, object]] = {}
    for record in records:
        value = record.json()
        key = (record.key, value["start"])
        assert key not in windows, f"window emitted twice: {key}"
        assert record.timestamp_ms == value["start"]
        windows[key] = value
    return windows


def windows_allowing_identical_repeats(records: list[Record]) -> dict:
    """At-least-once: a window may be emitted again after a crash, but only with equal values."""
    seen: dict[tuple[str, int], dict] = {}
    for record in records:
        value = record.json()
        key = (record.key, value["start"])
        if key in seen:
            assert seen[key] == value, f"{key} emitted twice with different values"
        seen[key] = value
    return seen


def approx_means(windows: dict[tuple[str, int], dict]) -> dict[tuple[str, int], dict]:
    """`windows` with each mean compared to 12 digits (a sum's order changes its last bits)."""
    return {
        key: {
            **w,
            "temperature": {
                **w["temperature"],
                "mean": pytest.approx(w["temperature"]["mean"], rel=1e-12),
            },
        }
        for key, w in windows.items()
    }


# --- Test data: aggregates, as recorded from a run of the processor -----------------

T0 = datetime(2026, 3, 1, 5, 8, 0, tzinfo=UTC)


def ms(seconds_after_t0: float) -> int:
    return int((T0 + timedelta(seconds=seconds_after_t0)).timestamp() * 1000)


def aggregate_message(start_s: int, count: int, low: float, mean: float, high: float) -> bytes:
    """An aggregate exactly as sensor_stream_processor.py writes it, for a 10 s window."""
    return json.dumps(
        {
            "start": ms(start_s),
            "end": ms(start_s + 10),
            "temperature": {"count": count, "min": low, "max": high, "mean": mean},
        }
    ).encode()


# (key, value) as they sat on the aggregate topic.
RECORDED = [
    (b"Sensor1", aggregate_message(0, 8, 21.37, 21.5, 21.9)),
    (b"Sensor10", aggregate_message(0, 7, 18.02, 18.25, 18.6)),
    (b"Sensor1", aggregate_message(10, 8, 21.4, 21.75, 22.1)),
    (b"Sensor2", aggregate_message(10, 8, 24.0, 24.125, 24.3)),
    (b"Sensor1", aggregate_message(20, 8, 21.3, 21.625, 21.95)),
]


@dataclass
class FakeMessage:
    """The parts of confluent_kafka.Message the viewer and the chart read."""

    _key: bytes | None
    _value: bytes | None
    _offset: int = 0

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return "agg"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


# --- Topics -------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    key: str | None
    value: bytes | None
    headers: dict[str, bytes]
    timestamp_ms: int
    partition: int
    offset: int

    def json(self) -> Any:
        assert self.value is not None
        return json.loads(self.value)

    @property
    def is_reading(self) -> bool:
        """A reading, not a watermark, as the producer writes them on the raw topic."""
        return "value" in self.json()


def to_record(msg: Message) -> Record:
    key = msg.key()
    return Record(
        key=key.decode() if key is not None else None,
        value=msg.value(),
        headers={k: v for k, v in (msg.headers() or [])},
        timestamp_ms=msg.timestamp()[1],
        partition=msg.partition(),
        offset=msg.offset(),
    )


def create_topic(address: str, name: str, partitions: int = 1) -> None:
    """Create a topic the way the scripts do (explicit retention)."""
    ensure_topic(BrokerSettings(broker_address=address), name, partitions, timeout=30)


def produce(
    address: str,
    topic: str,
    messages: Iterable[tuple[str | bytes | None, bytes | None]],
    *,
    partition: int | None = None,
) -> None:
    """Produce (key, value) pairs in order and wait until all are delivered."""
    # Idempotence keeps the order through retries: under load a retried batch could
    # otherwise land after the next one, and its readings would arrive late.
    producer = Producer({"bootstrap.servers": address, "linger.ms": 5, "enable.idempotence": True})
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for key, value in messages:
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": on_delivery}
        if partition is not None:
            kwargs["partition"] = partition
        producer.produce(topic, **kwargs)
        producer.poll(0)
    assert producer.flush(30) == 0, "messages still queued after 30 s"
    assert errors == []


def consume(
    address: str,
    topic: str,
    *,
    until: Callable[[list[Record]], bool],
    timeout: float = 60.0,
) -> list[Record]:
    """Read `topic` from the start, following it as it grows, until `until(records)` holds."""
    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "group.id": f"test-reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            # Notice a topic created after subscribing within a second, not minutes.
            "topic.metadata.refresh.interval.ms": 1000,
        }
    )
    records: list[Record] = []
    deadline = Deadline(timeout)
    try:
        consumer.subscribe([topic])
        while not until(records):
            assert not deadline.passed(), (
                f"condition not met on {topic} within {timeout}s; got {len(records)} records"
            )
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            records.append(to_record(msg))
    finally:
        consumer.close()
    return records


def consume_count(address: str, topic: str, count: int, **kwargs: Any) -> list[Record]:
    return consume(address, topic, until=lambda records: len(records) >= count, **kwargs)


def read_to_end(
    address: str, topic: str, timeout: float = 60.0, isolation: str = "read_uncommitted"
) -> list[Record]:
    """Every record now on `topic`, in partition order."""
    broker = BrokerSettings(broker_address=address)
    return [
        to_record(message)
        for message in consuming.read_to_end(broker, topic, timeout=timeout, isolation=isolation)
    ]


def committed_total(address: str, group: str, topic: str) -> int:
    """Sum of the offsets `group` has committed on `topic`'s partitions."""
    broker = BrokerSettings(broker_address=address)
    return sum(consuming.committed_offsets(broker, group, topic).values())


def wait_until_caught_up(
    address: str,
    group: str,
    topic: str,
    total: int,
    timeout: float = 60.0,
    scripts: Iterable[Script] = (),
) -> None:
    """Wait until `group` has committed `total` messages of `topic` (offsets start at 0).

    Fails at once if one of `scripts`, the processes doing the work, has exited. An
    error (Kafka's group coordinator still loading, say) means "not yet".
    """
    last = {"committed": 0, "error": ""}

    def caught_up() -> bool:
        try:
            last["committed"] = committed_total(address, group, topic)
        except KafkaException as exc:
            last["error"] = f" (last error: {exc.args[0].str()})"
        return last["committed"] >= total

    wait_until(
        while_running(caught_up, *scripts),
        timeout,
        interval=0.25,
        what=f"{group} committing {total} messages of {topic}",
        explain=lambda: f"{last['committed']} committed{last['error']}",
    )


# --- Scripts ------------------------------------------------------------------------


def python_command(script: str) -> list[str]:
    """`python <script>` for a file, `python -m <module>` for a module such as sensor_lib.demo."""
    return [sys.executable, str(REPO / script) if script.endswith(".py") else f"-m{script}"]


class Script:
    """One of the repo's scripts, run as a user would: `python <script> <flags>`, its
    output (stdout and stderr) in a file. A context manager that kills it on the way out."""

    def __init__(self, script: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.name = script
        self.log = open(  # noqa: SIM115
            Path(os.environ.get("TMPDIR", "/tmp")) / f"{script}-{uuid.uuid4().hex[:8]}.log", "w+b"
        )
        self.process = subprocess.Popen(
            [*python_command(script), *args],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def assert_running(self) -> None:
        assert self.process.poll() is None, f"exited {self.process.returncode}:\n{self.output()}"

    def wait_for_output(self, text: str, timeout: float = 60.0) -> None:
        wait_until(
            while_running(lambda: text in self.output(), self),
            timeout,
            what=f"{text!r} in the output of {self.name}",
            explain=self.output,
        )

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running after {timeout}s:\n{self.output()}") from None

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Script:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        self.log.close()


def while_running(condition: Callable[[], T], *scripts: Script) -> Callable[[], T]:
    """`condition`, for wait_until, that fails at once if one of `scripts` has exited."""

    def check() -> T:
        for script in scripts:
            script.assert_running()
        return condition()

    return check


def run_script(
    script: str, *args: str, timeout: float = 60.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a script to its end: its exit status, stdout and stderr."""
    return subprocess.run(
        [*python_command(script), *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if " ERROR " in line]


def one_error_line(output: str) -> str:
    """The one ERROR line of a script that could not go on, which prints no traceback."""
    assert "Traceback" not in output, output
    errors = error_lines(output)
    assert len(errors) == 1, output
    return errors[0]


def table(url: str, name: str) -> dict[tuple[str, int], dict[str, object]]:
    """The sink's table as the reference model writes windows: by (sensor, start in ms)."""
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(
            f"SELECT sensor_id, window_start, window_end, count, min, max, mean "  # noqa: S608
            f"FROM {name}"
        )
        rows = cursor.fetchall()
    connection.close()
    found = {}
    for sensor, start, end, count, low, high, mean in rows:
        key = (sensor, to_epoch_ms(start))
        assert key not in found  # the primary key holds
        found[key] = {
            "start": to_epoch_ms(start),
            "end": to_epoch_ms(end),
            "temperature": {"count": count, "min": low, "max": high, "mean": mean},
        }
    return found


# --- Processes ----------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


def descendants(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may wait for a reaper that never comes)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def command_of(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:  # gone, or a zombie, whose command line is gone
        return "(gone)"


def tails(outputs: Mapping[str, str], lines: int = 25) -> str:
    """The last `lines` of each output, under its name: what a failure message shows."""
    return "\n".join(
        f"--- {name}:\n" + "\n".join(text.splitlines()[-lines:]) for name, text in outputs.items()
    )


def wait_until_stopped(pids: Iterable[int], timeout: float, *, port: int | None = None) -> None:
    """Wait until none of `pids` runs any more, and nothing listens on `port`."""
    pids = list(pids)

    def stopped() -> bool:
        listening = port is not None and is_listening("127.0.0.1", port)
        return not listening and not any(map(running, pids))

    def still_running() -> str:
        return f"still running: {[command_of(p) for p in pids if running(p)]}"

    wait_until(stopped, timeout, what="every process stopped", explain=still_running)


def crash(broker: ServerProcess) -> None:
    """SIGKILL the broker: no clean shutdown. Its data stays for the next start()."""
    assert broker.process is not None
    broker.process.kill()
    broker.stop(keep_data=True)
