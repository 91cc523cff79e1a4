"""Writing windows to PostgreSQL: the table, POSTGRES_URL, and a sink that waits out an outage.

Quix Streams' PostgreSQLSink writes each batch at a checkpoint, before the offsets
are committed, so a row is never committed unstored. When a write fails it
raises, and the app stops. `WindowsSink` turns a lost database (refused, or a
connection it closed) into SinkBackpressureError instead: Quix Streams then drops
the batch, pauses, goes back to the last commit, and writes the batch again once
the database is back. The upsert on (sensor_id, window_start) keeps one row per
window through those repeats, a restart, or a replay of the topic.

POSTGRES_URL is anything libpq takes (a URL, with `?sslmode=verify-full&sslrootcert=...`
or any other parameter, or `key=value` pairs); every parameter reaches the
connection. The sink needs SELECT, INSERT and UPDATE on its table and USAGE on its
schema, nothing more once the table is there: it makes the table only when it is
missing, and never a schema. A log line or an error never shows a password.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote, urlencode

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn
from quixstreams.sinks import SinkBackpressureError, SinkBatch
from quixstreams.sinks.community.postgresql import PostgreSQLSink, PostgreSQLSinkException

from sensor_lib.errors import CannotRun, UsageError
from sensor_lib.metrics import write_histogram

logger = logging.getLogger(__name__)

RETRY_SECONDS = 2.0  # how long Quix Streams pauses before it writes a batch again
HOW_TO_START_A_DATABASE = (
    "start one with `make postgres` (no Docker) or `docker compose up -d`, or set POSTGRES_URL"
)
# What to do, for the failures that starting a database would not mend: (words of
# libpq's message, the hint).
HINTS = (
    (
        "certificate",
        "POSTGRES_URL's sslrootcert must be the CA that signed the server's certificate, "
        "and its host a name on that certificate",
    ),
    ("no encryption", "the server takes TLS only: add sslmode=verify-full and sslrootcert"),
)
UNPARSABLE = (
    "--postgres-url (POSTGRES_URL): libpq cannot parse it (its text is not shown: it may "
    "hold a password); give postgresql://user:password@host:port/dbname or key=value pairs"
)
SECRETS = ("password", "sslpassword")
URL_PREFIXES = ("postgresql://", "postgres://")  # as libpq tells a URL from key=value pairs
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


def connection_parameters(url: str) -> dict[str, str]:
    """Every parameter of POSTGRES_URL, as libpq itself parses it; a UsageError that
    does not quote it (libpq's own message may) if it cannot."""
    try:
        return parse_dsn(url)
    except psycopg2.Error:
        raise UsageError(UNPARSABLE) from None


def redact(url: str) -> str:
    """POSTGRES_URL for a log line, rebuilt from what libpq parses in the form it came in
    (a URL, or key=value pairs), each secret (password, sslpassword) shown as ***."""
    try:
        params = {k: "***" if k in SECRETS else v for k, v in parse_dsn(url).items()}
    except psycopg2.Error:
        return "(not shown: libpq cannot parse it)"
    if not url.startswith(URL_PREFIXES):
        return make_dsn(**params)
    login = quote(params.pop("user", ""), safe="") + (":***" if params.pop("password", "") else "")
    login += "@" if login else ""
    host, port = params.get("host", ""), params.get("port", "")
    netloc = ""
    if "," not in host + port and "/" not in host:  # one host by name: in the URL's place
        netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
        params = {k: v for k, v in params.items() if k not in ("host", "port")}
    path = quote(params.pop("dbname", ""), safe="")
    query = urlencode(params, safe="/*", quote_via=quote)
    return f"{url.split('://')[0]}://{login}{netloc}/{path}{'?' if query else ''}{query}"


def reason(exc: Exception, url: str) -> str:
    """The first line of a psycopg2 error, with POSTGRES_URL's secrets shown as ***."""
    text, params = first_line(exc), connection_parameters(url)
    shown = {value for key, value in params.items() if key not in SECRETS}
    for secret in {params.get(key) for key in SECRETS} - shown - {None, ""}:
        text = text.replace(secret, "***")  # a secret that equals the user shows anyway
    return text


def hint(why: str) -> str:
    return next((what for words, what in HINTS if words in why), HOW_TO_START_A_DATABASE)


def prepare_table(url: str, table: str, schema: str = "public") -> None:
    """Make `schema`.`table` if it is missing, and never the schema: with the table
    made beforehand, the sink needs no CREATE right. One line naming POSTGRES_URL if
    the database is not there, refuses the login, or has no such schema."""
    params = connection_parameters(url)
    where = f"the database at POSTGRES_URL {redact(url)}"
    try:
        connection = psycopg2.connect(**{"connect_timeout": "10", **params})
    except psycopg2.Error as exc:
        why = reason(exc, url)
        raise CannotRun(f"could not use {where} ({why}); {hint(why)}") from None
    try:
        with connection, connection.cursor() as cur:
            cur.execute(
                "SELECT to_regnamespace(%s), to_regclass(%s)",
                [sql.Identifier(*name).as_string(cur) for name in [(schema,), (schema, table)]],
            )
            schema_there, table_there = cur.fetchone()
            if schema_there and not table_there:
                cur.execute(sql.SQL(CREATE_TABLE).format(table=sql.Identifier(schema, table)))
    except psycopg2.Error as exc:
        raise CannotRun(
            f"could not make the table {schema}.{table} in {where} ({reason(exc, url)})"
        ) from None
    finally:
        connection.close()
    if not schema_there:
        raise CannotRun(
            f"{where} has no schema {schema}: create it (CREATE SCHEMA {schema}) "
            "or set SINK_SCHEMA to one that exists"
        )


def count_rows(url: str, table: str, schema: str = "public") -> int:
    with psycopg2.connect(url, connect_timeout=10) as connection, connection.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table)))
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

    def __init__(self, url: str, table: str, schema: str = "public") -> None:
        dsn = connection_parameters(url)  # every parameter goes to psycopg2.connect
        connect = {
            key: dsn.pop(key, None) for key in ("host", "port", "dbname", "user", "password")
        }
        super().__init__(
            **connect,
            **dsn,
            table_name=table,
            schema_name=schema,
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
        self.url = url

    def setup(self) -> None:
        """Connect, and no more. Quix Streams' setup() also runs `CREATE SCHEMA IF NOT
        EXISTS`, which PostgreSQL checks against the CREATE right on the database before
        it looks whether the schema exists: a role with only the rights to write the
        table would fail there. prepare_table has found the schema and the table."""
        self._client = psycopg2.connect(**self._client_settings)

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
                    reason(exc, self.url),
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
