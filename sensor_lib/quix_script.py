"""What runs around a Quix Streams script's Application: checks first, then a summary.

    with running(settings, logger, topics=[...], source=..., summary=...):
        ...  # build the Application and its dataframe, and run it

Before the body, in this order, each failing in one line (sensor_lib/errors.py):
logging in UTC, /metrics if METRICS_PORT is set, the state folder, the broker and
the topics, saved state that belongs to another broker, and the script's own
`checks`. While the body runs: the summary every SUMMARY_INTERVAL, and Quix
Streams' failures that we know turned into their one line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

from prometheus_client import Histogram
from prometheus_client.core import Metric

from sensor_lib.broker import start_up
from sensor_lib.errors import StoppedEarly
from sensor_lib.known_failures import explained
from sensor_lib.logs import BrokerOutageLog, configure_logging
from sensor_lib.metrics import serve
from sensor_lib.preflight import check_saved_state_matches_broker, check_state_dir
from sensor_lib.settings import QuixAppSettings
from sensor_lib.summary import periodic_summary


@contextmanager
def running(
    settings: QuixAppSettings,
    logger: logging.Logger,
    *,
    topics: Sequence[str],
    dead_letter_topics: Sequence[str],
    source: str,
    summary: Callable[[], str],
    stateful: bool = True,
    checks: Sequence[Callable[[], None]] = (),
    metrics: Callable[[], Iterable[Metric]] | None = None,
    histograms: Sequence[Histogram] = (),
) -> Iterator[None]:
    """Check, then run the body until it ends or is stopped.

    `topics` and `dead_letter_topics` are created if missing, and checked;
    `source` is the one the dataframe reads. A
    `stateful` dataframe keeps state under STATE_DIR, which is checked. `checks` run
    once the broker answers. /metrics serves `metrics` and `histograms`.
    """
    configure_logging(settings.log_level, BrokerOutageLog(settings.broker_address))
    if metrics is not None:
        serve(settings, logger, metrics, *histograms)
    if stateful:
        check_state_dir(settings)
    stop = start_up(
        settings,
        logger,
        "processing began",
        topics,
        log_level=None,
        dead_letter_topics=dead_letter_topics,
    )
    started = False
    try:
        with stop.interrupting():  # until Quix Streams installs its own handlers
            if stateful:
                check_saved_state_matches_broker(settings, source)
            for check in checks:
                check()
            started = True
            with (
                explained(settings, source),
                periodic_summary(summary, settings.summary_interval, logger),
            ):
                yield
    except KeyboardInterrupt:
        if started:
            raise
        raise StoppedEarly("Stopped before processing began") from None
