"""Store every window in PostgreSQL: one row per sensor and window.

Reads the processor's aggregates from the aggregate topic and writes each one to
the table sensor_windows with Quix Streams' PostgreSQLSink:

    sensor_id | window_start | window_end | count | min | max | mean

The primary key is (sensor_id, window_start), and a write is an upsert on it, so a
window emitted twice (at-least-once), a restart or a replay of the topic leaves
one row per window. Rows are written before their offsets are committed, and a
lost database is waited for: nothing is lost. A message that is not an aggregate
goes unchanged to the dead-letter topic with an `error` header saying why.

    python sensor_stream_sink.py
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pydantic import Field, SecretStr, model_validator
from quixstreams import Application
from quixstreams.dataframe import StreamingDataFrame

from sensor_lib import metrics
from sensor_lib.aggregates import InvalidAggregate, parse_aggregate
from sensor_lib.application import quix_defaults
from sensor_lib.dead_letters import DeadLetterSink
from sensor_lib.errors import exit_status
from sensor_lib.event_time import from_epoch_ms
from sensor_lib.metrics import ConsumerLag
from sensor_lib.postgres_sink import WindowsSink, prepare_table, redact
from sensor_lib.quix_script import running
from sensor_lib.rejoin import rejoining
from sensor_lib.settings import QuixAppSettings, load_settings
from sensor_lib.summary import summary_line

logger = logging.getLogger("sensor_stream_sink")


class SinkSettings(QuixAppSettings):
    """Store each window aggregate as one row in PostgreSQL."""

    agg_topic: str = Field("agg-temperature", description="topic of window aggregates")
    dlq_topic: str = Field("", description="dead-letter topic; default <agg topic>-dlq")
    consumer_group: str = Field(
        "sensor-windows-sink", description="sinks in one group share the partitions"
    )
    postgres_url: SecretStr = Field(
        SecretStr("postgresql://sensor:sensor@localhost:15432/sensors"),
        description="libpq URL of the database: postgresql://user:password@host:port/dbname",
    )
    sink_table: str = Field("sensor_windows", description="table of windows; made if missing")
    sink_schema: str = Field("public", description="schema of the table; never made: must exist")

    @model_validator(mode="after")
    def _default_dlq_topic(self) -> SinkSettings:
        self.dlq_topic = self.dlq_topic or f"{self.agg_topic}-dlq"
        return self


class Rows:
    """Aggregates become rows; a message that is not one becomes a dead letter."""

    def __init__(self, dead_letters: DeadLetterSink) -> None:
        self.dead_letters = dead_letters
        self.received = 0

    def to_row(
        self, value: bytes | None, key: bytes | None, timestamp: int, headers: Any
    ) -> dict[str, Any] | None:
        self.received += 1
        try:
            a = parse_aggregate(key, value)
        except InvalidAggregate as invalid:
            self.dead_letters.send(key, value, headers, invalid.reason, str(invalid))
            return None
        return {
            "sensor_id": a.sensor,
            "window_start": from_epoch_ms(a.start_ms),
            "window_end": from_epoch_ms(a.end_ms),
            "count": a.count,
            "min": a.min,
            "max": a.max,
            "mean": a.mean,
        }


def build_pipeline(
    app: Application, settings: SinkSettings, rows: Rows, table: WindowsSink
) -> StreamingDataFrame:
    """Aggregate topic -> one row per window -> PostgreSQL."""
    aggregates = app.topic(settings.agg_topic, key_deserializer="bytes", value_deserializer="bytes")
    sdf = app.dataframe(aggregates)
    sdf = sdf.apply(rows.to_row, metadata=True)
    sdf = sdf.filter(lambda row: row is not None)  # what was dead-lettered
    sdf.sink(table)
    return sdf


def summary(rows: Rows, table: WindowsSink) -> str:
    return summary_line(
        rows.dead_letters.counts,
        aggregates=rows.received,
        rows_written=table.rows_written,
        write_errors=table.write_errors,
    )


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(SinkSettings, argv)
    url = settings.postgres_url.get_secret_value()
    rows = Rows(DeadLetterSink(settings, settings.dlq_topic))
    table = WindowsSink(url, settings.sink_table, settings.sink_schema)
    lag = ConsumerLag()
    with running(  # checks first, then a summary; one line per known failure (sensor_lib)
        settings,
        logger,
        topics=[settings.agg_topic],
        dead_letter_topics=[settings.dlq_topic],
        source=settings.agg_topic,
        stateful=False,
        checks=[lambda: prepare_table(url, settings.sink_table, settings.sink_schema)],
        summary=lambda: summary(rows, table),
        metrics=metrics.sink_metrics(rows, table, lag),
        histograms=[table.round_trips],
    ):
        logger.info(
            "Writing %s to table %s.%s at %s (%s); dead letters to %s",
            settings.agg_topic,
            settings.sink_schema,
            settings.sink_table,
            redact(url),
            settings.processing_guarantee,
            settings.dlq_topic,
        )
        for attempt in rejoining(settings, logger):  # a new app if a broker restart needs one
            with attempt:
                app = Application(
                    consumer_group=settings.consumer_group,
                    broker_address=settings.connection(),
                    processing_guarantee=settings.processing_guarantee,
                    auto_offset_reset=settings.auto_offset_reset,
                    state_dir=settings.state_dir,
                    commit_interval=settings.commit_interval,
                    **quix_defaults(settings, lag),
                )
                build_pipeline(app, settings, rows, table)
                app.run()


if __name__ == "__main__":
    sys.exit(exit_status(main, logger))
