"""The plumbing behind the sensor_stream_*.py scripts, so that each script tells its story.

One job per module. The scripts import from these; the launchers and the demo sit
on top of the client modules; nothing here imports a script.

The messages:
- readings.py: the raw reading and watermark, parsed and checked.
- aggregates.py: the aggregate message the processor writes, parsed and checked.
- event_time.py: aware UTC times and epoch milliseconds, exactly.
- dead_letters.py: the dead-letter topic, and the raw message a dead letter keeps.

Settings, logging and the exit:
- settings.py: the settings every script shares (flags over variables over defaults).
- logs.py: UTC log lines, and one line instead of the clients' flood during an outage.
- errors.py: the typed errors, and the one exit policy that turns them into a line.
- polling.py: waiting with a bound, the one place a deadline is computed.
- stop_signals.py: the one stop pattern for Ctrl-C, SIGTERM and SIGHUP.

Kafka clients:
- broker.py: is a broker there; a script's start (logging, broker, topics).
- topics.py: creating topics the way Quix Streams needs them, and finding them.
- producing.py: delivery reports, and a produce that waits for room.
- consuming.py: reading a topic to its end, or following it as it grows.

Running a Quix Streams Application:
- application.py: the Application arguments the scripts share beyond the ones they name.
- quix_script.py: what runs around the Application: checks first, then a summary.
- preflight.py: the checks before Quix Streams starts (state folder, saved state).
- rejoin.py: a new Application when the broker needs one (changelog lag, broker restart).
- known_failures.py: Quix Streams' failures we know, each as one line.
- summary.py: the periodic summary line.
- metrics.py: Prometheus metrics read from each script's counters at scrape time.
- postgres_sink.py: the sink's table, and a PostgreSQLSink that waits out an outage.
- progress.py: the producer's progress line.

Servers and launchers:
- children.py: child processes that never outlive their launcher.
- servers.py: a server process on 127.0.0.1, ready when started.
- embedded_broker.py, kafka_broker.py, postgres_server.py: servers for the demo and the tests.
- kafka_cluster.py: three Apache Kafka nodes as one cluster, for `make kafka BROKERS=3`.
- changelogs.py: the changelog topics of a group's window state, replicated as asked.
- demo.py: what `make demo` runs.
"""
