"""Nothing lost: dead letters, watermarks, restarts, exactly-once, scale-out, broker trouble."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from helpers import (
    BASE_MS,
    GRACE_MS,
    SCRAM_USER,
    WINDOW_MS,
    Broker,
    Record,
    Script,
    Stream,
    approx_means,
    as_windows,
    consume,
    create_topic,
    encode_stream,
    iso,
    model_of_records,
    one_error_line,
    produce,
    read_to_end,
    reading,
    stream_messages,
    wait_until_caught_up,
    while_running,
    windows_allowing_identical_repeats,
)
from reference_model import expected_windows
from sensor_lib.embedded_broker import EmbeddedBroker
from sensor_lib.polling import Deadline, wait_until
from sensor_lib.servers import ServerProcess, find_free_port

pytestmark = pytest.mark.integration


# --- Dead letters -------------------------------------------------------------


def test_bad_and_late_messages_go_unchanged_to_the_dead_letter_topic(
    broker_address: str, names, start_processor
) -> None:
    rng = random.Random(2026)
    good: Stream = [("Sensor1", t, float(t % 13)) for t in range(0, 30_000, 250)]
    good += [("Sensor2", t, -float(t % 7)) for t in range(0, 30_000, 500)]
    bad: list[tuple[str | None, bytes, str]] = []
    for _ in range(150):
        bad.append(("Sensor1", rng.randbytes(rng.randint(0, 40)), "any"))
    malformed = [
        (b'{"ts": "2026-11-26T00:00:01Z"', "invalid-json"),
        (b'["ts", "value"]', "not-an-object"),
        (b'{"value": 1.5}', "missing-ts"),
        (b'{"ts": "26/11/2026 00:00", "value": 1.5}', "bad-ts"),
        (b'{"ts": 5, "value": 1.5}', "bad-ts"),
        (b'{"ts": "2026-11-26T00:00:01Z"}', "missing-value"),
        (b'{"ts": "2026-11-26T00:00:01Z", "value": "warm"}', "non-numeric-value"),
        (b'{"ts": "2026-11-26T00:00:01Z", "value": false}', "non-numeric-value"),
    ]
    for i in range(150):
        payload, reason = malformed[i % len(malformed)]
        bad.append(("Sensor2", payload, reason))
    bad.append((None, reading(iso(1_000, 0), 5.0), "no-key"))
    rng.shuffle(bad)

    messages: list[tuple[str | None, bytes]] = [m for m in encode_stream(good)]
    for key, payload, _ in bad:
        messages.insert(rng.randrange(len(messages)), (key, payload))
    late = ("Sensor1", reading(iso(5_000, 0), 99.0))  # after Sensor1's clock passed 29 s
    watermarks = encode_stream([("Sensor1", 60_000, None), ("Sensor2", 60_000, None)])
    messages += [late, *watermarks]

    create_topic(broker_address, names.raw, partitions=2)
    produce(broker_address, names.raw, messages)
    with start_processor(names, "--summary-interval", "1") as proc:
        proc.wait_for_output("The application started")
        wait_until_caught_up(
            broker_address, names.group, names.raw, len(messages), timeout=90, scripts=[proc]
        )
        windows = as_windows(read_to_end(broker_address, names.agg))
        dead = read_to_end(broker_address, names.dlq)
        proc.wait_for_output("Summary: processed=")
        assert proc.stop() == 0

    # Every good reading is in a window; every bad one is on the DLQ, byte for byte.
    model = expected_windows([(s, BASE_MS + t, v) for s, t, v in good], WINDOW_MS, GRACE_MS)
    ends: Stream = [("Sensor1", 60_000, None), ("Sensor2", 60_000, None)]
    model_with_end = expected_windows(
        [(s, BASE_MS + t, v) for s, t, v in [*good, *ends]], WINDOW_MS, GRACE_MS
    )
    assert sum(w["temperature"]["count"] for w in windows.values()) == len(good)
    assert windows == approx_means(model_with_end.windows)
    assert len(model.windows) < len(model_with_end.windows)  # the watermarks mattered
    expected_dead = Counter((k, p) for k, p, _ in bad) + Counter([late])
    assert Counter((r.key, r.value or b"") for r in dead) == expected_dead
    reasons = Counter(r.headers["error"].decode() for r in dead)
    for _, reason in malformed:
        assert reasons[reason] > 0, reason
    assert reasons["no-key"] == 1
    assert reasons["late"] == 1
    late_record = next(r for r in dead if r.headers["error"] == b"late")
    assert late_record.headers["window_start"] == str(BASE_MS).encode()
    assert late_record.headers["window_end"] == str(BASE_MS + WINDOW_MS).encode()
    assert b"ms late for window" in late_record.headers["error_detail"]
    assert "dead-lettered late=1" in proc.output()
    assert "dead-lettered no-key=1" in proc.output()


def test_bad_messages_last_on_their_partition_are_committed_once_dead_lettered(
    broker_address: str, names, start_processor
) -> None:
    # Nothing follows them on the one partition. A message skipped through Quix Streams'
    # on_consumer_error has no offset stored, so the group would stop short of the end
    # and a restart would dead-letter them again.
    good = encode_stream([("Sensor1", t, 20.0) for t in range(0, 3_000, 500)])
    bad = [
        (None, reading(iso(3_000, 0), 1.0)),
        ("Sensor1", b"not json"),
        ("Sensor1", b'{"ts": "soon", "value": 1.0}'),
        ("Sensor1", None),
    ]
    create_topic(broker_address, names.raw, partitions=1)
    produce(broker_address, names.raw, [*good, *bad])
    with start_processor(names) as proc:
        wait_until_caught_up(
            broker_address, names.group, names.raw, len(good) + len(bad), scripts=[proc]
        )
        assert proc.stop() == 0
    dead = read_to_end(broker_address, names.dlq)  # keyed and keyless: two partitions
    assert sorted([(r.key, r.value, r.headers["error"]) for r in dead], key=str) == [
        ("Sensor1", None, b"invalid-json"),  # a null value stays null
        ("Sensor1", b"not json", b"invalid-json"),
        ("Sensor1", b'{"ts": "soon", "value": 1.0}', b"bad-ts"),
        (None, reading(iso(3_000, 0), 1.0), b"no-key"),
    ]
    # Each log line says where the message was, so a user can find it on the raw topic.
    logged = re.findall(
        rf"Dead-lettered {re.escape(names.raw)}\[(\d+)\]@(\d+) key=(.*?): ([\w-]+): ", proc.output()
    )
    assert logged == [
        ("0", "6", "None", "no-key"),
        ("0", "7", "b'Sensor1'", "invalid-json"),
        ("0", "8", "b'Sensor1'", "bad-ts"),
        ("0", "9", "b'Sensor1'", "invalid-json"),
    ]


# --- Watermarks ----------------------------------------------------------------


def test_stopping_the_producer_closes_every_window_including_the_last(
    broker_address: str, names, start_producer, start_processor
) -> None:
    flags = ["--count", "400", "--sensors", "4", "--rate", "0", "--backfill-seconds", "45"]
    with start_producer(names, *flags, "--seed", "9") as producer:
        assert producer.wait() == 0, producer.output()
    raw = read_to_end(broker_address, names.raw)
    model = model_of_records(raw)
    assert model.open_windows == {}
    with start_processor(names) as proc:
        wait_until_caught_up(broker_address, names.group, names.raw, len(raw), scripts=[proc])
        windows = as_windows(read_to_end(broker_address, names.agg))
        assert proc.stop() == 0
    assert windows == approx_means(model.windows)
    assert sum(w["temperature"]["count"] for w in windows.values()) == 400
    assert "watermarks=4" in proc.output()


# --- Restarts ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("guarantee", "keep_state", "stop_signal"),
    [
        ("at-least-once", True, signal.SIGKILL),
        ("at-least-once", False, signal.SIGKILL),
        ("exactly-once", True, signal.SIGKILL),
        ("exactly-once", False, signal.SIGTERM),
    ],
    ids=["same-state-dir", "state-from-changelog", "exactly-once", "exactly-once-clean-stop"],
)
def test_restart_mid_stream_loses_no_window(
    broker: Broker,
    names,
    tmp_path: Path,
    start_processor,
    guarantee: str,
    keep_state: bool,
    stop_signal: int,
) -> None:
    if guarantee == "exactly-once" and stop_signal == signal.SIGKILL and broker.kind == "embedded":
        pytest.skip(
            "Tansu 0.6.0 neither aborts a killed producer's open transaction on restart nor "
            "hides it from read_committed readers; this case runs under `make test-kafka`"
        )
    broker_address = broker.address
    messages, model = stream_messages(sensors=10, seconds=120, per_second=5, seed=1)
    half = len(messages) // 2
    create_topic(broker_address, names.raw, partitions=3)
    produce(broker_address, names.raw, messages[:half])

    flags = ["--processing-guarantee", guarantee]
    if guarantee == "exactly-once":
        # A killed processor's open transaction holds back read_committed readers,
        # the restarted processor's changelog recovery included, until the broker
        # aborts it: after transaction.timeout.ms, 60 s by default.
        producer_config = json.loads(os.environ.get("PRODUCER_CONFIG", "{}"))
        producer_config["transaction.timeout.ms"] = 10_000
        flags += ["--producer-config", json.dumps(producer_config)]
    with start_processor(names, *flags, state_dir=tmp_path / "state-1") as first:
        # Let it commit a first part, then kill it while it works on the rest.
        wait_until_caught_up(
            broker_address, names.group, names.raw, half, timeout=90, scripts=[first]
        )
        emitted_before = count_aggregates(first)
        produce(broker_address, names.raw, messages[half:])
        more_windows = while_running(lambda: count_aggregates(first) > emitted_before, first)
        wait_until(more_windows, 60, interval=0.01, what="a window emitted after the first part")
        if stop_signal == signal.SIGKILL:
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(10)
        else:
            assert first.stop(stop_signal) == 0

    state = tmp_path / ("state-1" if keep_state else "state-2")
    with start_processor(names, *flags, state_dir=state) as second:
        wait_until_caught_up(
            broker_address, names.group, names.raw, len(messages), timeout=90, scripts=[second]
        )
        isolation = "read_committed" if guarantee == "exactly-once" else "read_uncommitted"
        if guarantee == "exactly-once":
            # A killed processor's open transaction hides everything after it from
            # read_committed readers until the broker aborts it (transaction.timeout.ms).
            def every_window() -> list[Record] | None:
                found = read_to_end(broker_address, names.agg, isolation=isolation)
                windows = {(r.key, r.json()["start"]) for r in found}
                return found if len(windows) >= len(model.windows) else None

            records = wait_until(
                while_running(every_window, second),
                60,
                interval=0.2,
                what=f"{len(model.windows)} windows committed on {names.agg}",
            )
        else:  # what was committed is readable at once
            records = read_to_end(broker_address, names.agg, isolation=isolation)
        assert second.stop() == 0
    assert f'processing_guarantee="{guarantee}"' in second.output()  # transactions were on
    assert "Traceback" not in first.output() + second.output()

    if guarantee == "exactly-once":
        windows = as_windows(records)  # fails on any window seen twice
    else:
        windows = windows_allowing_identical_repeats(records)
    assert windows == approx_means(model.windows)


# --- Scale-out -------------------------------------------------------------------


def test_two_processors_share_the_partitions_and_one_takes_over(
    broker_address: str, names, start_processor
) -> None:
    messages, model = stream_messages(sensors=12, seconds=90, per_second=4, seed=2)
    first_part = len(messages) // 2
    create_topic(broker_address, names.raw, partitions=4)

    with (
        start_processor(names, "--summary-interval", "0.5") as a,
        start_processor(names, "--summary-interval", "0.5") as b,
    ):
        probes = wait_until_both_consume(broker_address, names.raw, a, b)
        produce(broker_address, names.raw, messages[:first_part])
        total = probes + first_part
        wait_until_caught_up(broker_address, names.group, names.raw, total, scripts=[a, b])
        emitted = {"a": count_aggregates(a), "b": count_aggregates(b)}
        assert min(emitted.values()) > 0, emitted  # both did real work

        assert b.stop(signal.SIGTERM) == 0  # mid-stream: its windows are half full
        produce(broker_address, names.raw, messages[first_part:])
        total += len(messages) - first_part
        wait_until_caught_up(broker_address, names.group, names.raw, total, scripts=[a])
        windows = as_windows(read_to_end(broker_address, names.agg))  # each exactly once
        assert a.stop() == 0
    assert windows == approx_means(model.windows)


def wait_until_both_consume(address: str, topic: str, *scripts: Script) -> int:
    """Send watermark probes to every partition until each processor has consumed some.

    Probes use their own keys, so they open no window a test expects. Returns how
    many were sent. Once both processors consume, the group has settled on both.
    """
    sent = 0
    deadline = Deadline(60)
    while not all(processed(script) > 0 for script in scripts):
        assert not deadline.passed(), "the processors never shared the partitions"
        for script in scripts:
            script.assert_running()
        probes = encode_stream([(f"probe-{sent + n}", 0, None) for n in range(8)])
        produce(address, topic, probes)
        sent += len(probes)
        time.sleep(0.5)  # one summary interval: the pace of the probes, not a guess at a wait
    return sent


def processed(script: Script) -> int:
    counts = re.findall(r"Summary: processed=(\d+)", script.output())
    return int(counts[-1]) if counts else 0


def count_aggregates(script: Script) -> int:
    return script.output().count("INFO sensor_stream_processor: Sensor")


# --- Broker trouble -------------------------------------------------------------


# A producer that runs until stopped, 50 readings a second.
ENDLESS = ["--count", "0", "--rate", "50", "--sensors", "2", "--quiet"]


def readings_on(
    address: str, topic: str, at_least: int, since_ms: float = 0, timeout: float = 60
) -> list[Record]:
    """Read until `at_least` readings stamped `since_ms` or later are on `topic`."""

    def enough(got: list[Record]) -> bool:
        return sum(r.is_reading and r.timestamp_ms >= since_ms for r in got) >= at_least

    records = consume(address, topic, until=enough, timeout=timeout)
    return [r for r in records if r.is_reading]


@pytest.mark.timeout(300)  # a broker stopped and started, then up to 120 s of reading
def test_producer_delivers_what_it_accepted_while_the_broker_was_away(
    broker: Broker, names, start_broker: Callable[..., ServerProcess], start_producer
) -> None:
    if broker.kind == "embedded":
        pytest.skip(
            "the embedded broker comes back empty, and a retried reading that reaches it "
            "before the topic is made again fails for good (Tansu answers UNKNOWN, which "
            "librdkafka does not retry); this test runs under `make test-kafka`"
        )
    port = find_free_port()
    address = f"127.0.0.1:{port}"
    away = start_broker(port).start()
    try:
        with start_producer(
            names, *ENDLESS, "--delivery-timeout", "60", address=address
        ) as producer:
            readings_on(address, names.raw, 20)
            away.stop(keep_data=True)
            outage_started = time.time() * 1000
            time.sleep(2)  # the outage itself; nothing waits on it
            away.start()  # with its data and topics
            outage_ended = time.time() * 1000
            # Readings made after the outage are queued behind those held during it, which
            # the producer may hold for its whole delivery timeout (60 s) before they go.
            records = readings_on(address, names.raw, 100, since_ms=outage_ended, timeout=120)
            assert producer.stop() == 0, producer.output()
    finally:
        away.stop()
    during = [r for r in records if outage_started <= r.timestamp_ms < outage_ended]
    assert len(during) >= 50  # 2 s at 50 readings/s, held and retried
    assert "(0 failed)" in producer.output()
    assert "Traceback" not in producer.output()
    assert producer.output().count(f"Lost the broker at {address}") == 1  # not one per retry


def test_producer_reports_what_it_could_not_deliver(names, start_producer) -> None:
    # The client gives up, whatever the broker was: a throwaway embedded one will do.
    port = find_free_port()
    address = f"127.0.0.1:{port}"
    with (
        EmbeddedBroker(port) as broker,
        start_producer(names, *ENDLESS, "--delivery-timeout", "2", address=address) as producer,
    ):
        readings_on(address, names.raw, 10)
        broker.stop()
        producer.wait_for_output("Delivery failed", timeout=30)
        assert producer.stop() == 1
    summary = re.search(r"Delivered (\d+) of (\d+) readings .* \((\d+) failed\)", producer.output())
    assert summary is not None, producer.output()
    delivered, produced, failed = map(int, summary.groups())
    assert failed > 0
    assert delivered + failed == produced
    assert "Traceback" not in producer.output()


# --- Secured clusters -------------------------------------------------------------

SECRET = SCRAM_USER[1]


def sasl_env(mechanism: str, password: str) -> dict[str, str]:
    return {
        "BROKER_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "BROKER_SASL_MECHANISM": mechanism,
        "BROKER_SASL_USERNAME": SCRAM_USER[0],
        "BROKER_SASL_PASSWORD": password,
    }


@pytest.mark.parametrize("script", ["sensor_stream_producer.py", "sensor_stream_processor.py"])
def test_a_broker_that_requires_login_refuses_wrong_credentials(
    script: str, broker: Broker, names, start_producer, start_processor
) -> None:
    # The embedded broker can require SCRAM logins but cannot store a user, so it
    # refuses every credential; Kafka has the user and refuses only a wrong password.
    with ExitStack() as stack:
        if broker.sasl_address:
            address = broker.sasl_address
        else:
            address = stack.enter_context(EmbeddedBroker(extra_args=["--authentication"])).address
        start = start_producer if script == "sensor_stream_producer.py" else start_processor
        wrong = sasl_env("SCRAM-SHA-256", "wrong-" + SECRET)
        refused = stack.enter_context(
            start(names, "--broker-timeout", "3", address=address, env=wrong)
        )
        assert refused.wait(timeout=30) == 1
    error = one_error_line(refused.output())
    assert address in error
    # The credentials were offered and refused; a client that ignored them would
    # be dropped without this reason.
    assert "SASL authentication error" in error
    assert SECRET not in refused.output()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_the_right_scram_credentials_carry_readings_to_aggregates(
    mechanism: str, broker: Broker, names, start_producer, start_processor
) -> None:
    if broker.sasl_address is None:
        pytest.skip(
            f"the {broker.kind} broker here has no SCRAM user (Tansu cannot store one); "
            "this test runs under `make test-kafka`"
        )
    secured = {"address": broker.sasl_address, "env": sasl_env(mechanism, SECRET)}
    flags = ["--count", "60", "--sensors", "3", "--rate", "0", "--backfill-seconds", "30"]
    with start_producer(names, *flags, "--seed", "4", **secured) as producer:
        assert producer.wait() == 0, producer.output()
    raw = read_to_end(broker.address, names.raw)  # read back over the plain listener
    model = model_of_records(raw)
    with start_processor(names, **secured) as proc:
        wait_until_caught_up(broker.address, names.group, names.raw, len(raw), scripts=[proc])
        windows = as_windows(read_to_end(broker.address, names.agg))
        assert proc.stop() == 0
    assert f"'sasl.mechanism': '{mechanism}'" in proc.output()  # Quix's own start-up line
    assert windows == approx_means(model.windows)
    assert sum(w["temperature"]["count"] for w in windows.values()) == 60
    assert SECRET not in proc.output()


def test_the_password_never_reaches_the_log(broker_address: str, names, start_processor) -> None:
    create_topic(broker_address, names.raw)
    produce(
        broker_address, names.raw, encode_stream([("Sensor1", 0, 1.0), ("Sensor1", 20_000, None)])
    )
    env = {"BROKER_SASL_PASSWORD": SECRET, "BROKER_SASL_USERNAME": "sensor-app"}
    with start_processor(names, "--log-level", "DEBUG", env=env) as proc:
        wait_until_caught_up(broker_address, names.group, names.raw, 2, scripts=[proc])
        assert proc.stop() == 0
    assert "Sensor1 [" in proc.output()
    assert SECRET not in proc.output()
