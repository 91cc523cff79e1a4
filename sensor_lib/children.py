"""Child processes that never outlive their launcher.

The kernel stops a child started here (SIGTERM) when the launcher dies, however
it dies: `start_child` runs the command behind a small shim that asks for that.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sensor_lib.stop_signals import PR_SET_PDEATHSIG

# Not preexec_fn: with it, subprocess runs this process's at-fork handlers (logging's
# lock) around the fork, where a stop signal's KeyboardInterrupt is only printed
# ("Exception ignored in") and lost; and Python documents it as unsafe with threads.
# The user is changed first: a change of user clears the parent-death signal.
_EXEC_DYING_WITH_PARENT = f"""import ctypes, os, sys
parent, uid, gid = map(int, sys.argv[1:4])
if uid >= 0:
    os.setgroups([]), os.setgid(gid), os.setuid(uid)
ctypes.CDLL(None).prctl({PR_SET_PDEATHSIG}, {int(signal.SIGTERM)})
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
