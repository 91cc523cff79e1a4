"""What every launcher and script here needs: a clean stop, and children that never outlive it.

A launcher (the embedded broker, the Kafka broker, the demo) starts child
processes. They must stop when the launcher is stopped by Ctrl-C, SIGTERM or
SIGHUP (a closed terminal), and also when the launcher dies without a chance to
clean up. On Linux, PR_SET_PDEATHSIG asks the kernel to signal a child when its
parent exits, whatever the reason.

The scripts use it too, for a stop that always stops: Python raises the
KeyboardInterrupt wherever the main thread is, which inside confluent-kafka's
C code can lose it or turn it into another error (see stop_requested).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel send SIGTERM to this process when its parent exits (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


# Not preexec_fn: with it, subprocess runs this process's at-fork handlers (logging's
# lock) around the fork, where a stop signal's KeyboardInterrupt is only printed
# ("Exception ignored in") and lost; and Python documents it as unsafe with threads.
_EXEC_DYING_WITH_PARENT = f"""import ctypes, os, sys
ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, {int(signal.SIGTERM)})
if os.getppid() != int(sys.argv[1]):  # the parent exited before we asked
    sys.exit(1)
os.execvp(sys.argv[2], sys.argv[2:])"""


def dying_with_parent(command: Sequence[str], env: dict[str, str] | None = None) -> list[str]:
    """`command`, run so that the kernel sends it SIGTERM when this process exits."""
    if not sys.platform.startswith("linux"):
        return list(command)
    path = (os.environ if env is None else env).get("PATH")
    if shutil.which(command[0], path=path) is None:  # the error Popen would have raised
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", command[0])
    return [sys.executable, "-I", "-S", "-c", _EXEC_DYING_WITH_PARENT, str(os.getpid()), *command]


def on_stop_signals(handler: Callable[[int, Any], None]) -> None:
    """Call `handler` on Ctrl-C, SIGTERM or SIGHUP, on our parent's exit, and once our
    terminal is closed."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)
    parent = os.getppid()
    die_with_parent()
    if os.getppid() != parent:  # the parent was already gone before we asked
        handler(signal.SIGTERM, None)
    hang_up_when_terminal_closes()


def hang_up_when_terminal_closes(fd: int = 2) -> None:
    """Send ourselves SIGHUP once the controlling terminal on `fd` has been closed.

    Closing a terminal sends SIGHUP to its session leader only. When that is not
    us but `make` (as in `xterm -e make demo`), make waits for us and we hear
    nothing; but every ioctl on a hung-up terminal fails, so a thread asks.
    """

    def attached() -> bool:
        try:
            os.tcgetpgrp(fd)
            return True
        except OSError:
            return False

    def watch() -> None:
        while attached():
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGHUP)

    if attached():  # else not a terminal, or not ours: nothing to lose
        threading.Thread(target=watch, name="terminal-watch", daemon=True).start()


def set_from_handler(event: threading.Event) -> None:
    """Set `event` from a signal handler without risk of waiting for ever.

    A handler runs in the main thread, perhaps while that thread is inside its own
    event.wait() and holds the event's lock, which is not re-entrant: event.set()
    there would never return. A short-lived thread sets it once the lock is free.
    """
    threading.Thread(target=event.set, name="stop-signal", daemon=True).start()


_stop_signals: list[int] = []  # each one `interrupt` has handled


def interrupt(signum: int, frame: Any) -> None:
    """A stop-signal handler: raise KeyboardInterrupt, and remember the stop was asked for."""
    _stop_signals.append(signum)
    raise KeyboardInterrupt


def stop_requested() -> bool:
    """Whether `interrupt` has run.

    Its KeyboardInterrupt is raised wherever the main thread is. Inside a C
    extension it can be swallowed, or come out as the extension's own error:
    confluent-kafka's Consumer() once turned one into a TypeError. A wait loop or
    an error handler asks this to be sure.
    """
    return bool(_stop_signals)


def raise_if_stopped() -> None:
    """For wait loops: raise the KeyboardInterrupt of a stop that C code swallowed."""
    if stop_requested():
        raise KeyboardInterrupt


def raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    """Stop, the first time; a later signal must not cut the clean-up short."""
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, signal.SIG_IGN)
    interrupt(signum, frame)


def _keep_a_dropped_stop_quiet() -> None:
    """Where Python cannot raise (a __del__, a callback from C) it prints the exception's
    traceback and drops it. A KeyboardInterrupt dropped so is the stop, raised again by
    raise_if_stopped, and no error."""
    earlier = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not (issubclass(unraisable.exc_type, KeyboardInterrupt) and stop_requested()):
            earlier(unraisable)

    sys.unraisablehook = hook


@contextmanager
def _errors_after_a_stop_are_the_stop() -> Iterator[None]:
    """After a stop signal, an error in the block, or its end, is raised as
    KeyboardInterrupt: a C extension may have turned the stop into that error, or
    swallowed it (see stop_requested). Before one, an error is an error, with its
    traceback."""
    _keep_a_dropped_stop_quiet()
    try:
        yield
        raise_if_stopped()  # the block ran on to its end: C code swallowed the stop whole
    except Exception as exc:
        if not stop_requested():
            raise
        raise KeyboardInterrupt from exc


@contextmanager
def interrupted_by_stop_signals() -> Iterator[None]:
    """In the block, Ctrl-C and SIGTERM raise KeyboardInterrupt, whatever the block was
    doing when they came. The handlers stay afterwards."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)
    with _errors_after_a_stop_are_the_stop():
        yield


@contextmanager
def exit_when_stopped(message: str) -> Iterator[None]:
    """Unwind the block on Ctrl-C, SIGTERM, SIGHUP or our parent's exit, whatever it
    was doing, then exit 1 with `message` on stderr."""
    on_stop_signals(raise_keyboard_interrupt)
    try:
        with _errors_after_a_stop_are_the_stop():
            yield
    except KeyboardInterrupt:
        raise SystemExit(message) from None


def start_child(
    command: Sequence[str],
    *,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    own_session: bool = True,
) -> subprocess.Popen[bytes]:
    """Start `command`, which the kernel stops (SIGTERM) if this process dies.

    In its own session a child does not see the terminal's Ctrl-C or hang-up, so
    the launcher decides the order things stop in.
    """
    stdout = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            dying_with_parent(command, env),
            stdout=stdout,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=own_session,
        )
    finally:
        if log:
            stdout.close()


def stop_child(process: subprocess.Popen[Any] | None, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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


class BrokerStartError(RuntimeError):
    """The broker could not be started; the message says what to do."""


class BrokerProcess:
    """A broker process on 127.0.0.1, ready when start() returns; a context manager.

    Subclasses say how to prepare and launch the broker (`command`) and when it
    is ready (`is_ready`, by default: its port accepts connections).
    """

    name = "broker"

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

    def is_ready(self) -> bool:
        return is_listening(self.host, self.port)

    def ports(self) -> list[int]:
        return [self.port]

    def start(self) -> BrokerProcess:
        for port in self.ports():
            if is_listening(self.host, port):
                raise BrokerStartError(f"port {port} is already in use")
        try:
            self._start_and_wait()
        except BaseException:  # Ctrl-C during start-up too: leave nothing behind
            self.stop()
            raise
        return self

    def _start_and_wait(self) -> None:
        self.process = start_child(self.command(), log=self.log_path)
        deadline = time.monotonic() + self.start_timeout
        while not self.is_ready():
            if self.process.poll() is not None:
                raise BrokerStartError(
                    f"{self.name} exited with status {self.process.returncode} during start-up"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            if time.monotonic() > deadline:
                raise BrokerStartError(
                    f"{self.name} did not answer on {self.address} within {self.start_timeout}s"
                )
            time.sleep(0.05)

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop the process; with `keep_data`, a later start() serves the same data again
        (where the broker keeps any: the embedded one keeps nothing)."""
        stop_child(self.process)
        if not keep_data:
            self.cleanup()

    def cleanup(self) -> None:
        """Remove what start() prepared; called after the process has exited."""

    def __enter__(self) -> BrokerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve_in_foreground(broker: BrokerProcess, next_steps: str) -> int:
    """Run `broker` until Ctrl-C, SIGTERM, SIGHUP or our parent's exit; then stop it."""
    on_stop_signals(raise_keyboard_interrupt)
    try:
        with broker:
            print(f"{broker.name} listening on {broker.address}; Ctrl-C stops it.", flush=True)
            print(next_steps, flush=True)
            assert broker.process is not None
            status = broker.process.wait()
            print(f"{broker.name} exited with status {status}", file=sys.stderr)
            return 1
    except BrokerStartError as exc:
        print(f"{broker.name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
