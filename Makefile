# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs the pinned requirements first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DURATION ?= 0

.PHONY: install demo test lint format broker clean

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

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

broker: install
	$(BIN)/python embedded_broker.py --port 19092

clean:
	rm -rf $(VENV) state demo-logs .pytest_cache .ruff_cache .hypothesis
