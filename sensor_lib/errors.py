"""The one exit policy: how a script ends, whatever went wrong.

Library code raises a typed error; each script's `__main__` hands its `main` to
`exit_status`, the one place where an error becomes a line and an exit status:

- `UsageError` (a wrong flag or value): `prog: error: ...` on stderr, exit 2;
- `StoppedEarly` (Ctrl-C before the work began): its line at INFO, exit 0;
- `CannotRun` (no broker, no database, a refused topic...): its line at ERROR, exit 1;
- a stop signal later on: "Stopped", exit 0;
- anything else keeps its traceback: it is a bug, and the traceback is the best report.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path


class CannotRun(Exception):
    """The script cannot start or go on, for a reason the user can fix. The message is
    the one line that says what happened and what to do."""


class UsageError(CannotRun):
    """A flag or environment variable with a value the script cannot take."""


class StoppedEarly(Exception):
    """A stop signal came before the script began its work; the message says which."""


def exit_status(main: Callable[[], int | None], logger: logging.Logger) -> int:
    """Run `main` and return the exit status the policy above gives its outcome."""
    try:
        return main() or 0
    except UsageError as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        return 2
    except StoppedEarly as exc:
        logger.info("%s", exc)
        return 0
    except CannotRun as exc:
        logger.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        logger.info("Stopped")
        return 0
