"""Produce synthetic temperature readings to the raw topic.

Each sensor does a bounded random walk around its own base temperature. A reading
is {"ts": "<ISO-8601 UTC>", "value": <degrees C>}, keyed by sensor id, with the Kafka
timestamp set to `ts`. On a stop it sends each sensor a watermark, {"ts": ...,
"watermark": true}: no older reading will follow, so the processor closes every window.

    python sensor_stream_producer.py --count 1000 --sensors 5 --rate 4
"""

from __future__ import annotations

import logging
import random
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from confluent_kafka import Producer
from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt

from sensor_lib import metrics
from sensor_lib.broker import start_up
from sensor_lib.errors import exit_status
from sensor_lib.event_time import to_epoch_ms
from sensor_lib.logs import client_logging
from sensor_lib.producing import DeliveryReport, produce
from sensor_lib.progress import ProgressLine
from sensor_lib.settings import MetricsSettings, RawTopicSettings, load_settings
from sensor_lib.stop_signals import StopSignals

logger = logging.getLogger("sensor_stream_producer")


class ProducerSettings(RawTopicSettings, MetricsSettings):
    """Produce synthetic temperature readings to the raw topic."""

    count: NonNegativeInt = Field(1000, description="readings to send, history too; 0 = no end")
    sensors: PositiveInt = Field(5, description="number of sensors, Sensor1..SensorN")
    rate: NonNegativeFloat = Field(4.0, description="readings/s over all sensors; 0 = full speed")
    seed: int | None = Field(None, description="random seed for a repeatable stream")
    backfill_seconds: NonNegativeFloat = Field(0.0, description="seconds of history to send first")
    idle_watermark_seconds: NonNegativeFloat = Field(
        5.0, description="after this long without a reading, a watermark per sensor; 0 = never"
    )
    final_watermark_seconds: NonNegativeFloat = Field(
        11.0, description="on a stop, a watermark this far past the last reading (window + grace)"
    )
    delivery_timeout: NonNegativeFloat = Field(
        120.0, description="seconds to retry a message while the broker is unreachable"
    )
    linger_ms: NonNegativeInt = Field(5, description="ms a reading may wait to share a request")
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
        self.current = self.base + max(-MAX_DRIFT, min(MAX_DRIFT, drift))
        return round(self.current, 2)


def make_sensors(count: int, rng: random.Random) -> list[SensorWalk]:
    bases = [round(rng.uniform(18.0, 26.0), 1) for _ in range(count)]
    return [SensorWalk(f"Sensor{n}", base, base) for n, base in enumerate(bases, start=1)]


def generate_readings(sensor_count: int, rng: random.Random) -> Iterator[tuple[str, float]]:
    """Yield (sensor id, temperature) forever, visiting the sensors in turn."""
    sensors = make_sensors(sensor_count, rng)
    while True:
        for sensor in sensors:
            yield sensor.sensor_id, sensor.step(rng)


def make_reading(moment: datetime, value: float) -> bytes:
    return orjson.dumps({"ts": moment.isoformat(), "value": value})  # compact, and fast


def make_watermark(moment: datetime) -> bytes:
    """'No reading older than `moment` will follow': lets the processor close windows."""
    return orjson.dumps({"ts": moment.isoformat(), "watermark": True})


class SensorProducer:
    """Sends readings and watermarks, each with a delivery report and a uuid header."""

    def __init__(self, producer: Producer, topic: str, sensors: int) -> None:
        self.producer, self.topic = producer, topic
        self.sensor_ids = [f"Sensor{n}" for n in range(1, sensors + 1)]
        self.readings = DeliveryReport(logger)
        self.watermarks = DeliveryReport(logger)
        self.produced = 0
        self.last_event_time: datetime | None = None
        self.last_sent_at = time.monotonic()

    def send(self, key: str, payload: bytes, moment: datetime, report: object) -> None:
        produce(
            self.producer,
            self.topic,
            key=key.encode(),
            value=payload,
            headers={"uuid": str(uuid.uuid4())},
            timestamp=to_epoch_ms(moment),
            on_delivery=report,
        )
        self.last_sent_at = time.monotonic()

    def send_reading(self, sensor_id: str, moment: datetime, value: float) -> None:
        self.send(sensor_id, make_reading(moment, value), moment, self.readings)
        self.produced += 1
        self.last_event_time = moment

    def send_watermarks(self, moment: datetime) -> None:
        """Tell the processor each sensor's event time has reached `moment`."""
        for sensor_id in self.sensor_ids:
            self.send(sensor_id, make_watermark(moment), moment, self.watermarks)

    def send_final_watermarks(self, lead_seconds: float) -> None:
        if self.last_event_time is not None:
            moment = max(self.last_event_time, datetime.now(UTC)) + timedelta(seconds=lead_seconds)
            self.send_watermarks(moment)
            logger.info(
                "Sent watermarks at %s for %d sensors", moment.isoformat(), len(self.sensor_ids)
            )


def backfill_times(seconds: float, rate: float, sensors: int, now: datetime) -> Iterator[datetime]:
    """Event times for --backfill: from now - backfill up to now, spaced as at --rate
    (at --rate 0, one reading per sensor per second)."""
    spacing = timedelta(seconds=1 / rate if rate else 1 / sensors)
    moment = now - timedelta(seconds=seconds)
    while moment < now:
        yield moment
        moment += spacing


def wait_for_turn(due: float, sensors: SensorProducer, idle: float, stop: StopSignals) -> bool:
    """Until `due` (monotonic), serve delivery reports and send watermarks each `idle` s."""
    while (now := time.monotonic()) < due and not stop.requested.is_set():
        if idle and now >= sensors.last_sent_at + idle:
            sensors.send_watermarks(datetime.now(UTC))
        sensors.producer.poll(min(0.1, due - now))
    return not stop.requested.is_set()


def run(
    sensors: SensorProducer,
    readings: Iterator[tuple[str, float]],
    settings: ProducerSettings,
    stop: StopSignals,
    progress: ProgressLine,
) -> None:
    """Produce the history, then live readings, until --count is reached or a stop."""

    def more_wanted() -> bool:
        return not stop.requested.is_set() and sensors.produced < (settings.count or sys.maxsize)

    now = datetime.now(UTC)
    for moment in backfill_times(settings.backfill_seconds, settings.rate, settings.sensors, now):
        if not more_wanted():
            return
        sensor_id, value = next(readings)
        sensors.send_reading(sensor_id, moment, value)
        progress.show(sensors.produced, sensors.readings)
    interval = 1.0 / settings.rate if settings.rate else 0.0
    started, live = time.monotonic(), 0
    while more_wanted():
        # Pace against the start time, not the last send, so the rate holds.
        due = started + live * interval
        if interval and not wait_for_turn(due, sensors, settings.idle_watermark_seconds, stop):
            return
        sensor_id, value = next(readings)
        sensors.send_reading(sensor_id, datetime.now(UTC), value)
        live += 1
        progress.show(sensors.produced, sensors.readings)


def main(argv: list[str] | None = None) -> int:
    settings = load_settings(ProducerSettings, argv)
    topic = settings.raw_topic
    stop = start_up(settings, logger, "producing anything", topics=[topic])
    producer = Producer(
        {
            **settings.librdkafka_config(),
            **client_logging(),
            "linger.ms": settings.linger_ms,
            "message.timeout.ms": int(settings.delivery_timeout * 1000),
            # Keeps each sensor's readings in order through retries: a batch retried after
            # the next one was written would put its readings behind their window's close.
            "enable.idempotence": True,
        }
    )
    sensors = SensorProducer(producer, topic, settings.sensors)
    readings = generate_readings(settings.sensors, random.Random(settings.seed))
    rate = f"{settings.rate:g}/s" if settings.rate else "full speed"
    count, history = settings.count or "unlimited", settings.backfill_seconds
    message = "Producing %s readings from %d sensors to %s at %s, after %g s of history"
    logger.info(message, count, settings.sensors, topic, rate, history)
    try:
        with ProgressLine(settings.count, settings.quiet) as progress:
            metrics.serve(settings, logger, metrics.producer_metrics(sensors, progress))
            run(sensors, readings, settings, stop, progress)
            progress.show(sensors.produced, sensors.readings, now=True)
        # Normal end, Ctrl-C and SIGTERM alike: no more readings will come from us.
        sensors.send_final_watermarks(settings.final_watermark_seconds)
    finally:
        # Every message gets its callback by now: delivered, or failed after retries.
        producer.flush(settings.delivery_timeout + 5)
    delivered, produced = sensors.readings.delivered, sensors.produced
    failed, watermarks = produced - delivered, sensors.watermarks.delivered
    print(
        f"Delivered {delivered} of {produced} readings to {topic} ({failed} failed); "
        f"{watermarks} watermarks",
        file=sys.stderr,
    )
    return 1 if produced - delivered or sensors.watermarks.failed else 0


if __name__ == "__main__":
    sys.exit(exit_status(main, logger))
