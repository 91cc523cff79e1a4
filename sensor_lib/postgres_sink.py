"""Writing windows to PostgreSQL: the table, POSTGRES_URL, and a sink that waits out an outage.

Quix Streams' PostgreSQLSink writes each batch at a checkpoint, before the offsets
are committed, so a row is never committed unstored. When a write fails it
raises, and the app stops. `WindowsSink` turns a lost database (refused, or a
connection it closed) into SinkBackpressureError instead: Quix Streams then drops
the batch, pauses, goes back to the last commit, and writes the batch again once
the database is back. The upsert on (sensor_id, window_start) keeps one row per
window through those repeats, a restart, or a replay of the topic.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import parse_dsn
from quixstreams.sinks import SinkBackpressureError, SinkBatch
from quixstreams.sinks.community.postgresql import PostgreSQLSink, PostgreSQLSinkException

from sensor_lib.errors import CannotRun
from sensor_lib.metrics import write_histogram

logger = logging.getLogger(__name__)

RETRY_SECONDS = 2.0  # how long Quix Streams pauses before it writes a batch again
HOW_TO_START_A_DATABASE = (
    "start one with `make postgres` (no Docker) or `docker compose up -d`, or set POSTGRES_URL"
)
CREATE_TABLE = """CREATE TABLE IF NOT EXISTS {table} (
    sensor_id    text             NOT NULL,
    window_start timestamptz      NOT NULL,
    window_end   timestamptz      NOT NULL,
    count        integer          NOT NULL,
    min          double precision NOT NULL,
    max          double precision NOT NULL,
    mean         double precision NOT NULL,
    PRIMARY KEY (sensor_id, window_start)
)"""


def redact(url: str) -> str:
    """The URL with its password shown as ***, for log lines."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def prepare_table(url: str, table: str) -> None:
    """Create `table` unless it exists; one line naming POSTGRES_URL if the database
    is not there or refuses the login."""
    try:
        with psycopg2.connect(url, connect_timeout=10) as connection, connection.cursor() as cur:
            cur.execute(sql.SQL(CREATE_TABLE).format(table=sql.Identifier(table)))
        connection.close()
    except psycopg2.Error as exc:
        raise CannotRun(
            f"could not use the database at POSTGRES_URL {redact(url)} ({first_line(exc)}); "
            f"{HOW_TO_START_A_DATABASE}"
        ) from None


def count_rows(url: str, table: str) -> int:
    with psycopg2.connect(url, connect_timeout=10) as connection, connection.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        (count,) = cur.fetchone()
    connection.close()
    return count


def refuse(exc: Exception) -> None:
    raise exc


class WindowsSink(PostgreSQLSink):
    """PostgreSQLSink with an upsert per window, which waits out a lost database.

    It counts what it did, for the summary line and the metrics: `rows_written`,
    `write_errors`, and `round_trips` (each batch's time in the database).
    """

    def __init__(self, url: str, table: str) -> None:
        dsn = parse_dsn(url)
        connect = {
            key: dsn.pop(key, None) for key in ("host", "port", "dbname", "user", "password")
        }
        super().__init__(
            **connect,
            **dsn,
            table_name=table,
            schema_auto_update=False,
            primary_key_columns=["sensor_id", "window_start"],
            upsert_on_primary_key=True,
            include_metadata=False,
            connection_timeout_seconds=10,
            on_client_connect_failure=refuse,
        )
        self.where = redact(url)
        self.rows_written = self.write_errors = 0
        self.round_trips = write_histogram()
        self.lost_at: float | None = None

    def write(self, batch: SinkBatch) -> None:
        started = time.monotonic()
        try:
            if self._client is None or self._client.closed:
                self.setup()
            super().write(batch)
        except (psycopg2.Error, PostgreSQLSinkException) as exc:
            if not self.lost_the_database(exc):
                raise
            self.write_errors += 1
            if self.lost_at is None:
                self.lost_at = started
                logger.warning(
                    "Lost the database at %s (%s); retrying every %g s until it is back",
                    self.where,
                    first_line(exc),
                    RETRY_SECONDS,
                )
            raise SinkBackpressureError(retry_after=RETRY_SECONDS) from None
        self.round_trips.observe(time.monotonic() - started)
        self.rows_written += batch.size
        if self.lost_at is not None:
            logger.info(
                "The database at %s is back after %.1f s",
                self.where,
                time.monotonic() - self.lost_at,
            )
            self.lost_at = None

    def lost_the_database(self, exc: Exception) -> bool:
        cause: Any = exc.__cause__ if isinstance(exc, PostgreSQLSinkException) else exc
        lost = self._client is None or bool(self._client.closed)
        if lost or isinstance(cause, psycopg2.OperationalError | psycopg2.InterfaceError):
            if self._client is not None:
                self._client.close()
            return True
        return False


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
