"""The plumbing behind the sensor_stream_*.py scripts, so that each script tells its story.

- settings.py: the settings every script shares (flags over variables over defaults).
- event_time.py: aware UTC times and epoch milliseconds, exactly.
- kafka_io.py: the broker check, topic creation, following a topic and reading it to its end.
- aggregates.py: the aggregate message the processor writes, checked.
- dead_letters.py: the dead-letter topic, and the raw message a dead letter keeps.
- quix_app.py: running a Quix Streams Application: checks, restarts, one-line failures.
- postgres_sink.py: the sink's table, and a PostgreSQLSink that waits out an outage.
- metrics.py: Prometheus metrics read from each script's counters at scrape time.
- progress.py: the producer's progress line.
- processes.py: the one stop pattern, and child processes that never outlive us.
- embedded_broker.py, kafka_broker.py, postgres_server.py: servers for the demo and the tests.
- demo.py: what `make demo` runs.
"""
