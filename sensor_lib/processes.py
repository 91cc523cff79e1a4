"""Starting and stopping processes: the one stop pattern, and children that never outlive us.

Every script and launcher stops the same way, with `StopSignals.install()`:

- the first Ctrl-C or SIGTERM sets `stop.requested`, a second one `stop.hurry`
  (skip the waiting: the viewer's last read, the demo's orderly stop), as does
  a stop once our parent has died;
- inside `with stop.interrupting():` the first one also raises KeyboardInterrupt,
  which stops a wait in library code at once;
- a launcher (`launcher=True`: the demo, the brokers, the benchmarks) also stops
  on SIGHUP (a closed terminal), and when its parent exits; its children, started
  with `start_child`, are stopped by the kernel if the launcher dies.

Python raises the KeyboardInterrupt wherever the main thread is. Inside
confluent-kafka's C code it can be swallowed, or come out as another error
(a TypeError, once); `interrupting()` turns either back into the stop.
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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1


class StopSignals:
    """Ctrl-C, SIGTERM and (for a launcher) SIGHUP: the first asks to stop, a second to hurry.

    Signal handlers belong to the process, so there is one, made by `install()`.
    """

    installed: StopSignals | None = None

    def __init__(self) -> None:
        self.requested, self.hurry = threading.Event(), threading.Event()
        self.parent = os.getppid()
        self.received: list[int] = []  # signals handled, in order; read in the main thread
        self.raised = False  # a KeyboardInterrupt went out for the first one
        self._interrupting = False

    @classmethod
    def install(cls, *, launcher: bool = False) -> StopSignals:
        stop = cls.installed = cls.installed or cls()
        for signum in STOP_SIGNALS if launcher else STOP_SIGNALS[:2]:
            signal.signal(signum, stop)
        if launcher:
            parent = os.getppid()
            die_with_parent()
            if os.getppid() != parent:  # the parent was already gone before we asked
                stop(signal.SIGTERM, None)
            hang_up_when_terminal_closes()
        return stop

    def __call__(self, signum: int, frame: Any) -> None:
        first = not self.received
        self.received.append(signum)
        # After a hang-up, or our parent's death, nobody is left to wait for.
        if not first or signum == signal.SIGHUP or os.getppid() != self.parent:
            set_from_handler(self.hurry)
        set_from_handler(self.requested)
        if first and self._interrupting:
            self.raised = True
            raise KeyboardInterrupt

    @contextmanager
    def interrupting(self) -> Iterator[None]:
        """In the block, the first stop signal raises KeyboardInterrupt, whatever the block
        was doing; an error after it, or a block that ran on to its end, is raised as that
        stop too (C code may have turned it into the error, or swallowed it). Without a stop
        signal an error is an error, with its traceback."""
        if self.received:  # it came before the block
            raise KeyboardInterrupt
        _keep_a_dropped_stop_quiet()
        self._interrupting = True
        try:
            yield
            raise_if_stopped()
        except Exception as exc:
            if not self.raised:
                raise
            raise KeyboardInterrupt from exc
        finally:
            self._interrupting = False


def raise_if_stopped() -> None:
    """For wait loops: raise the KeyboardInterrupt of a stop that C code swallowed."""
    if StopSignals.installed is not None and StopSignals.installed.raised:
        raise KeyboardInterrupt


def _keep_a_dropped_stop_quiet() -> None:
    """Where Python cannot raise (a __del__, a callback from C) it prints the exception's
    traceback and drops it. A KeyboardInterrupt dropped so is the stop, raised again by
    raise_if_stopped, and no error."""
    earlier = sys.unraisablehook
    if getattr(earlier, "keeps_a_dropped_stop_quiet", False):
        return

    def hook(unraisable: Any) -> None:
        stopped = StopSignals.installed is not None and StopSignals.installed.raised
        if not (issubclass(unraisable.exc_type, KeyboardInterrupt) and stopped):
            earlier(unraisable)

    hook.keeps_a_dropped_stop_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


@contextmanager
def exit_when_stopped(message: str) -> Iterator[None]:
    """For a launcher's whole run: unwind the block on a stop signal or the parent's exit,
    whatever it was doing, then exit 1 with `message` on stderr."""
    try:
        with StopSignals.install(launcher=True).interrupting():
            yield
    except KeyboardInterrupt:
        raise SystemExit(message) from None


def set_from_handler(event: threading.Event) -> None:
    """Set `event` from a signal handler without risk of waiting for ever.

    A handler runs in the main thread, perhaps while that thread is inside its own
    event.wait() and holds the event's lock, which is not re-entrant: event.set()
    there would never return. A short-lived thread sets it once the lock is free.
    """
    threading.Thread(target=event.set, name="stop-signal", daemon=True).start()


def die_with_parent() -> None:
    """Have the kernel send SIGTERM to this process when its parent exits (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


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


# Not preexec_fn: with it, subprocess runs this process's at-fork handlers (logging's
# lock) around the fork, where a stop signal's KeyboardInterrupt is only printed
# ("Exception ignored in") and lost; and Python documents it as unsafe with threads.
# The user is changed first: a change of user clears the parent-death signal.
_EXEC_DYING_WITH_PARENT = f"""import ctypes, os, sys
parent, uid, gid = map(int, sys.argv[1:4])
if uid >= 0:
    os.setgroups([]), os.setgid(gid), os.setuid(uid)
ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, {int(signal.SIGTERM)})
if os.getppid() != parent:  # the parent exited before we asked
    sys.exit(1)
os.execvp(sys.argv[4], sys.argv[4:])"""


def dying_with_parent(
    command: Sequence[str], env: dict[str, str] | None = None, user: tuple[int, int] | None = None
) -> list[str]:
    """`command`, run (as `user`, a (uid, gid)) so that the kernel sends it SIGTERM when
    this process exits."""
    if not sys.platform.startswith("linux"):
        return list(command)
    path = (os.environ if env is None else env).get("PATH")
    if shutil.which(command[0], path=path) is None:  # the error Popen would have raised
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", command[0])
    uid, gid = user or (-1, -1)
    shim = [sys.executable, "-I", "-S", "-c", _EXEC_DYING_WITH_PARENT]
    return [*shim, str(os.getpid()), str(uid), str(gid), *command]


def start_child(
    command: Sequence[str],
    *,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    own_session: bool = True,
    user: tuple[int, int] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `command`, which the kernel stops (SIGTERM) if this process dies.

    In its own session a child does not see the terminal's Ctrl-C or hang-up, so
    the launcher decides the order things stop in. `user` runs it as that (uid, gid).
    """
    stdout = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            dying_with_parent(command, env, user),
            stdout=stdout,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=own_session,
        )
    finally:
        if log:
            stdout.close()


def stop_child(
    process: subprocess.Popen[Any] | None, timeout: float = 15.0, signum: int = signal.SIGTERM
) -> None:
    """SIGTERM (or `signum`), then SIGKILL if it has not exited within `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signum)
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


class ServerStartError(RuntimeError):
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
        deadline = time.monotonic() + self.start_timeout
        while not self.is_ready():
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with status {self.process.returncode} during start-up"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            if time.monotonic() > deadline:
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

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
