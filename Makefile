# The two commands: `make run` serves the API; `make test` runs the whole suite.
# Both create .venv with Python 3.11 and install pinned dependencies on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

SOAK_SECONDS ?= 600

.PHONY: run test lint format bench soak pgadmin migrate clean

run: $(VENV)/.installed-run
	$(BIN)/python -m backend

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check backend tests bench
	$(BIN)/ruff format --check backend tests bench
	$(BIN)/mypy --strict backend

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix backend tests bench
	$(BIN)/ruff format backend tests bench

migrate: $(VENV)/.installed-run
	$(BIN)/alembic upgrade head

# pgAdmin 4 from PyPI in its own .venv-pgadmin, on 127.0.0.1:5050, with the running
# service's database registered (DATABASE_URL, or the embedded one under data/).
pgadmin:
	$(PYTHON) pgadmin/run_local.py $(PGADMIN_ARGS)

# The figures, then their charts (docs/bench/*.png), drawn even when a figure failed.
bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench $(if $(FULL),--full,); status=$$?; $(BIN)/python -m bench.charts && exit $$status

# Endurance with faults across three replicas, bounded: SOAK_SECONDS of load, then a bounded drain.
soak: $(VENV)/.installed-dev
	$(BIN)/python -m bench.soak --seconds $(SOAK_SECONDS)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: requirements.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed-run

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
