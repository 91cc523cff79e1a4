# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs the pinned requirements first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DURATION ?= 0
BROKER_PORT ?= 19092

.PHONY: install demo test test-kafka lint format broker kafka clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $@

demo: install
	$(BIN)/python demo.py --duration $(DURATION)

test: lint
	$(BIN)/python -m pytest

# The same suite against Apache Kafka (Java 17+ and Maven; jars fetched once).
test-kafka: install
	TEST_BROKER=kafka $(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/ci.yml
	$(BIN)/zizmor --offline .github/workflows/

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

broker: install
	$(BIN)/python embedded_broker.py --port $(BROKER_PORT)

kafka: install
	$(BIN)/python kafka_broker.py --port $(BROKER_PORT)

clean:
	rm -rf $(VENV) kafka/lib state demo-logs .pytest_cache .ruff_cache .hypothesis
