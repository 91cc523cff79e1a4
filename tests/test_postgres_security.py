"""The sink's database, secured: TLS that checks the server, a role with no CREATE right,
its own schema, and a password that never shows.

The fast tests mask POSTGRES_URL in each form libpq takes. The others run the sink as
a subprocess against the session's broker and a real PostgreSQL over real sockets: the
worker's server, or one of the test's own that takes TLS only (a PostgreSQL built with
OpenSSL, which the pgserver wheel's is not; the test is skipped where there is none).
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import pytest

from certificates import Certificates, make_certificates
from helpers import (
    RECORDED,
    TopicNames,
    aggregate_message,
    create_topic,
    one_error_line,
    produce,
    run_script,
    table,
    wait_until_caught_up,
)
from sensor_lib.errors import UsageError
from sensor_lib.postgres_server import PostgresServer
from sensor_lib.postgres_sink import connection_parameters, prepare_table, reason, redact
from sensor_lib.servers import ServerStartError

MARKER = "pw-7f3c9e1ab2d4-marker"  # a password that appears nowhere else
KEY_MARKER = "kp-51e08d2c6a9b-marker"  # an sslpassword, likewise
FORMS = {
    "url": f"postgresql://writer:{MARKER}@db.example.com:6543/sensors?sslpassword={KEY_MARKER}",
    "url-query": (
        f"postgresql://writer@db.example.com:6543/sensors?password={MARKER}"
        f"&sslmode=verify-full&sslrootcert=/etc/sensor/db-ca.pem&sslpassword={KEY_MARKER}"
    ),
    "key-value": (
        f"host=db.example.com port=6543 dbname=sensors user=writer password='{MARKER}' "
        f"sslpassword={KEY_MARKER}"
    ),
}
UNPARSABLE = f"postgresql://writer:{MARKER}@[::1"  # libpq's own error quotes it whole


# --- Fast: the password never shows ----------------------------------------------------


@pytest.mark.parametrize("url", FORMS.values(), ids=FORMS.keys())
def test_redact_shows_no_secret_but_host_port_dbname_and_user_in_every_form(url: str) -> None:
    shown = redact(url)
    assert MARKER not in shown
    assert KEY_MARKER not in shown
    for part in ["db.example.com", "6543", "sensors", "writer", "***"]:
        assert part in shown


def test_redact_keeps_a_urls_form() -> None:
    assert redact(FORMS["url-query"]) == (
        "postgresql://writer:***@db.example.com:6543/sensors"
        "?sslmode=verify-full&sslpassword=***&sslrootcert=/etc/sensor/db-ca.pem"
    )


def test_an_unparsable_postgres_url_is_never_quoted() -> None:
    assert MARKER not in redact(UNPARSABLE)
    with pytest.raises(UsageError) as refused:
        connection_parameters(UNPARSABLE)
    assert "POSTGRES_URL" in str(refused.value)
    assert MARKER not in str(refused.value)


@pytest.mark.parametrize("url", FORMS.values(), ids=FORMS.keys())
def test_an_error_line_never_shows_a_password_the_error_quoted(url: str) -> None:
    echoed = psycopg2.OperationalError(f'could not use "{MARKER}" nor "{KEY_MARKER}"\nDETAIL')
    assert reason(echoed, url) == 'could not use "***" nor "***"'


# --- Against a real server ------------------------------------------------------------


def admin(url: str, *statements: str) -> None:
    """Run `statements` as the worker's superuser, each in its own transaction."""
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        connection.close()


def query(url: str, statement: str) -> tuple:
    with psycopg2.connect(url) as connection, connection.cursor() as cur:
        cur.execute(statement)
        row = cur.fetchone()
    connection.close()
    return row


def as_login(url: str, user: str, password: str) -> str:
    """The worker's database URL with another login."""
    return url.replace("://sensor:sensor@", f"://{user}:{password}@")


def expected_rows(messages: list[tuple[bytes, bytes]]) -> dict:
    """The table helpers.table reads, from aggregates: the last of each window wins."""
    return {
        (key.decode(), json.loads(value)["start"]): json.loads(value) for key, value in messages
    }


def store(names: TopicNames, address: str, start_sink, url: str, schema: str = "public") -> str:
    """Run the sink over RECORDED, then over a new value of one of its windows (a second
    batch: an UPDATE of a row); check the table in `schema`; return the sink's output."""
    again = [(b"Sensor1", aggregate_message(0, 9, 20.5, 21.25, 21.9))]
    create_topic(address, names.agg)
    produce(address, names.agg, RECORDED)
    with start_sink(names, "--sink-schema", schema, database=url) as storing:
        wait_until_caught_up(address, names.sink_group, names.agg, 5, scripts=[storing])
        produce(address, names.agg, again)
        wait_until_caught_up(address, names.sink_group, names.agg, 6, scripts=[storing])
        assert storing.stop() == 0, storing.output()
    assert "Traceback" not in storing.output()
    assert table(url, f"{schema}.{names.table}") == expected_rows(RECORDED + again)
    return storing.output()


@pytest.mark.integration
def test_a_role_with_only_select_insert_update_on_its_table_writes_every_window(
    broker_address: str, names: TopicNames, postgres_url: str, start_sink
) -> None:
    schema, role = f"sensors_{uuid.uuid4().hex[:8]}", f"writer_{uuid.uuid4().hex[:8]}"
    admin(postgres_url, f"CREATE SCHEMA {schema}", f"CREATE ROLE {role} LOGIN PASSWORD '{MARKER}'")
    prepare_table(postgres_url, names.table, schema)  # the table, made beforehand
    admin(
        postgres_url,
        f"GRANT USAGE ON SCHEMA {schema} TO {role}",
        f"GRANT SELECT, INSERT, UPDATE ON {schema}.{names.table} TO {role}",
    )
    no_create = (
        f"SELECT has_database_privilege('{role}', current_database(), 'CREATE'),"
        f" has_schema_privilege('{role}', '{schema}', 'CREATE'),"
        f" has_schema_privilege('{role}', 'public', 'CREATE')"
    )
    assert query(postgres_url, no_create) == (False, False, False)
    url = as_login(postgres_url, role, MARKER)
    output = store(names, broker_address, start_sink, url, schema)
    assert "rows written=6" in output
    assert MARKER not in output


@pytest.mark.integration
def test_sink_schema_is_where_the_table_is_made_and_written_whatever_the_search_path(
    broker_address: str, names: TopicNames, postgres_url: str, start_sink
) -> None:
    # The role's own schema comes first on its search_path ("$user", public).
    role, schema = f"owner_{uuid.uuid4().hex[:8]}", f"target_{uuid.uuid4().hex[:8]}"
    admin(
        postgres_url,
        f"CREATE ROLE {role} LOGIN PASSWORD '{MARKER}'",
        f"CREATE SCHEMA {role} AUTHORIZATION {role}",
        f"CREATE SCHEMA {schema} AUTHORIZATION {role}",
    )
    url = as_login(postgres_url, role, MARKER)
    store(names, broker_address, start_sink, url, schema)
    where = (
        f"SELECT to_regclass('{schema}.{names.table}') IS NOT NULL,"
        f" to_regclass('{role}.{names.table}') IS NULL,"
        f" to_regclass('public.{names.table}') IS NULL"
    )
    assert query(postgres_url, where) == (True, True, True)


@pytest.mark.integration
def test_a_missing_schema_is_one_line_saying_to_create_it_or_set_sink_schema(
    names: TopicNames, postgres_url: str, start_sink
) -> None:
    with start_sink(names, "--sink-schema", "nowhere", database=postgres_url) as refused:
        assert refused.wait() == 1, refused.output()
    assert one_error_line(refused.output()).endswith(
        f"the database at POSTGRES_URL {redact(postgres_url)} has no schema nowhere: "
        "create it (CREATE SCHEMA nowhere) or set SINK_SCHEMA to one that exists"
    )


@pytest.mark.integration
def test_an_unparsable_postgres_url_is_a_usage_error_that_does_not_quote_it(
    broker_address: str,
) -> None:
    done = run_script(
        "sensor_stream_sink.py",
        *["--broker-address", broker_address],
        env={"POSTGRES_URL": UNPARSABLE},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [
        "sensor_stream_sink.py: error: --postgres-url (POSTGRES_URL): libpq cannot parse it "
        "(its text is not shown: it may hold a password); give "
        "postgresql://user:password@host:port/dbname or key=value pairs"
    ]
    assert MARKER not in done.stdout + done.stderr


# --- TLS --------------------------------------------------------------------------------


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "certs")


@pytest.fixture
def tls_only_server(certs: Certificates) -> Iterator[Callable[..., PostgresServer]]:
    """Start a PostgreSQL that takes TCP logins over TLS only, with the server certificate
    of `certs.ca`, or (start(other_ca=True)) of the unrelated CA; stopped after."""
    started: list[PostgresServer] = []

    def start(*, other_ca: bool = False) -> PostgresServer:
        cert, key = [certs.server_cert, certs.server_key]
        if other_ca:
            cert, key = [certs.other_server_cert, certs.other_server_key]
        folder = Path(tempfile.mkdtemp(prefix="sensor-test-pg-"))
        try:
            server = PostgresServer(
                folder, durable=False, ssl_cert_file=cert, ssl_key_file=key, tls_only=True
            )
        except ServerStartError as exc:  # no PostgreSQL built with OpenSSL on this machine
            pytest.skip(str(exc))
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def verify_full(server: PostgresServer, ca: Path, host: str = "127.0.0.1") -> str:
    return server.url.replace("127.0.0.1", host) + f"?sslmode=verify-full&sslrootcert={ca}"


@pytest.mark.integration
def test_the_sink_writes_every_window_over_tls_with_verify_full(
    broker_address: str, names: TopicNames, certs: Certificates, tls_only_server, start_sink
) -> None:
    server = tls_only_server()
    url = verify_full(server, certs.ca)
    store(names, broker_address, start_sink, url)
    # The certificate names the host both ways; the server took TLS, as it takes nothing else.
    for host in ["127.0.0.1", "localhost"]:
        tls = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        assert query(verify_full(server, certs.ca, host), tls) == (True,)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("problem", "says"),
    [
        (
            "another-ca",
            "SSL error: certificate verify failed); POSTGRES_URL's sslrootcert must be the CA "
            "that signed the server's certificate, and its host a name on that certificate",
        ),
        ("plaintext", "no encryption); the server takes TLS only: add sslmode=verify-full"),
    ],
    ids=["another-ca", "plaintext"],
)
def test_a_server_the_sink_cannot_trust_or_reach_over_tls_is_one_line_naming_postgres_url(
    names: TopicNames,
    certs: Certificates,
    tls_only_server,
    start_sink,
    problem: str,
    says: str,
) -> None:
    server = tls_only_server(other_ca=problem == "another-ca")
    url = f"{server.url}?sslmode=disable"
    if problem == "another-ca":
        url = verify_full(server, certs.ca)  # and the server's certificate is the other CA's
    with start_sink(names, database=url) as refused:
        assert refused.wait() == 1, refused.output()
    error = one_error_line(refused.output())
    assert f"could not use the database at POSTGRES_URL {redact(url)} (" in error
    assert says in error
    assert ":sensor@" not in refused.output()  # the password
