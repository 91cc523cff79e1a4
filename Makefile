# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs the pinned requirements first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DURATION ?= 0
BROKER_PORT ?= 19092
# `make kafka BROKERS=3`: a cluster of three nodes on BROKER_PORT and the two ports after it.
BROKERS ?= 1
POSTGRES_PORT ?= 15432
# The broker tests mostly wait on the broker (group joins, commits): more workers than
# the two cores of the machine this is sized on, each with a broker of its own, finish
# sooner (measured: 6 beat 4 and 8).
WORKERS ?= 6

.PHONY: install demo test test-fast test-kafka test-cluster lint format broker kafka postgres clean

install: $(VENV)/.installed

# One install at a time: `make kafka` and `make postgres`, started in two terminals,
# both need it. The lock is a folder, as mkdir is atomic everywhere (flock(1) is not
# on macOS); a run that waited for it finds .venv installed and does nothing.
LOCK := $(VENV).lock
$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; set PYTHON=python3.11")'
	@until mkdir $(LOCK) 2>/dev/null; do \
	  [ -n "$$waiting" ] || echo "waiting for the install in another terminal (if none runs: rmdir $(LOCK))"; \
	  waiting=1; sleep 1; \
	done; \
	trap 'rmdir $(LOCK)' EXIT; trap 'exit 1' HUP INT TERM; \
	if [ -f $@ ] && [ ! requirements.txt -nt $@ ] && [ ! requirements-dev.txt -nt $@ ]; then exit 0; fi; \
	set -e; \
	echo "installing the pinned requirements into $(VENV)"; \
	$(PYTHON) -m venv $(VENV); \
	$(BIN)/python -m pip install --quiet --upgrade pip; \
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt; \
	touch $@

demo: install
	$(BIN)/python -m sensor_lib.demo --duration $(DURATION)

# Pure logic only: no broker, no database, no subprocess. Seconds.
test-fast: install
	$(BIN)/python -m pytest -m "not integration"

# Everything, on the embedded broker.
test: lint
	$(BIN)/python -m pytest -n $(WORKERS) -m "not cluster"

# Everything, on Apache Kafka (Java 17+ and Maven; jars fetched once).
test-kafka: install
	TEST_BROKER=kafka $(BIN)/python -m pytest -n $(WORKERS) -m "not cluster"

# Losing brokers, on a three-node Apache Kafka cluster (Java 17+ and Maven): one cluster
# for the session, and faults that hit every client, so one pytest process.
test-cluster: install
	$(BIN)/python -m pytest -m cluster

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/ci.yml
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml docker-compose.cluster.yml
	$(BIN)/zizmor --offline .github/workflows/

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

broker: install
	$(BIN)/python -m sensor_lib.embedded_broker --port $(BROKER_PORT)

kafka: install
	$(BIN)/python -m sensor_lib.kafka_broker $(if $(filter-out 1,$(BROKERS)),--brokers $(BROKERS) )--port $(BROKER_PORT)

postgres: install
	$(BIN)/python -m sensor_lib.postgres_server --port $(POSTGRES_PORT)

clean:
	rm -rf $(VENV) sensor_lib/kafka_dist/lib state demo-logs postgres-data .pytest_cache .ruff_cache .hypothesis
