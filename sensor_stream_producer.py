"""Produce synthetic temperature readings to the raw topic.

Each sensor does a bounded random walk around its own base temperature. A
reading is the JSON object {"ts": "<ISO-8601 UTC>", "value": <degrees C>},
keyed by sensor id, with the Kafka timestamp set to the reading's time.

    python sensor_stream_producer.py --count 1000 --sensors 5 --rate 4
"""

from __future__ import annotations

import logging
import random
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from confluent_kafka import KafkaError, Message, Producer
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.text import Text

import kafka_io
import launcher
from event_time import to_epoch_ms
from sensor_settings import RawTopicSettings, configure_logging, load_settings

logger = logging.getLogger("sensor_stream_producer")


class ProducerSettings(RawTopicSettings):
    """Produce synthetic temperature readings to the raw topic."""

    count: NonNegativeInt = Field(
        1000, description="readings to produce, history included; 0 = until stopped"
    )
    sensors: PositiveInt = Field(5, description="number of sensors, Sensor1..SensorN")
    rate: NonNegativeFloat = Field(
        4.0, description="readings per second over all sensors; 0 = as fast as the broker takes"
    )
    seed: int | None = Field(None, description="random seed for a repeatable stream")
    backfill_seconds: NonNegativeFloat = Field(
        0.0, description="first produce this many seconds of history, as fast as possible"
    )
    idle_watermark_seconds: NonNegativeFloat = Field(
        5.0, description="after this long without a reading, a watermark per sensor; 0 = never"
    )
    final_watermark_seconds: NonNegativeFloat = Field(
        11.0,
        description="on a clean stop, declare event time reached the last reading plus this "
        "much, so the processor closes every open window (window 10 s + grace 1 s)",
    )
    delivery_timeout: NonNegativeFloat = Field(
        120.0, description="seconds to keep retrying a message while the broker is unreachable"
    )
    linger_ms: NonNegativeInt = Field(
        5,
        description="ms a reading may wait to share a request with others (librdkafka linger.ms)",
    )
    quiet: bool = Field(False, description="no progress display")


# A sensor drifts by a small step each reading, is pulled back towards its base,
# and never leaves base +/- MAX_DRIFT: it looks like a room, not like noise.
STEP_STDDEV = 0.15
PULL_TO_BASE = 0.05
MAX_DRIFT = 5.0


@dataclass
class SensorWalk:
    sensor_id: str
    base: float
    current: float

    def step(self, rng: random.Random) -> float:
        drift = self.current - self.base
        drift += rng.gauss(0.0, STEP_STDDEV) - PULL_TO_BASE * drift
        drift = max(-MAX_DRIFT, min(MAX_DRIFT, drift))
        self.current = self.base + drift
        return round(self.current, 2)


def make_sensors(count: int, rng: random.Random) -> list[SensorWalk]:
    sensors = []
    for n in range(1, count + 1):
        base = round(rng.uniform(18.0, 26.0), 1)
        sensors.append(SensorWalk(f"Sensor{n}", base, base))
    return sensors


def generate_readings(sensor_count: int, rng: random.Random) -> Iterator[tuple[str, float]]:
    """Yield (sensor id, temperature) forever, visiting the sensors in turn."""
    sensors = make_sensors(sensor_count, rng)
    while True:
        for sensor in sensors:
            yield sensor.sensor_id, sensor.step(rng)


def make_reading(moment: datetime, value: float) -> dict[str, object]:
    return {"ts": moment.isoformat(), "value": value}


def make_watermark(moment: datetime) -> dict[str, object]:
    """ "No reading older than `moment` will follow": lets the processor close windows."""
    return {"ts": moment.isoformat(), "watermark": True}


def encode_reading(reading: dict[str, object]) -> bytes:
    return orjson.dumps(reading)  # compact JSON, many times faster than json.dumps


class DeliveryReport:
    """Counts what the broker confirmed; passed to every produce() call."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.errors_logged: set[str] = set()

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
            return
        self.failed += 1
        # A broker outage fails every queued message alike: log each kind once;
        # the final summary gives the count.
        if err.str() not in self.errors_logged:
            self.errors_logged.add(err.str())
            logger.error("Delivery failed for key %s: %s", msg.key(), err)


class SensorProducer:
    """Produces readings and watermarks; every message gets a delivery callback."""

    def __init__(self, producer: Producer, topic: str, sensor_ids: list[str]) -> None:
        self.producer = producer
        self.topic = topic
        self.sensor_ids = sensor_ids
        self.readings = DeliveryReport()
        self.watermarks = DeliveryReport()
        self.produced = 0
        self.last_event_time: datetime | None = None
        self.last_sent_at = time.monotonic()

    def _produce(self, key: str, payload: bytes, moment: datetime, report: DeliveryReport) -> None:
        while True:
            try:
                self.producer.produce(
                    self.topic,
                    key=key.encode(),
                    value=payload,
                    headers={"uuid": str(uuid.uuid4())},
                    timestamp=to_epoch_ms(moment),
                    on_delivery=report,
                )
                self.producer.poll(0)
                self.last_sent_at = time.monotonic()
                return
            except BufferError:
                # The local queue is full: serve delivery callbacks to make room.
                self.producer.poll(0.1)

    def send_reading(self, sensor_id: str, moment: datetime, value: float) -> None:
        self._produce(sensor_id, encode_reading(make_reading(moment, value)), moment, self.readings)
        self.produced += 1
        self.last_event_time = moment

    def send_watermarks(self, moment: datetime) -> None:
        """Tell the processor each sensor's event time has reached `moment`."""
        payload = encode_reading(make_watermark(moment))
        for sensor_id in self.sensor_ids:
            self._produce(sensor_id, payload, moment, self.watermarks)

    def flush(self, timeout: float) -> None:
        self.producer.flush(timeout)


def history_schedule(
    backfill: float, rate: float, sensors: int, now: datetime
) -> Iterator[datetime]:
    """Event times for --backfill: from now - backfill up to now, spaced as at --rate.

    At --rate 0 the history has one reading per sensor per second.
    """
    spacing = timedelta(seconds=1 / rate if rate else 1 / sensors)
    moment = now - timedelta(seconds=backfill)
    while moment < now:
        yield moment
        moment += spacing


def wait_for_turn(due: float, sensors: SensorProducer, idle: float, stop: threading.Event) -> bool:
    """Sleep until `due` (monotonic); send watermarks each `idle` s meanwhile. False if stopped."""
    while (now := time.monotonic()) < due:
        watermark_due = sensors.last_sent_at + idle
        if idle and watermark_due < due:
            if stop.wait(max(0.0, watermark_due - now)):
                return False
            sensors.send_watermarks(datetime.now(UTC))
        elif stop.wait(due - now):
            return False
    return True


def run(
    sensors: SensorProducer,
    readings: Iterator[tuple[str, float]],
    settings: ProducerSettings,
    stop: threading.Event,
    on_progress: Callable[[], None],
) -> None:
    """Produce the history, then live readings, until --count is reached or a stop."""

    def more_wanted() -> bool:
        return not stop.is_set() and (settings.count == 0 or sensors.produced < settings.count)

    shown_at = 0.0

    def tick() -> None:
        nonlocal shown_at
        if (now := time.monotonic()) - shown_at > 0.1:
            on_progress()
            shown_at = now

    if settings.backfill_seconds:
        now = datetime.now(UTC)
        for moment in history_schedule(
            settings.backfill_seconds, settings.rate, settings.sensors, now
        ):
            if not more_wanted():
                return
            sensor_id, value = next(readings)
            sensors.send_reading(sensor_id, moment, value)
            tick()

    interval = 1.0 / settings.rate if settings.rate else 0.0
    started = time.monotonic()
    live = 0
    while more_wanted():
        # Pace against the start time, not the last send, so the rate holds.
        if interval and not wait_for_turn(
            started + live * interval, sensors, settings.idle_watermark_seconds, stop
        ):
            return
        sensor_id, value = next(readings)
        sensors.send_reading(sensor_id, datetime.now(UTC), value)
        live += 1
        tick()


def send_final_watermark(sensors: SensorProducer, lead_seconds: float) -> None:
    if sensors.last_event_time is None:
        return
    moment = max(sensors.last_event_time, datetime.now(UTC)) + timedelta(seconds=lead_seconds)
    sensors.send_watermarks(moment)
    logger.info("Sent watermarks at %s for %d sensors", moment.isoformat(), len(sensors.sensor_ids))


def show(progress: Progress, task: TaskID, sensors: SensorProducer) -> None:
    report = sensors.readings
    progress.update(
        task,
        completed=sensors.produced,
        deliveries=f"delivered {report.delivered:,} failed {report.failed:,}",
    )


class RecentRateColumn(ProgressColumn):
    """Readings per second over the last 5 s (make_progress), so a burst of history or
    a stall shows at once; an average since the start would hide both for minutes."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f}/s" if task.speed is not None else "-/s")


def make_progress(total: int, quiet: bool) -> Progress:
    """A bar when --count is set, a running counter otherwise; stderr, and only on a terminal."""
    console = Console(stderr=True)
    columns: list[str | ProgressColumn] = [TextColumn("[bold]readings")]
    if total:
        columns += [BarColumn(), MofNCompleteColumn()]
    else:
        columns += [TextColumn("{task.completed}")]
    columns += [RecentRateColumn(), TextColumn("{task.fields[deliveries]}")]
    disable = quiet or not console.is_terminal
    return Progress(*columns, console=console, disable=disable, speed_estimate_period=5.0)


def main(argv: list[str] | None = None) -> int:
    settings = load_settings(ProducerSettings, argv)
    configure_logging("INFO", kafka_io.BrokerOutageLog(settings.broker_address))
    try:
        with launcher.interrupted_by_stop_signals():  # stop at once while we wait for the broker
            kafka_io.wait_for_broker(settings, settings.broker_timeout)
            kafka_io.ensure_topic(
                settings, settings.raw_topic, settings.partitions, settings.broker_timeout
            )
    except KeyboardInterrupt:
        logger.info("Stopped before producing anything")
        return 0
    except (kafka_io.BrokerUnavailable, kafka_io.TopicError) as exc:
        logger.error("%s", exc)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: launcher.set_from_handler(stop))

    producer = Producer({
        **settings.librdkafka_config(),
        **kafka_io.client_logging(),
        "linger.ms": settings.linger_ms,
        "message.timeout.ms": int(settings.delivery_timeout * 1000),
        # Keeps each sensor's readings in order through retries: a batch retried after
        # the next one was written would put its readings behind their window's close.
        "enable.idempotence": True,
    })  # fmt: skip
    sensor_ids = [f"Sensor{n}" for n in range(1, settings.sensors + 1)]
    sensors = SensorProducer(producer, settings.raw_topic, sensor_ids)
    readings = generate_readings(settings.sensors, random.Random(settings.seed))
    logger.info(
        "Producing %s readings from %d sensors to %s at %s%s",
        settings.count or "unlimited", settings.sensors, settings.raw_topic,
        f"{settings.rate:g}/s" if settings.rate else "full speed",
        f", after {settings.backfill_seconds:g} s of history" if settings.backfill_seconds else "",
    )  # fmt: skip
    try:
        with make_progress(settings.count, settings.quiet) as progress:
            task = progress.add_task("readings", total=settings.count or None, deliveries="")
            run(sensors, readings, settings, stop, lambda: show(progress, task, sensors))
            show(progress, task, sensors)
        # Normal end, Ctrl-C and SIGTERM alike: no more readings will come from us.
        send_final_watermark(sensors, settings.final_watermark_seconds)
    finally:
        # Every message gets its callback by now: delivered, or failed after retries.
        sensors.flush(settings.delivery_timeout + 5)
    delivered = sensors.readings.delivered
    failed = sensors.produced - delivered
    print(
        f"Delivered {delivered} of {sensors.produced} readings to {settings.raw_topic}"
        f" ({failed} failed); {sensors.watermarks.delivered} watermarks",
        file=sys.stderr,
    )
    return 1 if failed or sensors.watermarks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
