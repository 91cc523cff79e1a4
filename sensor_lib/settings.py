"""Settings shared by the scripts, declared once with pydantic-settings.

Each script has one settings class built on these. A setting is a flag,
`--raw-topic`, and an environment variable of the same name, RAW_TOPIC; the flag
wins over the variable, which wins over the default. `--help` shows both, from
each field's description. A bad value is a one-line usage error (exit 2).
docs/configuration.md lists them all; a test keeps it in step with these classes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    BeforeValidator,
    Field,
    Json,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict, SettingsError
from quixstreams.kafka.configuration import ConnectionConfig

from sensor_lib.errors import UsageError


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)]


class BrokerSettings(BaseSettings):
    """Where the broker is and how to log in to it: what every script shares."""

    model_config = SettingsConfigDict(
        cli_kebab_case=True,
        cli_show_env_vars=True,
        cli_implicit_flags=True,
        cli_hide_none_type=True,
        cli_avoid_json=True,
        extra="ignore",
    )

    broker_address: str = Field("localhost:19092", description="Kafka bootstrap address, host:port")
    broker_timeout: NonNegativeFloat = Field(
        30.0, description="seconds to wait for the broker at start before giving up"
    )
    broker_security_protocol: Annotated[SecurityProtocol, BeforeValidator(_upper)] = Field(
        "PLAINTEXT", description="how to talk to the broker"
    )
    broker_sasl_mechanism: Annotated[SaslMechanism | None, BeforeValidator(_upper)] = Field(
        None, description="SASL mechanism"
    )
    broker_sasl_username: str | None = Field(None, description="SASL username")
    # A SecretStr prints as '**********' in any repr, log line or --help.
    broker_sasl_password: SecretStr | None = Field(
        None, description="SASL password; prefer the variable: a flag shows in `ps`"
    )
    broker_ssl_ca_location: str | None = Field(
        None, description="CA certificate file that signed the broker's certificate"
    )
    broker_ssl_certificate_location: str | None = Field(
        None, description="client certificate file (PEM), for brokers that require one (mTLS)"
    )
    broker_ssl_key_location: str | None = Field(
        None, description="the client certificate's private key file (PEM)"
    )
    broker_ssl_key_password: SecretStr | None = Field(
        None, description="password of that key file, if it has one"
    )
    broker_oauth_token_endpoint: str | None = Field(
        None, description="OAUTHBEARER: the OIDC token endpoint URL"
    )
    broker_oauth_client_id: str | None = Field(None, description="OAUTHBEARER: OIDC client id")
    broker_oauth_client_secret: SecretStr | None = Field(
        None, description="OAUTHBEARER: OIDC client secret"
    )
    broker_oauth_scope: str | None = Field(None, description="OAUTHBEARER: OIDC scope")
    kafka_config_file: Path | None = Field(
        None,
        description="librdkafka properties file (client.properties) for every Kafka client; "
        "a BROKER_* setting given wins over it",
    )

    @model_validator(mode="after")
    def _address_from_config_file(self) -> Self:
        """BROKER_ADDRESS is where the clients connect, wherever that was given."""
        if self.kafka_config_file is not None and "broker_address" not in self.model_fields_set:
            bootstrap = read_properties(self.kafka_config_file).get("bootstrap.servers")
            self.broker_address = bootstrap or self.broker_address
        return self

    def client_properties(self) -> dict[str, Any]:
        """Every Kafka client's librdkafka settings: KAFKA_CONFIG_FILE's, then each BROKER_*
        setting given (a default only where the file does not say)."""
        properties = read_properties(self.kafka_config_file) if self.kafka_config_file else {}
        for field, name in BROKER_PROPERTIES.items():
            value = getattr(self, field)
            if value is None or (field not in self.model_fields_set and name in properties):
                continue
            properties[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
        properties["security.protocol"] = str(properties["security.protocol"]).lower()
        if "sasl.oauthbearer.token.endpoint.url" in properties:
            properties.setdefault("sasl.oauthbearer.method", "oidc")
        return properties

    def connection(self) -> ConnectionConfig:
        """Quix Streams' connection config; it keeps each secret a SecretStr."""
        return ConnectionConfig.from_librdkafka_dict(self.client_properties(), ignore_extras=True)

    def client_extras(self) -> dict[str, Any]:
        """KAFKA_CONFIG_FILE's settings that are not about the connection (client.id...),
        for Quix Streams' own clients, which take the connection apart."""
        properties = self.client_properties()
        connection = ConnectionConfig.from_librdkafka_dict(properties, ignore_extras=True)
        return {k: v for k, v in properties.items() if k not in connection.as_librdkafka_dict()}

    def librdkafka_config(self) -> dict[str, Any]:
        """The same settings as a plain confluent-kafka config dict."""
        return self.client_properties()


# librdkafka's name for each connection setting.
BROKER_PROPERTIES = {
    "broker_address": "bootstrap.servers",
    "broker_security_protocol": "security.protocol",
    "broker_sasl_mechanism": "sasl.mechanism",
    "broker_sasl_username": "sasl.username",
    "broker_sasl_password": "sasl.password",
    "broker_ssl_ca_location": "ssl.ca.location",
    "broker_ssl_certificate_location": "ssl.certificate.location",
    "broker_ssl_key_location": "ssl.key.location",
    "broker_ssl_key_password": "ssl.key.password",
    "broker_oauth_token_endpoint": "sasl.oauthbearer.token.endpoint.url",
    "broker_oauth_client_id": "sasl.oauthbearer.client.id",
    "broker_oauth_client_secret": "sasl.oauthbearer.client.secret",
    "broker_oauth_scope": "sasl.oauthbearer.scope",
}


# A key ends at the first '=', ':' or blank, as in Java's Properties.load.
PROPERTY = re.compile(r"^(?P<key>[^=:\s]+)\s*[=:\s]\s*(?P<value>.*)$")


def read_properties(path: Path) -> dict[str, str]:
    """A Java-style properties file, as Confluent's and Redpanda's consoles hand out:
    `key=value` (or `key: value`) lines; `#` and `!` start a comment."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(
            f"--kafka-config-file (KAFKA_CONFIG_FILE): cannot read {path}: {exc.strerror or exc}"
        ) from None
    properties = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        if (pair := PROPERTY.match(line)) is None:
            raise UsageError(
                f"--kafka-config-file (KAFKA_CONFIG_FILE): {path}, line {number}: "
                "expected key=value"
            )
        key = "sasl.mechanism" if pair["key"] == "sasl.mechanisms" else pair["key"]  # an alias
        properties[key] = pair["value"]
    return properties


class TopicSettings(BrokerSettings):
    """For the scripts that create a topic when it is missing, and check the ones they use."""

    partitions: PositiveInt = Field(3, description="partitions of a topic when a script creates it")
    replication_factor: PositiveInt | None = Field(
        None, description="replicas of each topic a script creates; default: 3, or fewer brokers"
    )
    min_insync_replicas: PositiveInt | None = Field(
        None,
        description="replicas that must have a write before it counts; default: 2 from 3 "
        "replicas up, else 1",
    )
    retention_hours: float = Field(
        168.0, ge=-1, description="how long a topic a script creates keeps messages; -1 = always"
    )
    dlq_retention_hours: float = Field(
        -1.0, ge=-1, description="the same for the dead-letter topics; -1 = always"
    )

    @model_validator(mode="after")
    def _min_insync_within_replicas(self) -> Self:
        factor, least = self.replication_factor, self.min_insync_replicas
        if factor is not None and least is not None and least > factor:
            raise ValueError(
                f"MIN_INSYNC_REPLICAS ({least}) cannot exceed REPLICATION_FACTOR ({factor})"
            )
        return self

    def replication(self, brokers: int) -> tuple[int, int]:
        """The replication factor and min.insync.replicas for a cluster of `brokers`: as
        set, or 3 replicas (fewer on fewer brokers) with 2 in sync from 3 replicas up."""
        factor = self.replication_factor or min(3, brokers)
        return factor, self.min_insync_replicas or (2 if factor >= 3 else 1)

    def retention_config(self, dead_letters: bool = False) -> dict[str, str]:
        """Explicit retention: some Kafka-compatible brokers report only the configs given
        at creation, and Quix Streams reads retention.ms to make changelog topics."""
        hours = self.dlq_retention_hours if dead_letters else self.retention_hours
        ms = -1 if hours < 0 else round(hours * 3600 * 1000)
        return {"retention.ms": str(ms), "retention.bytes": "-1"}


class RawTopicSettings(TopicSettings):
    """The raw topic, for the scripts that read or write it."""

    raw_topic: str = Field("raw-temperature", description="topic of raw readings")


class MetricsSettings(BrokerSettings):
    """Where a script serves its Prometheus metrics, if anywhere."""

    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="serve Prometheus metrics at /metrics on this port"
    )
    metrics_host: str = Field("127.0.0.1", description="address the metrics endpoint binds to")
    metrics_tls_certificate: Path | None = Field(
        None, description="certificate file (PEM): serve /metrics over HTTPS"
    )
    metrics_tls_key: Path | None = Field(None, description="that certificate's private key file")
    metrics_tls_client_ca: Path | None = Field(
        None, description="CA file: only a scraper with a certificate it signed may read /metrics"
    )

    @model_validator(mode="after")
    def _tls_needs_certificate_and_key(self) -> Self:
        tls = (self.metrics_tls_certificate, self.metrics_tls_key, self.metrics_tls_client_ca)
        if any(tls) and not (self.metrics_tls_certificate and self.metrics_tls_key):
            raise ValueError(
                "METRICS_TLS_CERTIFICATE and METRICS_TLS_KEY go together, and "
                "METRICS_TLS_CLIENT_CA needs them"
            )
        return self


class QuixAppSettings(TopicSettings, MetricsSettings):
    """What a Quix Streams Application needs: its group, state, guarantee and clients."""

    consumer_group: str = Field(description="scripts in one group share the partitions")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a new consumer group starts"
    )
    state_dir: Path = Field(Path("state"), description="local directory for window state")
    state_memory_mb: int = Field(
        64,
        ge=8,
        description="memory for window state: about this for one partition, half more per "
        "further partition",
    )
    processing_guarantee: Literal["at-least-once", "exactly-once"] = Field(
        "at-least-once", description="exactly-once uses Kafka transactions"
    )
    exactly_once: bool = Field(False, description="same as --processing-guarantee exactly-once")
    instance_id: str | None = Field(
        None,
        description="this instance's name in its group, for exactly-once's transactional.id; "
        "default: the host and the state folder",
    )
    commit_interval: float = Field(
        5.0,
        ge=0,
        description="seconds between commits (and transactions, with exactly-once); "
        "raise it for a processor with more sensors than readings per interval",
    )
    consumer_config: Json[dict[str, Any]] = Field(
        "{}", description="extra librdkafka settings for the input consumer, a JSON object"
    )
    producer_config: Json[dict[str, Any]] = Field(
        "{}", description="extra librdkafka settings for the output producer, a JSON object"
    )
    summary_interval: PositiveFloat = Field(60.0, description="seconds between counter summaries")
    broker_outage_timeout: float = Field(
        120.0,
        ge=0,
        description="seconds the broker may be away mid-run before the script stops; 0 = never",
    )
    log_level: LogLevel = Field("INFO", description="logging level")

    @model_validator(mode="after")
    def _exactly_once(self) -> Self:
        if self.exactly_once:
            self.processing_guarantee = "exactly-once"
        return self

    @property
    def group_state_dir(self) -> Path:
        """Where Quix Streams keeps this consumer group's state."""
        return self.state_dir / self.consumer_group


Settings = TypeVar("Settings", bound=BaseSettings)


def load_settings(cls: type[Settings], argv: list[str] | None = None) -> Settings:
    """Flags over environment over defaults; a bad value raises UsageError, one line."""
    try:
        return CliApp.run(cls, cli_args=sys.argv[1:] if argv is None else argv)
    except (ValidationError, SettingsError) as exc:
        if isinstance(exc, ValidationError):
            error = exc.errors()[0]
            name = str(error["loc"][0]) if error["loc"] else ""
            where = f"--{name.replace('_', '-')} ({name.upper()}): " if name else ""
            message = f"{where}{error['msg']}, got {error['input']!r}"
        else:
            message = str(exc)
        raise UsageError(message) from None
