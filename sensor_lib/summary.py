"""The summary line a script logs every SUMMARY_INTERVAL and when it stops."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager


def summary_line(dead_letters: Mapping[str, int], **counts: int) -> str:
    """`processed=10, windows emitted=2, dead-lettered late=1`: what a summary line says."""
    dead = {f"dead-lettered {why}": n for why, n in sorted(dead_letters.items())}
    return ", ".join(f"{name.replace('_', ' ')}={n}" for name, n in {**counts, **dead}.items())


@contextmanager
def periodic_summary(
    summary: Callable[[], str], interval: float, logger: logging.Logger
) -> Iterator[None]:
    """Log `summary()` every `interval` seconds while the body runs, and once at the end."""
    stop = threading.Event()

    def log_every_interval() -> None:
        while not stop.wait(interval):
            logger.info("Summary: %s", summary())

    thread = threading.Thread(target=log_every_interval, name="summary", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        logger.info("Final summary: %s", summary())
