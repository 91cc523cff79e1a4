"""Test helpers that talk to the real broker and run the scripts as subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from confluent_kafka import Consumer, KafkaException, Message, Producer

from sensor_lib import consuming
from sensor_lib.event_time import to_epoch_ms
from sensor_lib.settings import BrokerSettings
from sensor_lib.topics import ensure_topic

REPO = Path(__file__).resolve().parent.parent


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


def reading(ts: str, value: Any) -> bytes:
    return json.dumps({"ts": ts, "value": value}).encode()


def consume(
    address: str,
    topic: str,
    *,
    until: Callable[[list[Record]], bool],
    timeout: float = 60.0,
    isolation: str = "read_uncommitted",
) -> list[Record]:
    """Read `topic` from the start until `until(records)` holds; fail after `timeout` s."""
    consumer = Consumer(
        {
            "bootstrap.servers": address,
            "group.id": f"test-reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "session.timeout.ms": 6000,
            # Notice a topic created after subscribing within a second, not minutes.
            "topic.metadata.refresh.interval.ms": 1000,
        }
    )
    records: list[Record] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while not until(records):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"condition not met on {topic} within {timeout}s; got {len(records)} records"
                )
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            records.append(to_record(msg))
    finally:
        consumer.close()
    return records


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


def consume_count(address: str, topic: str, count: int, **kwargs: Any) -> list[Record]:
    return consume(address, topic, until=lambda records: len(records) >= count, **kwargs)


def read_to_end(
    address: str, topic: str, timeout: float = 60.0, isolation: str = "read_uncommitted"
) -> list[Record]:
    """Every record now on `topic`, in partition order (kafka_io's one strategy)."""
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
    """Poll until `group` has committed `total` messages of `topic` (offsets start at 0).

    Fails at once if one of `scripts`, the processors doing the work, has exited.
    An error (Kafka's group coordinator still loading, say) means "not yet".
    """
    deadline = time.monotonic() + timeout
    done, last_error = 0, ""
    while done < total:
        for script in scripts:
            if script.process.poll() is not None:
                raise AssertionError(f"exited {script.process.returncode}:\n{script.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{group} committed {done} of {total} on {topic} in {timeout}s {last_error}"
            )
        time.sleep(0.25)
        try:
            done = committed_total(address, group, topic)
        except KafkaException as exc:
            last_error = f"(last error: {exc.args[0].str()})"


def python_command(script: str) -> list[str]:
    """`python <script>` for a file, `python -m <module>` for a module such as sensor_lib.demo."""
    return [sys.executable, str(REPO / script) if script.endswith(".py") else f"-m{script}"]


class Script:
    """One of the repo's scripts, run as a user would: `python <script> <flags>`."""

    def __init__(self, script: str, *args: str, env: dict[str, str] | None = None) -> None:
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

    def wait_for_output(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.process.poll() is not None:
                raise AssertionError(f"exited {self.process.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in output within {timeout}s:\n{self.output()}")
            time.sleep(0.1)

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


def run_script(
    script: str, *args: str, timeout: float = 60.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*python_command(script), *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def sink(address: str, names: Any, url: str, *extra: str) -> Script:
    """The sink as a user runs it, into the test's own table."""
    return Script(
        "sensor_stream_sink.py",
        "--broker-address",
        address,
        "--agg-topic",
        names.agg,
        "--consumer-group",
        names.sink_group,
        "--sink-table",
        names.table,
        "--commit-interval",
        "1",
        *extra,
        env={"POSTGRES_URL": url},  # a flag would show the password in `ps`
    )


def table(url: str, name: str) -> dict[tuple[str, int], dict[str, object]]:
    """The table as the reference model writes windows: keyed by (sensor, start in ms)."""
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
