# notifyd — `make run` starts the daemon, `make test` runs the whole suite.
# Both bootstrap everything they need into .venv on a fresh machine.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test

.PHONY: run test lint bench soak fuzz upgrade clean chromium postgresql screenshots

$(PY):
	$(PYTHON) -c 'import sys; sys.exit("notifyd needs Python >= 3.11") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Installs take the exact versions in constraints.txt (make upgrade refreshes it).
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -q -c constraints.txt -e .
	touch $@

$(TSTAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@ $(STAMP)

# The newest releases that pyproject.toml's ranges allow, resolved in a fresh venv
# and written to constraints.txt; run the tests, then commit it.
UPGRADE_VENV := .cache/upgrade-venv
upgrade:
	rm -rf $(UPGRADE_VENV)
	$(PYTHON) -m venv $(UPGRADE_VENV)
	$(UPGRADE_VENV)/bin/python -m pip install -q --upgrade pip
	$(UPGRADE_VENV)/bin/python -m pip install -q -e '.[test]'
	{ sed -n '1,3p' constraints.txt; $(UPGRADE_VENV)/bin/python -m pip freeze --exclude-editable \
	  | grep -v '^notifyd'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(UPGRADE_VENV)
	@echo "constraints.txt refreshed: run make test, then commit it"

run: $(STAMP)
	mkdir -p var
	$(VENV)/bin/notifyd serve --config notifyd.toml

# What the browser tests need besides Python packages: Debian's Chromium (installed
# when we are root; never a downloaded browser) and axe-core from npm.
AXE := .cache/npm/node_modules/axe-core/axe.min.js

$(AXE):
	npm install --prefix .cache/npm --no-audit --no-fund --silent axe-core@4

chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
	    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; \
	  else echo "note: /usr/bin/chromium is missing and we are not root: the browser tests will be skipped"; fi; \
	fi

# What the PostgreSQL tests need: a server's programs (initdb, pg_ctl). Unless
# NOTIFYD_TEST_DATABASE_URL names a server, the suite starts a private throwaway cluster
# of its own (tests/pg.py); this only installs Debian's package when we are root. The
# system's own cluster is left as the package leaves it: the tests never use it.
postgresql:
	@if [ -z "$$NOTIFYD_TEST_DATABASE_URL" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	    && ! command -v initdb >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's postgresql for the PostgreSQL tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null \
	    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; }; \
	  else echo "note: no initdb and we are not root: the PostgreSQL tests will fail unless NOTIFYD_TEST_DATABASE_URL names a server"; fi; \
	fi

# The whole suite. The modules marked both_engines (tests/conftest.py) start their daemons
# on SQLite and again on PostgreSQL ([sqlite]/[postgresql] ids). The PostgreSQL half runs
# in a second pytest beside the first (each half is mostly one process waiting on a daemon,
# and a second core does the other); its report follows the first's, and either failing
# fails make test. PYTEST_ARGS adds options to both: PYTEST_ARGS='tests/test_streams.py -x'.
# TEST_ENGINE=sqlite (or postgresql) runs one half only.
# The PostgreSQL half is shorter, so a whole run (no PYTEST_ARGS, both halves) has it go
# on with SIDE_MODULES on SQLite (the cluster and crash modules and a few long ones, ~40 % of
# the SQLite half's time) and the first leaves them out: both halves then end about together.
PYTEST_ARGS ?=
TEST_ENGINE ?= both
PG_TEST_LOG := .cache/test-postgresql.log
SIDE_MODULES := tests/test_cluster.py tests/test_cluster_ops.py tests/test_cluster_failover.py \
	tests/test_cluster_limits.py tests/test_crash.py tests/test_compat_gotify.py tests/test_cli.py \
	tests/test_streams.py tests/test_delivery.py
ifeq ($(strip $(PYTEST_ARGS))$(TEST_ENGINE),both)
SIDE := $(SIDE_MODULES)
endif
test: $(TSTAMP) $(AXE) chromium postgresql
	@mkdir -p .cache; pg=; pgs=0; main=0; \
	if [ "$(TEST_ENGINE)" != sqlite ]; then \
	  { $(PY) -m pytest -q -p no:cacheprovider --engine postgresql $(PYTEST_ARGS); s=$$?; \
	    [ $$s -eq 5 ] && s=0; \
	    if [ -n "$(SIDE)" ]; then \
	      echo "--- and on SQLite: $(SIDE)"; \
	      $(PY) -m pytest -q -p no:cacheprovider --engine sqlite $(SIDE) || s=$$((s ? s : $$?)); \
	    fi; exit $$s; } > $(PG_TEST_LOG) 2>&1 & pg=$$!; \
	  trap 'kill $$pg 2>/dev/null' INT TERM; \
	fi; \
	if [ "$(TEST_ENGINE)" != postgresql ]; then \
	  echo "$(PY) -m pytest -q --engine sqlite $(PYTEST_ARGS) $(addprefix --ignore=,$(SIDE))"; \
	  $(PY) -m pytest -q --engine sqlite $(PYTEST_ARGS) $(addprefix --ignore=,$(SIDE)) || main=$$?; \
	fi; \
	if [ -n "$$pg" ]; then \
	  wait $$pg || pgs=$$?; \
	  echo "--- the PostgreSQL half: pytest -q --engine postgresql $(PYTEST_ARGS) ($(PG_TEST_LOG))"; \
	  cat $(PG_TEST_LOG); \
	fi; \
	[ $$main -eq 0 ] && [ $$pgs -eq 0 ]

screenshots: $(TSTAMP) $(AXE) chromium  # the README's pictures of the web page
	NOTIFYD_UPDATE_SCREENSHOTS=1 $(PY) -m pytest -q tests/test_web.py -k screenshots

# Type checking: mypy checks all of notifyd (strict for notifyd.core; settings in
# pyproject.toml). setuptools installs tui/ as notifyd.tui and plugins/ as notifyd.plugins
# (package-dir), which mypy cannot map, so lint first builds .cache/typecheck/notifyd: a
# symlink to every entry of notifyd/ plus tui and plugins, refreshed on every run (entries
# added to or removed from notifyd/ follow), and runs mypy there. Error paths are relative
# to that tree:  notifyd/tui/X = tui/X,  notifyd/plugins/X = plugins/X,  notifyd/X = notifyd/X.
TYPECHECK := .cache/typecheck
lint: $(TSTAMP)  # ruff (rules and formatting) and mypy
	$(VENV)/bin/ruff check notifyd tui plugins tests bench
	$(VENV)/bin/ruff format --check notifyd tui plugins tests bench
	rm -rf $(TYPECHECK)/notifyd
	mkdir -p $(TYPECHECK)/notifyd
	set -e; for entry in notifyd/* tui plugins; do \
	  case $$entry in notifyd/__pycache__) continue;; esac; \
	  ln -s "$(CURDIR)/$$entry" $(TYPECHECK)/notifyd/; \
	done
	cd $(TYPECHECK) && MYPYPATH=. $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml -p notifyd

bench: $(TSTAMP)  # the delivery benchmark uses the test peers (aiosmtpd, http-ece)
	$(PY) bench/publish.py
	$(PY) bench/fanout.py
	$(PY) bench/delivery.py
	$(PY) bench/tui.py
	$(PY) bench/compat.py
	$(PY) bench/connections.py
	$(PY) bench/history.py
	$(PY) bench/hostile.py
	$(PY) bench/attachments.py
	$(PY) bench/chart.py

soak: $(TSTAMP)  # 10 minutes at 200 events/s, 500 subscribers with churn
	$(PY) bench/soak.py

# Longer fuzzing: 20,000 malformed requests and WebSocket frames at every door
# (NOTIFYD_FUZZ_SEED picks another corpus), then the OpenAPI fuzzer with more examples.
fuzz: $(TSTAMP)
	NOTIFYD_FUZZ_CASES=$${NOTIFYD_FUZZ_CASES:-20000} $(PY) -m pytest -q tests/test_fuzz_doors.py
	NOTIFYD_FUZZ_EXAMPLES=$${NOTIFYD_FUZZ_EXAMPLES:-100} $(PY) -m pytest -q tests/test_fuzz_api.py

clean:
	rm -rf $(VENV) var .pytest_cache .cache test-artifacts
