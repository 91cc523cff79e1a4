"""Run the whole pipeline at once: broker, database, producer, processor, sink and a live view.

`make demo` runs this. It uses the broker at BROKER_ADDRESS if one answers, else
Redpanda if a Docker engine runs, else the embedded broker; and the database at
POSTGRES_URL if set, else an embedded PostgreSQL with its data in the log folder.
Every run starts afresh, so the tenth works like the first: topics and consumer
groups of its own, named after the time it started, and new window state and
database, removed at the end.

It stops (Ctrl-C, SIGTERM, SIGHUP, its parent's exit, or --duration) in the order
that leaves a true last picture: the producer (its final watermarks close every
sensor's last window); the processor, once it has committed the raw topic's end;
the sink, once it has committed the aggregate topic's end; the viewer, which reads
the aggregate topic to its end; then the database and the broker.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack, suppress
from datetime import UTC, datetime
from pathlib import Path
from subprocess import Popen

import psycopg2
from confluent_kafka import ConsumerGroupState, KafkaException, Message
from confluent_kafka.admin import AdminClient
from filelock import FileLock, Timeout
from pydantic import Field, NonNegativeFloat, PositiveInt, SecretStr, model_validator

from sensor_lib.broker import BrokerUnavailable, wait_for_broker
from sensor_lib.children import dying_with_parent, start_child, stop_child
from sensor_lib.consuming import committed_offsets, read_to_end
from sensor_lib.embedded_broker import PROCESSOR_PRODUCER_CONFIG, EmbeddedBroker
from sensor_lib.errors import CannotRun, exit_status
from sensor_lib.logs import client_logging
from sensor_lib.metrics import scrape
from sensor_lib.polling import Deadline, wait_until
from sensor_lib.postgres_server import PostgresServer
from sensor_lib.postgres_sink import count_rows, prepare_table, redact
from sensor_lib.readings import InvalidReading, parse_reading
from sensor_lib.servers import find_free_port, is_listening
from sensor_lib.settings import BrokerSettings, TopicSettings, load_settings
from sensor_lib.stop_signals import StopSignals
from sensor_lib.topics import ensure_topic

REPO = Path(__file__).resolve().parent.parent
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")  # noqa: S104 (a name, not a bind)
STOP_TIMEOUT = 30.0  # seconds a script may take to stop before it is killed
# Where the scripts serve /metrics, if free (docs/metrics.md scrapes these), else any free port.
METRICS_PORTS = {"producer": 9101, "processor": 9102, "sink": 9103}
# Held from choosing the metrics ports until the scripts listen on them, so that two
# demos started at once do not both find 9101 free.
METRICS_PORTS_LOCK = Path(tempfile.gettempdir()) / "sensor-demo-metrics-ports.lock"
METRICS_BIND_TIMEOUT = 30.0
CATCH_UP_TIMEOUT = 60.0  # seconds to wait for the processor (or sink) to finish its topic
# A run's own topics: demo-<time>-raw, -agg, -raw-dlq, -agg-dlq, and the processor's changelog.
RUN_TOPIC = re.compile(r"^(?:changelog__)?(demo-\d{8}T\d{6})-")
ACTIVE_GROUP_STATES = (
    ConsumerGroupState.STABLE,
    ConsumerGroupState.PREPARING_REBALANCING,
    ConsumerGroupState.COMPLETING_REBALANCING,
)


class DemoSettings(TopicSettings):
    """Run the sensor pipeline end to end; a broker starts if none answers."""

    duration: NonNegativeFloat = Field(0.0, description="seconds to run; 0 = until Ctrl-C")
    sensors: PositiveInt = Field(5, description="number of sensors")
    rate: NonNegativeFloat = Field(20.0, description="readings per second over all sensors")
    backfill_seconds: NonNegativeFloat = Field(
        600.0, description="seconds of history to produce first, so closed windows show at once"
    )
    raw_topic: str = Field("", description="raw topic; default demo-<UTC time>-raw")
    agg_topic: str = Field("", description="aggregate topic; default demo-<UTC time>-agg")
    dlq_topic: str = Field("", description="dead-letter topic; default <raw topic>-dlq")
    consumer_group: str = Field("", description="processor's group; default demo-<UTC time>-group")
    postgres_url: SecretStr | None = Field(
        None, description="the sink's database; default: an embedded PostgreSQL in DEMO_LOG_DIR"
    )
    sink_table: str = Field("sensor_windows", description="the sink's table of windows")
    demo_log_dir: Path = Field(
        Path("demo-logs"), description="folder for the logs, and this run's state and database"
    )
    remove_old_runs: bool = Field(
        False,
        description="delete the topics and groups that earlier runs left on the broker, and exit",
    )

    @model_validator(mode="after")
    def name_this_run(self) -> DemoSettings:
        """Names of this run's own, unless the settings give them: nothing of an earlier run."""
        run = f"demo-{datetime.now(UTC):%Y%m%dT%H%M%S}"
        self.raw_topic = self.raw_topic or f"{run}-raw"
        self.agg_topic = self.agg_topic or f"{run}-agg"
        self.dlq_topic = self.dlq_topic or f"{self.raw_topic}-dlq"
        self.consumer_group = self.consumer_group or f"{run}-group"
        return self

    @property
    def sink_group(self) -> str:
        return f"{self.consumer_group}-sink"


def say(message: str) -> None:
    with suppress(OSError):  # a closed terminal: nobody is left to tell
        print(f"demo: {message}", file=sys.stderr, flush=True)


# --- 1. A broker: the one that answers, else one we start --------------------------------
def choose_broker(
    settings: DemoSettings, log_dir: Path, stack: ExitStack
) -> tuple[str, dict[str, str]]:
    """A broker's address, and what the scripts need there; `stack` stops one we started."""
    host, _, port = settings.broker_address.rpartition(":")
    ours = port.isdigit() and host.strip("[]") in LOCAL_HOSTS  # one host:port on this machine
    free = int(port) if ours and not is_listening("127.0.0.1", int(port)) else None
    if free is None:  # something listens there, or the address is not ours: is it Kafka?
        with suppress(BrokerUnavailable):
            wait_for_broker(settings, timeout=3)
            say(f"using the broker at {settings.broker_address}")
            return settings.broker_address, {}
    docker = shutil.which("docker") and subprocess.run(
        ["docker", "info"], capture_output=True, timeout=20
    )
    if docker and docker.returncode == 0:
        say("no broker answered; starting Redpanda with `docker compose up -d --wait`")
        subprocess.run(["docker", "compose", "up", "-d", "--wait"], cwd=REPO, check=True)
        say("Redpanda Console: http://localhost:8080/topics")
        return "localhost:19092", {}
    broker = stack.enter_context(EmbeddedBroker(free, log_path=log_dir / "broker.log"))
    say(f"no broker and no Docker engine; started the embedded broker on {broker.address}")
    # Its high-watermark quirk (docs/brokers.md) needs this for the processor's restarts.
    return broker.address, {"PRODUCER_CONFIG": PROCESSOR_PRODUCER_CONFIG}


def choose_database(settings: DemoSettings, log_dir: Path, stack: ExitStack) -> str:
    """POSTGRES_URL, or an embedded server of this run's own; `stack` stops one we started."""
    if settings.postgres_url is not None:
        url = settings.postgres_url.get_secret_value()
        say(f"using the database at {redact(url)}")
    else:
        # A folder of this run's own: the server of a run that was just killed may still be
        # writing its last files into the folder it had.
        folder = Path(tempfile.mkdtemp(prefix="postgres-", dir=log_dir))
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        server = stack.enter_context(PostgresServer(folder, durable=False))
        url = server.url
        say(f"no POSTGRES_URL; started an embedded PostgreSQL on {server.address}")
    prepare_table(url, settings.sink_table)  # one line and exit 1 if it refuses us
    return url


def remove_old_runs(broker: DemoSettings) -> int:
    """Delete the topics and consumer groups of earlier runs, except runs still going.

    Only per-run names count (demo-<time>-...): topics a user named are kept. A run
    is still going while its processor's group is active.
    """
    try:
        wait_for_broker(broker, broker.broker_timeout)
        admin = AdminClient({**broker.librdkafka_config(), **client_logging()})  # quiet at exit
        runs: defaultdict[str, list[str]] = defaultdict(list)
        for topic in admin.list_topics(timeout=30).topics:
            if found := RUN_TOPIC.match(topic):
                runs[found.group(1)].append(topic)
        groups = {f"{run}-group": run for run in runs}
        described = admin.describe_consumer_groups(list(groups)) if groups else {}
        going = set()
        for group, future in described.items():
            with suppress(KafkaException):  # no such group: nothing runs
                if future.result(timeout=30).state in ACTIVE_GROUP_STATES:
                    going.add(groups[group])
        old = sorted(set(runs) - going)
        if topics := [topic for run in old for topic in runs[run]]:
            for future in admin.delete_topics(topics, operation_timeout=30).values():
                future.result(timeout=60)
            old_groups = [f"{run}-group{sink}" for run in old for sink in ("", "-sink")]
            for future in admin.delete_consumer_groups(old_groups).values():
                with suppress(KafkaException):  # a run stopped before its first commit has none
                    future.result(timeout=30)
    except (BrokerUnavailable, KafkaException) as exc:
        say(f"could not remove old runs: {exc}")
        return 1
    kept = f"; kept {len(going)} still running" if going else ""
    earlier = f"{len(old)} earlier run{'s' * (len(old) != 1)}"
    say(f"removed {len(topics)} topics of {earlier} at {broker.broker_address}{kept}")
    return 0


# --- 2. What the scripts get ----------------------------------------------------------------
def child_env(broker: BrokerSettings, needs: dict[str, str]) -> dict[str, str]:
    """The scripts read the broker settings from their environment, as from a user's shell."""
    env = {**needs, **os.environ}  # the user's own setting wins over what the broker needs
    # Only what was set (or filled in): a default passed on as a variable would count as
    # given, and win over the same setting in KAFKA_CONFIG_FILE.
    shared = set(TopicSettings.model_fields) - {"partitions"}  # a flag of the scripts that use it
    ours = broker.model_dump(include=shared, exclude_none=True, exclude_unset=True)
    for name, value in ours.items():
        env[name.upper()] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    return env


def lock_log_dir(log_dir: Path) -> FileLock | None:
    """Hold the log folder for this run until it exits; None if another run holds it."""
    lock = FileLock(log_dir / ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


# --- 3. Stopping in the order that leaves a true last picture --------------------------------
def wait_for_group(
    broker: DemoSettings,
    topic: str,
    group: str,
    script: tuple[str, Popen[bytes]],
    stop: StopSignals,
) -> str | None:
    """Wait until `group` has committed the end of `topic`, which no longer grows: None, or
    why not. The true end is found by reading the topic: high watermarks are not exact on
    every broker."""
    name, process = script
    deadline = Deadline(CATCH_UP_TIMEOUT)
    try:
        ends = {m.partition(): m.offset() + 1 for m in read_to_end(broker, topic)}
        while True:
            done = committed_offsets(broker, group, topic)
            if (left := sum(max(end - done.get(p, 0), 0) for p, end in ends.items())) == 0:
                return None
            if process.poll() is not None:
                return f"the {name} exited with status {process.returncode}"
            if deadline.passed():
                return f"the {name} had {left} messages left after {CATCH_UP_TIMEOUT:g}s"
            if stop.hurry.wait(0.2):
                return f"stopped without waiting for the {name}"
    except (KafkaException, TimeoutError) as exc:
        return f"could not check the {name}'s progress ({exc})"


def stop_in_order(
    broker: DemoSettings,
    scripts: dict[str, Popen[bytes]],
    processor_port: int,
    stop: StopSignals,
    early: str | None,
) -> tuple[str | None, dict[str, float] | None]:
    """Producer, processor and sink (once each is done), viewer. Returns why one was not
    done, if so, and the processor's last counters, asked just before it is stopped.
    In a hurry (a second signal, a hang-up) nobody waits for the last picture: all at once."""
    waited = None
    if not stop.hurry.is_set():
        stop_child(scripts["producer"], STOP_TIMEOUT)
    if not early and scripts["producer"].returncode == 0 and not stop.hurry.is_set():
        s = broker
        waited = wait_for_group(
            s, s.raw_topic, s.consumer_group, ("processor", scripts["processor"]), stop
        )
        if waited is None:  # every aggregate is on its topic
            waited = wait_for_group(s, s.agg_topic, s.sink_group, ("sink", scripts["sink"]), stop)
    # Only a processor still running serves its port: an exited one may have lost it to another.
    processor = None
    if scripts["processor"].poll() is None:
        processor = last_counts(processor_port, timeout=0.5 if stop.hurry.is_set() else 2.0)
    if stop.hurry.is_set():  # a second SIGTERM tells the viewer not to read on to the end
        for name in ("producer", "processor", "sink", "viewer", "viewer"):
            with suppress(ProcessLookupError):
                scripts[name].terminate()
    for name in ("producer", "processor", "sink", "viewer"):
        stop_child(scripts[name], STOP_TIMEOUT)
    return waited, processor


# --- 4. The closing line -------------------------------------------------------------------
def last_counts(metrics_port: int, timeout: float) -> dict[str, float] | None:
    """The processor's counters, asked at its /metrics before it is stopped; None if it
    does not answer (it has exited, or never started serving)."""
    try:
        return scrape(f"http://127.0.0.1:{metrics_port}/metrics", timeout)
    except OSError:
        return None


def count_readings(broker: DemoSettings) -> str:
    """The readings on the raw topic: read from the topic itself, so a processor that
    read some twice (after a broker restart) does not count them twice."""

    def is_reading(message: Message) -> bool:
        try:
            return parse_reading(message.value() or b"")["value"] is not None
        except InvalidReading:
            return False

    try:
        return str(len(read_to_end(broker, broker.raw_topic, timeout=10, keep=is_reading)))
    except (KafkaException, TimeoutError):
        return "?"


def processors_count(processor: dict[str, float] | None) -> str:
    """The readings the processor counted: what stands in for count_readings in a hurry
    (a closed terminal), when nobody waits for a read of the raw topic. It counts a
    reading read twice (after a broker restart) twice."""
    if processor is None:
        return "?"
    return str(int(processor.get("sensor_processor_readings_total", 0)))


def closing_summary(
    readings: str,
    processor: dict[str, float] | None,
    elapsed: float,
    rows: str = "?",
    table: str = "",
) -> str:
    """`1234 readings, 250 windows, 0 dead letters, 250 rows in sensor_windows in 25.3 s`:
    the readings on the raw topic, the processor's last counters and the table's rows;
    `?` and a note where the processor had none."""
    stored = f", {rows} rows in {table}" if table else ""
    if processor is None:
        windows, dead, unsaid = "?", "?", "; the processor stopped before reporting"
    else:
        windows = str(int(processor.get("sensor_processor_windows_emitted_total", 0)))
        dead = str(int(processor.get("sensor_processor_dead_letters_total", 0)))
        unsaid = ""
    return (
        f"{readings} readings, {windows} windows, {dead} dead letters{stored} "
        f"in {elapsed:.1f} s{unsaid}"
    )


# --- The demo ------------------------------------------------------------------------------
def metrics_ports() -> dict[str, int]:
    """Where the producer, processor and sink serve /metrics: METRICS_PORTS where free."""
    ports = {
        name: port if not is_listening("127.0.0.1", port) else find_free_port()
        for name, port in METRICS_PORTS.items()
    }
    urls = [f"http://127.0.0.1:{port}/metrics ({name})" for name, port in ports.items()]
    say(f"metrics at {', '.join(urls)}")
    return ports


def script_flags(settings: DemoSettings, log_dir: Path) -> dict[str, dict[str, object]]:
    """Each script's flags, in the order they start: this run's names, and what the demo
    chooses (commits every second, so a stop leaves little to repeat)."""
    state = log_dir / "state"
    raw = {"raw-topic": settings.raw_topic, "partitions": settings.partitions}
    return {
        "processor": {
            **raw,
            "agg-topic": settings.agg_topic,
            "dlq-topic": settings.dlq_topic,
            "consumer-group": settings.consumer_group,
            "state-dir": state,
            "commit-interval": 1,
        },
        "producer": {
            **raw,
            "count": 0,
            "sensors": settings.sensors,
            "rate": settings.rate,
            "backfill-seconds": settings.backfill_seconds,
        },
        "sink": {
            "agg-topic": settings.agg_topic,
            "consumer-group": settings.sink_group,
            "sink-table": settings.sink_table,
            "state-dir": state,
            "commit-interval": 1,
        },
        # DURATION is the demo's (make exports it): the viewer runs until it is stopped.
        "viewer": {"agg-topic": settings.agg_topic, "duration": 0},
    }


def wait_for_metrics(scripts: dict[str, Popen[bytes]], ports: dict[str, int]) -> None:
    """Until each script serves /metrics on its port or has exited, for at most
    METRICS_BIND_TIMEOUT; the demo's own loop then reports a script that exits."""

    def bound(name: str) -> bool:
        return scripts[name].poll() is not None or is_listening("127.0.0.1", ports[name])

    with suppress(TimeoutError):
        wait_until(lambda: all(map(bound, ports)), METRICS_BIND_TIMEOUT, what="metrics ports")


def start_scripts(
    settings: DemoSettings,
    env: dict[str, str],
    log_dir: Path,
    ports: dict[str, int],
    stack: ExitStack,
) -> dict[str, Popen[bytes]]:
    """The processor, producer and sink log to files; the viewer keeps our terminal.
    `stack` stops each of them if anything fails."""
    scripts = {}
    for name, flags in script_flags(settings, log_dir).items():
        if name in ports:
            flags["metrics-port"] = ports[name]
        script = str(REPO / f"sensor_stream_{name}.py")
        command = [sys.executable, script, *(f"--{flag}={value}" for flag, value in flags.items())]
        if name == "viewer":
            command = dying_with_parent(command, env)
            scripts[name] = Popen(command, env=env, cwd=REPO, start_new_session=True)
        else:
            log = log_dir / f"{name}.log"
            scripts[name] = start_child(command, log=log, env=env, cwd=REPO)
        stack.callback(stop_child, scripts[name])
    return scripts


def main(argv: list[str] | None = None) -> int:
    settings = load_settings(DemoSettings, argv)
    if settings.remove_old_runs:
        return remove_old_runs(settings)
    started = time.monotonic()
    stop = StopSignals.install(launcher=True)
    log_dir = settings.demo_log_dir.resolve()
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        lock = lock_log_dir(log_dir)  # held until we exit
        if lock is None:  # the state and logs there are another run's
            say(
                f"another demo is running with its logs in {log_dir}/; stop it, "
                "or set DEMO_LOG_DIR to another folder"
            )
            return 1
        # An earlier run's window state belongs to its broker and topics: never reuse it.
        shutil.rmtree(log_dir / "state", ignore_errors=True)
        (log_dir / "state").mkdir(parents=True)
        # Nor its database: the table holds this run's windows.
        for old in log_dir.glob("postgres*"):
            shutil.rmtree(old, ignore_errors=True)
        for name in ("broker.log", "producer.log", "processor.log", "sink.log"):
            (log_dir / name).write_bytes(b"")  # the scripts append; each run starts empty
    except OSError as exc:
        say(f"cannot write the logs to {log_dir}/: {exc.strerror or exc}")
        return 1
    try:
        with ExitStack() as stack:  # stops what it holds in reverse: the scripts, then the broker
            address, needs = choose_broker(settings, log_dir, stack)
            url = choose_database(settings, log_dir, stack)
            # The password goes by the environment: a flag would show in `ps`.
            needs = {**needs, "POSTGRES_URL": url}
            broker = settings.model_copy(update={"broker_address": address})
            for topic in (broker.raw_topic, broker.agg_topic):
                ensure_topic(broker, topic)
            ensure_topic(broker, broker.dlq_topic, dead_letters=True)
            say(
                f"topics {broker.raw_topic}, {broker.agg_topic}, {broker.dlq_topic}; "
                f"consumer groups {broker.consumer_group}, {broker.sink_group}"
            )
            say(f"logs in {log_dir}/; Ctrl-C stops the demo")
            with FileLock(METRICS_PORTS_LOCK):
                ports = metrics_ports()
                scripts = start_scripts(broker, child_env(broker, needs), log_dir, ports, stack)
                wait_for_metrics(scripts, ports)
            early = None  # until a stop signal, the end of --duration, or a script exits early
            deadline = Deadline(settings.duration or math.inf)
            while not stop.requested.wait(0.2) and not deadline.passed():
                if early := next((n for n, p in scripts.items() if p.poll() is not None), None):
                    break
            waited, processor = stop_in_order(broker, scripts, ports["processor"], stop, early)
            hurried = stop.hurry.is_set()
            readings = processors_count(processor) if hurried else count_readings(broker)
            try:
                rows = str(count_rows(url, settings.sink_table))
            except psycopg2.Error:
                rows = "?"
    except (CannotRun, KafkaException, OSError, subprocess.SubprocessError) as exc:
        say(f"could not start: {exc}")
        return 1
    finally:
        shutil.rmtree(log_dir / "state", ignore_errors=True)

    # Only now, below the viewer's last frame.
    if early:
        say(f"the {early} exited early with status {scripts[early].returncode}")
    if waited:
        say(f"the last windows may be missing: {waited}")
    elapsed = time.monotonic() - started
    say(closing_summary(readings, processor, elapsed, rows, settings.sink_table))
    failed = [
        f"{name} (status {p.returncode})"
        for name, p in scripts.items()
        if p.returncode not in (0, -signal.SIGTERM) and name != early
    ]
    if failed:
        say(f"exited with errors: {', '.join(failed)}")
    if early or failed:
        say(f"see the logs in {log_dir}/")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(exit_status(main, logging.getLogger("sensor_lib.demo")))
