"""Settings: environment variables with defaults, and flags that win over them."""

from __future__ import annotations

import pytest

from helpers import run_script
from sensor_lib.errors import UsageError
from sensor_lib.settings import load_settings
from sensor_stream_processor import ProcessorSettings
from sensor_stream_producer import ProducerSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BROKER_ADDRESS", "RAW_TOPIC", "AGG_TOPIC", "CONSUMER_GROUP", "WINDOW_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    args = load_settings(ProcessorSettings, [])
    assert (args.broker_address, args.raw_topic, args.agg_topic) == (
        "localhost:19092",
        "raw-temperature",
        "agg-temperature",
    )
    assert (args.consumer_group, args.window_seconds, args.grace_seconds) == (
        "quix-stream-processor",
        10,
        1,
    )
    assert (args.auto_offset_reset, str(args.state_dir)) == ("earliest", "state")


def test_environment_overrides_default_and_flag_overrides_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAW_TOPIC", "from-env")
    monkeypatch.setenv("COUNT", "25")
    assert load_settings(ProducerSettings, []).raw_topic == "from-env"
    assert load_settings(ProducerSettings, []).count == 25
    args = load_settings(ProducerSettings, ["--raw-topic", "from-flag", "--count", "7"])
    assert (args.raw_topic, args.count) == ("from-flag", 7)


@pytest.mark.parametrize("argv", [["--count", "-1"], ["--sensors", "0"], ["--rate", "fast"]])
def test_a_bad_value_is_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(UsageError, match=f"^{argv[0]} "):
        load_settings(ProducerSettings, argv)


@pytest.mark.parametrize("argv", [["--no-such-flag"], ["--count"]])
def test_an_unknown_or_incomplete_flag_is_argparses_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        load_settings(ProducerSettings, argv)
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("usage: ")


def test_bad_environment_value_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINDOW_SECONDS", "ten")
    with pytest.raises(UsageError, match=r"^--window-seconds \(WINDOW_SECONDS\): "):
        load_settings(ProcessorSettings, [])


def test_security_settings_reach_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_SECURITY_PROTOCOL", "sasl_ssl")
    monkeypatch.setenv("BROKER_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("BROKER_SASL_USERNAME", "alice")
    monkeypatch.setenv("BROKER_SASL_PASSWORD", "s3cret-Pa55")
    monkeypatch.setenv("BROKER_SSL_CA_LOCATION", "/etc/ssl/ca.pem")
    broker = load_settings(ProcessorSettings, [])
    assert broker.librdkafka_config() == {
        "bootstrap.servers": "localhost:19092",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "alice",
        "sasl.password": "s3cret-Pa55",
        "ssl.ca.location": "/etc/ssl/ca.pem",
    }
    assert "s3cret-Pa55" not in repr(broker)
    assert "s3cret-Pa55" not in repr(broker.connection())


@pytest.mark.integration
@pytest.mark.parametrize("script", ["sensor_stream_producer.py", "sensor_stream_processor.py"])
def test_help_documents_settings_and_never_shows_the_password(
    script: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROKER_SASL_PASSWORD", "hunter2-never-print")
    result = run_script(script, "--help")
    assert result.returncode == 0
    for name in ("BROKER_ADDRESS", "RAW_TOPIC", "BROKER_SASL_PASSWORD", "--broker-sasl-password"):
        assert name in result.stdout
    assert "hunter2-never-print" not in result.stdout + result.stderr


@pytest.mark.integration
def test_unknown_flag_prints_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_script("sensor_stream_processor.py", "--windw-seconds", "5")
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert "unrecognized arguments: --windw-seconds" in result.stderr


def test_a_broker_setting_given_wins_over_kafka_config_file_which_wins_over_a_default(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    properties = tmp_path / "client.properties"
    properties.write_text(
        "# from a console\nbootstrap.servers=cloud:9092\nsecurity.protocol=SASL_SSL\n"
        "sasl.mechanisms=PLAIN\nsasl.username=key\nsasl.password=from-file\nclient.id: mine\n"
        "session.timeout.ms=45000\n"
    )
    monkeypatch.setenv("KAFKA_CONFIG_FILE", str(properties))
    monkeypatch.setenv("BROKER_SASL_USERNAME", "given")
    settings = load_settings(ProcessorSettings, [])
    assert settings.broker_address == "cloud:9092"  # BROKER_ADDRESS's default yields
    assert settings.librdkafka_config() == {
        "bootstrap.servers": "cloud:9092",
        "security.protocol": "sasl_ssl",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "given",
        "sasl.password": "from-file",
        "client.id": "mine",
        "session.timeout.ms": "45000",
    }
    assert settings.client_extras() == {"session.timeout.ms": "45000"}  # not a connection one
    assert "from-file" not in repr(settings.connection())


def test_a_malformed_kafka_config_file_is_a_usage_error_naming_the_line(tmp_path) -> None:
    properties = tmp_path / "client.properties"
    properties.write_text("bootstrap.servers=x:1\n=no key\n")
    with pytest.raises(UsageError, match="line 2: expected key=value"):
        load_settings(ProcessorSettings, ["--kafka-config-file", str(properties)])
