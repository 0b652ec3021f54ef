# notifyd — `make run` starts the daemon, `make test` runs the whole suite.
# Both bootstrap everything they need into .venv on a fresh machine.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test

.PHONY: run test lint bench clean

$(PY):
	$(PYTHON) -c 'import sys; sys.exit("notifyd needs Python >= 3.11") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(TSTAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	touch $@ $(STAMP)

run: $(STAMP)
	mkdir -p var
	$(VENV)/bin/notifyd serve --config notifyd.toml

test: $(TSTAMP)
	$(PY) -m pytest -q

lint: $(TSTAMP)
	$(VENV)/bin/ruff check notifyd tui plugins tests bench

bench: $(TSTAMP)  # the delivery benchmark uses the test peers (aiosmtpd, http-ece)
	$(PY) bench/publish.py
	$(PY) bench/fanout.py
	$(PY) bench/delivery.py
	$(PY) bench/chart.py

clean:
	rm -rf $(VENV) var .pytest_cache
