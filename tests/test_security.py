"""A secured Kafka: mutual TLS, SASL_SSL with SCRAM, OAUTHBEARER through an OIDC token
endpoint; one client configuration for every script; and no secret ever printed.

The broker is Apache Kafka with TLS listeners (certificates from tests/certificates.py,
host name verified): the embedded broker has no TLS, so these run under `make test-kafka`.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import psycopg2
import pytest
from cryptography.hazmat.primitives import serialization
from psycopg2 import sql
from psycopg2.extensions import parse_dsn

from certificates import Certificates, make_certificates
from helpers import SCRAM_USER, Broker, Script, TopicNames, run_script, table
from sensor_lib.kafka_broker import BrokerTls, KafkaBroker
from sensor_lib.polling import wait_until
from sensor_lib.servers import find_free_port

pytestmark = pytest.mark.integration

# Each secret a setting takes, as a marker no output may hold in any form.
MARKERS = {
    "sasl": "sasl-marker-7f3a9c",
    "key": "key-marker-2b8e41",
    "oauth": "oauth-marker-c40d17",
    "db-url": "dburl-marker-91e6aa",
    "db-query": "dbquery-marker-5d02bf",
    "db-keyvalue": "dbkv-marker-e8c3f2",
}
SCRIPTS = [
    "sensor_stream_producer.py",
    "sensor_stream_processor.py",
    "sensor_stream_sink.py",
    "sensor_stream_viewer.py",
    "sensor_stream_chart.py",
    "sensor_lib.demo",
]


@dataclass(frozen=True)
class Secured:
    """Apache Kafka with its TLS listeners, and what a client needs for each."""

    kafka: KafkaBroker
    certs: Certificates
    encrypted_client_key: Path  # the client key, encrypted with MARKERS["key"]
    token_endpoint: str
    tokens_asked: list[str]

    @property
    def mtls(self) -> dict[str, str]:
        return {
            "BROKER_ADDRESS": f"127.0.0.1:{self.kafka.ssl_port}",
            "BROKER_SECURITY_PROTOCOL": "SSL",
            "BROKER_SSL_CA_LOCATION": str(self.certs.ca),
            "BROKER_SSL_CERTIFICATE_LOCATION": str(self.certs.client_cert),
            "BROKER_SSL_KEY_LOCATION": str(self.certs.client_key),
        }

    def sasl_ssl(self, mechanism: str, **settings: str) -> dict[str, str]:
        return {
            "BROKER_ADDRESS": f"127.0.0.1:{self.kafka.sasl_ssl_port}",
            "BROKER_SECURITY_PROTOCOL": "SASL_SSL",
            "BROKER_SSL_CA_LOCATION": str(self.certs.ca),
            "BROKER_SASL_MECHANISM": mechanism,
            **settings,
        }

    def scram(self, password: str = SCRAM_USER[1]) -> dict[str, str]:
        return self.sasl_ssl(
            "SCRAM-SHA-256", BROKER_SASL_USERNAME=SCRAM_USER[0], BROKER_SASL_PASSWORD=password
        )

    def oauth(self, secret: str) -> dict[str, str]:
        return self.sasl_ssl(
            "OAUTHBEARER",
            BROKER_OAUTH_TOKEN_ENDPOINT=self.token_endpoint,
            BROKER_OAUTH_CLIENT_ID="sensor-app",
            BROKER_OAUTH_CLIENT_SECRET=secret,
            BROKER_OAUTH_SCOPE="kafka",
        )


def unsigned_token(subject: str) -> str:
    """A JWT with no signature ("alg": "none"), which the test broker's validator takes."""

    def part(claims: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return f"{part({'alg': 'none'})}.{part({'sub': subject, 'iat': now, 'exp': now + 3600})}."


def serve_tokens(asked: list[str]) -> HTTPServer:
    """An OIDC token endpoint: client credentials sensor-app:right-secret get a token."""
    right = "Basic " + base64.b64encode(b"sensor-app:right-secret").decode()

    class TokenEndpoint(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            allowed = self.headers.get("Authorization") == right
            asked.append("granted" if allowed else "refused")
            body = json.dumps(
                {"access_token": unsigned_token("sensor-app"), "expires_in": 3600}
                if allowed
                else {"error": "invalid_client"}
            ).encode()
            self.send_response(200 if allowed else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), TokenEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def secured(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    if broker.kind != "kafka":
        pytest.skip(
            "TLS, client certificates and OAUTHBEARER need Apache Kafka (the embedded broker "
            "has no TLS); this runs under `make test-kafka`"
        )
    folder = tmp_path_factory.mktemp("certs")
    certs = make_certificates(folder)
    key = serialization.load_pem_private_key(certs.client_key.read_bytes(), password=None)
    encrypted = folder / "client-key-encrypted.pem"
    encryption = serialization.BestAvailableEncryption(MARKERS["key"].encode())
    encrypted.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    asked: list[str] = []
    tokens = serve_tokens(asked)
    tls = BrokerTls(certs.server_cert, certs.server_key, certs.ca)
    kafka = KafkaBroker(sasl_port=find_free_port(), scram_users=[SCRAM_USER], tls=tls)
    try:
        with kafka:
            endpoint = f"http://127.0.0.1:{tokens.server_port}/token"
            yield Secured(kafka, certs, encrypted, endpoint, asked)
    finally:
        tokens.shutdown()


def produce_readings(env: dict[str, str], names: TopicNames, *flags: str) -> str:
    """The producer's run to its end: 60 readings over 3 sensors, history that closes
    windows at once; returns its output, after checking it delivered every reading."""
    done = run_script(
        "sensor_stream_producer.py",
        *("--raw-topic", names.raw, "--count", "60", "--rate", "0", "--sensors", "3"),
        *("--backfill-seconds", "30", "--quiet", "--broker-timeout", "20", *flags),
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "Delivered 60 of 60 readings" in done.stderr
    return done.stdout + done.stderr


# --- One client configuration reaches every client --------------------------------------


@pytest.mark.timeout(600)  # six scripts one after another, each bounded by its own wait
def test_one_client_properties_file_runs_every_script_and_the_demo_over_mutual_tls(
    secured: Secured, names: TopicNames, postgres_url: str, tmp_path: Path
) -> None:
    """Every Kafka client of every script, admin and dead-letter clients too, takes the
    client certificate from KAFKA_CONFIG_FILE: the listener refuses any client without."""
    mtls = secured.mtls
    properties = tmp_path / "client.properties"
    properties.write_text(
        "# as a console hands it out\n"
        f"bootstrap.servers={mtls['BROKER_ADDRESS']}\n"
        "security.protocol=SSL\n"
        f"ssl.ca.location={mtls['BROKER_SSL_CA_LOCATION']}\n"
        f"ssl.certificate.location={mtls['BROKER_SSL_CERTIFICATE_LOCATION']}\n"
        f"ssl.key.location={mtls['BROKER_SSL_KEY_LOCATION']}\n"
    )
    env = {"KAFKA_CONFIG_FILE": str(properties)}
    topics = ["--raw-topic", names.raw, "--agg-topic", names.agg]
    produce_readings(env, names)
    state = str(tmp_path / "state")
    group = ["--consumer-group", names.group, "--state-dir", state, "--commit-interval", "1"]
    with Script("sensor_stream_processor.py", *topics, *group, env=env) as processor:
        processor.wait_for_output("windows emitted", timeout=120)  # its first summary
        processor.wait_for_output("Sensor3 [", timeout=120)
        assert processor.stop() == 0, processor.output()
    sink_flags = ["--agg-topic", names.agg, "--consumer-group", names.sink_group]
    sink_flags += ["--sink-table", names.table, "--commit-interval", "1"]
    with Script(
        "sensor_stream_sink.py", *sink_flags, env={**env, "POSTGRES_URL": postgres_url}
    ) as sink:
        wait_until(lambda: rows_in(postgres_url, names.table), 120, what="rows in the table")
        assert sink.stop() == 0, sink.output()
    viewed = run_script(
        "sensor_stream_viewer.py", "--agg-topic", names.agg, "--duration", "8", env=env
    )
    assert viewed.returncode == 0, viewed.stderr
    assert "Sensor3" in viewed.stdout
    chart = tmp_path / "chart.png"
    charted = run_script("sensor_stream_chart.py", str(chart), *topics, env=env)
    assert charted.returncode == 0, charted.stderr
    assert chart.stat().st_size > 0
    demo_env = {**env, "POSTGRES_URL": postgres_url, "SINK_TABLE": f"{names.table}_demo"}
    demo = run_script(
        "sensor_lib.demo",
        *("--duration", "25", "--demo-log-dir", str(tmp_path / "demo")),
        *("--backfill-seconds", "60"),
        timeout=180,
        env=demo_env,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert f"using the broker at {mtls['BROKER_ADDRESS']}" in demo.stderr
    closing = demo.stderr.strip().splitlines()[-1]
    assert "? " not in closing, demo.stderr
    assert " 0 windows" not in closing, demo.stderr


def rows_in(url: str, name: str) -> int:
    """The table's rows; 0 while the sink has not made it yet."""
    try:
        return len(table(url, name))
    except psycopg2.errors.UndefinedTable:
        return 0


@pytest.mark.parametrize("client", ["no certificate", "certificate from another CA"])
def test_a_client_without_the_right_certificate_is_refused_in_one_line(
    secured: Secured, names: TopicNames, client: str
) -> None:
    env = {**secured.mtls, "BROKER_TIMEOUT": "5"}
    if client == "no certificate":
        del env["BROKER_SSL_CERTIFICATE_LOCATION"], env["BROKER_SSL_KEY_LOCATION"]
    else:
        env["BROKER_SSL_CERTIFICATE_LOCATION"] = str(secured.certs.other_server_cert)
        env["BROKER_SSL_KEY_LOCATION"] = str(secured.certs.other_server_key)
    done = run_script("sensor_stream_producer.py", "--raw-topic", names.raw, env=env)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert f"no Kafka broker answered at {env['BROKER_ADDRESS']}" in line


def test_sasl_ssl_with_scram_works_and_a_wrong_password_is_refused_in_one_line(
    secured: Secured, names: TopicNames
) -> None:
    produce_readings(secured.scram(), names)
    refused = run_script(
        "sensor_stream_producer.py",
        *("--raw-topic", names.raw),
        env={**secured.scram("not-the-password"), "BROKER_TIMEOUT": "5"},
    )
    assert refused.returncode == 1, refused.stderr
    (line,) = [line for line in refused.stderr.splitlines() if " ERROR " in line]
    assert "Authentication failed" in line or "SASL" in line, line


def test_oauthbearer_gets_its_token_from_the_oidc_endpoint_and_a_wrong_secret_is_refused(
    secured: Secured, names: TopicNames
) -> None:
    secured.tokens_asked.clear()
    produce_readings(secured.oauth("right-secret"), names)
    assert "granted" in secured.tokens_asked
    refused = run_script(
        "sensor_stream_producer.py",
        *("--raw-topic", names.raw),
        env={**secured.oauth("wrong-secret"), "BROKER_TIMEOUT": "5"},
    )
    assert refused.returncode == 1, refused.stderr
    assert "refused" in secured.tokens_asked
    assert len([line for line in refused.stderr.splitlines() if " ERROR " in line]) == 1


# --- No secret printed ------------------------------------------------------------------


def database_urls(port: int, user: str = "sensor", dbname: str = "sensors") -> dict[str, str]:
    """POSTGRES_URL in each form libpq takes, each with its own password marker."""
    m = MARKERS
    return {
        "db-url": f"postgresql://{user}:{m['db-url']}@127.0.0.1:{port}/{dbname}",
        "db-query": f"postgresql://127.0.0.1:{port}/{dbname}?user={user}&password={m['db-query']}",
        "db-keyvalue": f"host=127.0.0.1 port={port} dbname={dbname} user={user} "
        f"password={m['db-keyvalue']}",
    }


def assert_no_marker(output: str) -> None:
    shown = [name for name, marker in MARKERS.items() if marker in output]
    assert not shown, f"{shown} printed:\n{output}"


def every_secret(secured: Secured, database_port: int, form: str) -> dict[str, str]:
    """Each secret setting given at once: a script reads the ones it takes."""
    return {
        **secured.scram(MARKERS["sasl"]),
        "BROKER_SSL_KEY_PASSWORD": MARKERS["key"],
        "BROKER_OAUTH_CLIENT_SECRET": MARKERS["oauth"],
        "POSTGRES_URL": database_urls(database_port)[form],
    }


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_no_secret(secured: Secured, script: str) -> None:
    env = every_secret(secured, find_free_port(), "db-url")
    done = run_script(script, "--help", env=env)
    assert done.returncode == 0, done.stderr
    assert_no_marker(done.stdout + done.stderr)


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(
    "path", ["unreachable broker", "refused SCRAM", "refused OAuth", "mTLS, encrypted key"]
)
def test_no_script_prints_a_secret_whatever_the_broker_says(
    secured: Secured, names: TopicNames, tmp_path: Path, script: str, path: str
) -> None:
    env = {"BROKER_TIMEOUT": "4", "POSTGRES_URL": database_urls(find_free_port())["db-url"]}
    if path == "unreachable broker":
        env |= {**secured.scram(MARKERS["sasl"]), "BROKER_ADDRESS": f"127.0.0.1:{find_free_port()}"}
    elif path == "refused SCRAM":
        env |= secured.scram(MARKERS["sasl"])
    elif path == "refused OAuth":
        env |= secured.oauth(MARKERS["oauth"])
    else:  # it connects: a short run that ends on its own or by its stop
        env |= {**secured.mtls, "BROKER_SSL_KEY_LOCATION": str(secured.encrypted_client_key)}
        env["BROKER_SSL_KEY_PASSWORD"] = MARKERS["key"]
    flags = {
        "sensor_stream_producer.py": ["--raw-topic", names.raw, "--count", "5", "--rate", "0"],
        "sensor_stream_processor.py": ["--raw-topic", names.raw, "--state-dir", str(tmp_path)],
        "sensor_stream_sink.py": ["--agg-topic", names.agg],
        "sensor_stream_viewer.py": ["--agg-topic", names.agg, "--duration", "3"],
        "sensor_stream_chart.py": [str(tmp_path / "c.png"), "--raw-topic", names.raw],
        "sensor_lib.demo": ["--duration", "3", "--demo-log-dir", str(tmp_path / "demo")],
    }[script]
    with Script(script, *flags, env=env) as running:
        try:
            running.wait(timeout=40)
        except AssertionError:  # still running after 40 s: a stop ends it
            running.stop()
        assert_no_marker(running.output())
        if script == "sensor_stream_producer.py":  # the secrets were used: refused, or let in
            connected = path == "mTLS, encrypted key"
            assert running.process.returncode == (0 if connected else 1), running.output()
            assert ("Delivered 5 of 5 readings" in running.output()) is connected
        if script == "sensor_lib.demo":
            for log in (tmp_path / "demo").glob("*.log"):
                assert_no_marker(log.read_text(errors="replace"))


@pytest.mark.parametrize("form", ["db-url", "db-query", "db-keyvalue"])
@pytest.mark.parametrize("script", ["sensor_stream_sink.py", "sensor_lib.demo"])
def test_no_database_password_is_printed_in_any_url_form(
    secured: Secured, names: TopicNames, tmp_path: Path, form: str, script: str
) -> None:
    """The database is down: one line naming POSTGRES_URL, its password masked."""
    env = {**secured.mtls, "POSTGRES_URL": database_urls(find_free_port())[form]}
    flags = {
        "sensor_stream_sink.py": ["--agg-topic", names.agg],
        "sensor_lib.demo": ["--duration", "3", "--demo-log-dir", str(tmp_path / "demo")],
    }[script]
    done = run_script(script, *flags, env=env, timeout=90)
    assert done.returncode == 1, done.stderr
    assert "POSTGRES_URL" in done.stderr
    assert_no_marker(done.stdout + done.stderr)


@pytest.mark.parametrize("form", ["db-url", "db-query", "db-keyvalue"])
def test_the_sink_and_its_metrics_show_no_secret_while_it_runs(
    secured: Secured, names: TopicNames, postgres_url: str, form: str
) -> None:
    """The sink writes with its database password in each URL form and a SCRAM password
    set: neither its log nor its /metrics holds them."""
    server = parse_dsn(postgres_url)
    user = f"sweep_{names.table}"
    with psycopg2.connect(postgres_url) as connection, connection.cursor() as cursor:
        role = sql.Identifier(user)
        cursor.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(MARKERS[form]))
        )
        cursor.execute(sql.SQL("GRANT CREATE, USAGE ON SCHEMA public TO {}").format(role))
    connection.close()
    metrics_port = find_free_port()
    env = {
        **secured.scram(),
        "POSTGRES_URL": database_urls(int(server["port"]), user, server["dbname"])[form],
        "METRICS_PORT": str(metrics_port),
        "SINK_TABLE": names.table,
    }
    flags = ["--agg-topic", names.agg, "--consumer-group", names.sink_group]
    with Script("sensor_stream_sink.py", *flags, env=env) as sink:
        sink.wait_for_output("Writing ", timeout=90)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as page:
            scraped = page.read().decode()
        assert "sensor_sink_rows_written_total" in scraped
        assert_no_marker(scraped)
        assert sink.stop() == 0, sink.output()
        assert_no_marker(sink.output())
