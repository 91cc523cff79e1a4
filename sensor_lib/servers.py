"""Servers on 127.0.0.1 (a broker, a database) as child processes, ready when started."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from filelock import FileLock

from sensor_lib.children import start_child, stop_child
from sensor_lib.errors import CannotRun
from sensor_lib.polling import Deadline
from sensor_lib.stop_signals import StopSignals

# Ports find_free_port handed out lately, to any process here: port -> when.
PORTS_HANDED_OUT = Path(tempfile.gettempdir()) / "sensor-ports-handed-out.json"
PORT_KEPT_SECONDS = 900.0


def find_free_port() -> int:
    """A port free now that no process here was given in the last PORT_KEPT_SECONDS: a
    server stopped to be started again on its port must not find another one there."""
    with FileLock(f"{PORTS_HANDED_OUT}.lock"):
        now = time.time()
        try:
            handed = json.loads(PORTS_HANDED_OUT.read_text())
        except (OSError, ValueError):
            handed = {}
        handed = {port: at for port, at in handed.items() if now - at < PORT_KEPT_SECONDS}
        for _ in range(100):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            if str(port) not in handed:
                break
        handed[str(port)] = now
        PORTS_HANDED_OUT.write_text(json.dumps(handed))
        return port


def is_listening(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ServerStartError(CannotRun):
    """A server could not be started; the message says what to do."""


class ServerProcess:
    """A server process on 127.0.0.1 (a broker, a database), ready when start() returns.

    Subclasses say how to prepare and launch it (`command`) and when it is ready
    (`is_ready`, by default: its port accepts connections). A context manager.
    """

    name = "server"
    stop_signal = signal.SIGTERM

    def __init__(
        self, port: int | None = None, *, log_path: Path | None = None, start_timeout: float = 15.0
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or find_free_port()
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def run_as(self) -> tuple[int, int] | None:
        """The (uid, gid) to run the server as; None: ours."""
        return None

    def is_ready(self) -> bool:
        return is_listening(self.host, self.port)

    def ports(self) -> list[int]:
        return [self.port]

    def start(self) -> ServerProcess:
        for port in self.ports():
            if is_listening(self.host, port):
                raise ServerStartError(f"port {port} is already in use")
        try:
            self._start_and_wait()
        except BaseException:  # Ctrl-C during start-up too: leave nothing behind
            self.stop()
            raise
        return self

    def _start_and_wait(self) -> None:
        self.process = start_child(self.command(), log=self.log_path, user=self.run_as())
        deadline = Deadline(self.start_timeout)
        while not self.is_ready():
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with status {self.process.returncode} during start-up"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            if deadline.passed():
                raise ServerStartError(
                    f"{self.name} did not answer on {self.address} within {self.start_timeout}s"
                )
            time.sleep(0.05)

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop the process; with `keep_data`, a later start() serves the same data again
        (where the server keeps any: the embedded broker keeps nothing)."""
        stop_child(self.process, signum=self.stop_signal)
        if not keep_data:
            self.cleanup()

    def cleanup(self) -> None:
        """Remove what start() prepared; called after the process has exited."""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_foreground(server: ServerProcess, next_steps: str) -> int:
    """Run `server` until Ctrl-C, SIGTERM, SIGHUP or our parent's exit; then stop it."""
    try:
        with StopSignals.install(launcher=True).interrupting(), server:
            print(f"{server.name} listening on {server.address}; Ctrl-C stops it.", flush=True)
            print(next_steps, flush=True)
            assert server.process is not None
            status = server.process.wait()
            print(f"{server.name} exited with status {status}", file=sys.stderr)
            return 1
    except ServerStartError as exc:
        print(f"{server.name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
