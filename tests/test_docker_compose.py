"""Static checks of docker-compose.yml and the CI workflow, offline; no Docker needed.

The Compose file is validated against the Compose specification with check-jsonschema.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from check_jsonschema.cli.main_command import main
from click.testing import CliRunner
from psycopg2.extensions import parse_dsn

from sensor_lib import postgres_server
from sensor_stream_sink import SinkSettings

REPO = Path(__file__).resolve().parent.parent


def load(relative: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / relative).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return load("docker-compose.yml")["services"]


@pytest.fixture(scope="module")
def jobs() -> dict[str, Any]:
    return load(".github/workflows/ci.yml")["jobs"]


def flags(command: list[str]) -> dict[str, str]:
    """`--flag value` items (one or two per list entry) as {"--flag": "value"}."""
    words = " ".join(command).split()
    return {
        word: words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else ""
        for i, word in enumerate(words)
        if word.startswith("--")
    }


def test_every_service_uses_a_pinned_image(services: dict[str, Any]) -> None:
    assert set(services) == {"redpanda", "console", "postgres"}
    for name, repository in [("redpanda", "redpanda"), ("console", "console")]:
        image = services[name]["image"]
        assert re.fullmatch(
            rf"docker\.redpanda\.com/redpandadata/{repository}:v\d+\.\d+\.\d+", image
        ), image
    assert services["console"]["image"].split(":v")[1].startswith("3.")
    # The official image, pinned to a minor release: never `latest`, nor a bare major.
    assert re.fullmatch(r"postgres:\d+\.\d+", services["postgres"]["image"])


def test_published_ports(services: dict[str, Any]) -> None:
    assert set(services["redpanda"]["ports"]) == {
        "19092:19092",
        "18081:18081",
        "18082:18082",
        "19644:9644",
    }
    assert services["console"]["ports"] == ["8080:8080"]
    assert services["postgres"]["ports"] == ["15432:5432"]


def test_postgres_serves_the_sinks_default_url(services: dict[str, Any]) -> None:
    """The tutorial's sink needs no POSTGRES_URL: compose, `make postgres` and the sink's
    default agree on user, password, database and port."""
    postgres = services["postgres"]
    url = SinkSettings.model_fields["postgres_url"].default.get_secret_value()
    dsn = parse_dsn(url)
    assert postgres["environment"] == {
        "POSTGRES_USER": dsn["user"],
        "POSTGRES_PASSWORD": dsn["password"],
        "POSTGRES_DB": dsn["dbname"],
    }
    assert (dsn["user"], dsn["password"], dsn["dbname"]) == (
        postgres_server.USER,
        postgres_server.PASSWORD,
        postgres_server.DATABASE,
    )
    assert (dsn["host"], int(dsn["port"])) == ("localhost", postgres_server.TUTORIAL_PORT)
    assert postgres["ports"] == [f"{dsn['port']}:5432"]
    assert postgres["volumes"] == ["postgres-data:/var/lib/postgresql/data"]
    assert set(load("docker-compose.yml")["volumes"]) == {"redpanda-data", "postgres-data"}


def test_postgres_has_a_pg_isready_healthcheck(services: dict[str, Any]) -> None:
    healthcheck = services["postgres"]["healthcheck"]
    assert healthcheck["test"][0] == "CMD-SHELL"
    assert re.fullmatch(r"pg_isready -U sensor -d sensors", healthcheck["test"][1])
    assert {"interval", "timeout", "retries"} <= set(healthcheck)


def test_redpanda_listeners_and_mode(services: dict[str, Any]) -> None:
    redpanda = services["redpanda"]
    command = flags(redpanda["command"])
    assert redpanda["command"][:2] == ["redpanda", "start"]
    assert command["--mode"] == "dev-container"
    assert command["--smp"] == "1"
    assert command["--kafka-addr"] == "internal://0.0.0.0:9092,external://0.0.0.0:19092"
    assert command["--advertise-kafka-addr"] == (
        "internal://redpanda-0:9092,external://localhost:19092"
    )
    assert redpanda["container_name"] == "redpanda-0"
    assert redpanda["volumes"] == ["redpanda-data:/var/lib/redpanda/data"]


def test_console_waits_for_a_healthy_redpanda(services: dict[str, Any]) -> None:
    test = services["redpanda"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    assert "rpk cluster health | grep -E 'Healthy:.+true'" in test[1]
    assert services["console"]["depends_on"] == {"redpanda": {"condition": "service_healthy"}}


def test_console_config_uses_internal_addresses(services: dict[str, Any]) -> None:
    console = services["console"]
    assert "$$CONSOLE_CONFIG_FILE" in console["command"]
    config = yaml.safe_load(console["environment"]["CONSOLE_CONFIG_FILE"])
    # Console v3 layout: schemaRegistry at the top level, not under kafka.
    assert config == {
        "kafka": {"brokers": ["redpanda-0:9092"]},
        "schemaRegistry": {"enabled": True, "urls": ["http://redpanda-0:8081"]},
        "redpanda": {"adminApi": {"enabled": True, "urls": ["http://redpanda-0:9644"]}},
    }


def uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    """The steps of `job` that use `action` (any ref)."""
    return [s for s in job["steps"] if s.get("uses", "").startswith(f"{action}@")]


def test_ci_runs_the_suite_on_three_brokers(jobs: dict[str, Any]) -> None:
    make = {
        "embedded-broker": ["make test"],
        "redpanda": ["make test"],
        "kafka": ["make test-kafka", "make test-cluster"],
    }
    assert set(jobs) == set(make)
    for name, job in jobs.items():
        assert job["runs-on"] == "ubuntu-latest"
        assert job["timeout-minutes"] <= 40
        runs = [step["run"] for step in job["steps"] if step.get("run", "").startswith("make ")]
        assert runs == make[name]
        assert uses(job, "actions/setup-python")[0]["with"]["python-version"] == "3.11"
        for checkout in uses(job, "actions/checkout"):
            assert checkout["with"]["persist-credentials"] is False
    java = uses(jobs["kafka"], "actions/setup-java")[0]["with"]
    assert (java["distribution"], java["java-version"]) == ("temurin", "17")
    test_step = next(s for s in jobs["redpanda"]["steps"] if s.get("run") == "make test")
    assert test_step["env"] == {"BROKER_ADDRESS": "localhost:19092"}


def test_ci_actions_are_pinned_to_commits() -> None:
    # A tag can be moved; a full SHA cannot. The trailing comment says which tag it was.
    text = (REPO / ".github/workflows/ci.yml").read_text(encoding="utf-8")
    refs = re.findall(r"^\s*-?\s*uses:\s*(.+)$", text, flags=re.MULTILINE)
    assert len(refs) == 7  # checkout and setup-python in three jobs, setup-java once
    for ref in refs:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+", ref), ref


def test_ci_redpanda_matches_compose(services: dict[str, Any], jobs: dict[str, Any]) -> None:
    job = jobs["redpanda"]
    assert job["env"]["REDPANDA_IMAGE"] == services["redpanda"]["image"]
    start = next(s["run"] for s in job["steps"] if "docker run" in s.get("run", ""))
    started = flags(start.replace("\\\n", " ").split())
    assert started["--mode"] == "dev-container"
    assert started["--smp"] == "1"
    assert started["--publish"] == "19092:19092"
    assert started["--advertise-kafka-addr"] == (
        "internal://redpanda-0:9092,external://localhost:19092"
    )


def validate_compose_file(path: Path) -> tuple[int, str]:
    """check-jsonschema against the Compose specification, offline, as `make lint` runs it."""
    done = CliRunner().invoke(main, ["--builtin-schema", "vendor.compose-spec", str(path)])
    return done.exit_code, done.output


def test_the_compose_file_follows_the_compose_specification() -> None:
    assert validate_compose_file(REPO / "docker-compose.yml") == (0, "ok -- validation done\n")


def test_the_compose_check_refuses_a_file_that_breaks_the_specification(tmp_path: Path) -> None:
    broken = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    broken["services"]["redpanda"]["ports"] = "19092:19092"  # a string, not a list
    (tmp_path / "compose.yml").write_text(yaml.safe_dump(broken))
    status, output = validate_compose_file(tmp_path / "compose.yml")
    assert status == 1
    assert "$.services.redpanda.ports: '19092:19092' is not of type 'array'" in output
