"""The one stop pattern: what every script and launcher does on Ctrl-C, SIGTERM and SIGHUP.

Every script and launcher stops the same way, with `StopSignals.install()`:

- the first Ctrl-C or SIGTERM sets `stop.requested`, a second one `stop.hurry`
  (skip the waiting: the viewer's last read, the demo's orderly stop), as does
  a stop once our parent has died;
- inside `with stop.interrupting():` the first one also raises KeyboardInterrupt,
  which stops a wait in library code at once;
- a launcher (`launcher=True`: the demo, the brokers, the benchmarks) also stops
  on SIGHUP (a closed terminal), and when its parent exits.

Python raises the KeyboardInterrupt wherever the main thread is. Inside
confluent-kafka's C code it can be swallowed, or come out as another error
(a TypeError, once); `interrupting()` turns either back into the stop.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sensor_lib.errors import CannotRun

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1


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
    whatever it was doing, then raise CannotRun(`message`)."""
    try:
        with StopSignals.install(launcher=True).interrupting():
            yield
    except KeyboardInterrupt:
        raise CannotRun(message) from None


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
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


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
