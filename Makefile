# smsgw: `make install`, then `make run`. `make test` runs the suite.
VENV   := .venv
BIN    := $(VENV)/bin
export SMSGW_DATABASE_URL ?= sqlite:///var/smsgw.db

.PHONY: install run test test-interop bench clean help

help:
	@echo "make install   create .venv (Python >= 3.12) and install smsgw with its dev tools"
	@echo "make run       migrate var/smsgw.db and run the stack in the foreground"
	@echo "make test      run the test suite (the interop tests against a real Jasmin included)"
	@echo "make test-interop  only the interop tests against a real Jasmin"
	@echo "make bench     measure every configuration with wrk; writes bench/results.json"

install: $(BIN)/smsgw

$(BIN)/smsgw: pyproject.toml scripts/install-system-packages
	@py=$$(scripts/find-python) || exit 1; \
	  echo "using $$py"; \
	  if [ ! -x $(BIN)/python ] || ! $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then \
	    rm -rf $(VENV) && $$py -m venv $(VENV) || { echo "could not create $(VENV): install the venv module for $$py (Debian: python3.12-venv)"; exit 1; }; \
	  fi
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	scripts/install-system-packages
	@touch $@
	@echo "installed: $(BIN)/smsgw"

# In a terminal, scripts/run runs as a job of its own (set -m), so Ctrl-C reaches it and not
# make: make would report any SIGINT it got as an error (status 130), whatever the script did.
run: install
	@if [ -t 0 ]; then set -m; fi; scripts/run

test: install
	$(BIN)/python -m pytest

# A real Jasmin 0.11.0 (its own Python 3.11 virtualenv, created and cached in
# var/interop/) with this machine's RabbitMQ and Redis, and our SMPP SMSC stand-in.
test-interop: install
	$(BIN)/python -m pytest tests/interop

# Load generator: wrk, from Debian's packages (installed here when absent).
bench: install
	@command -v wrk >/dev/null || scripts/install-system-packages wrk
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) var .pytest_cache *.egg-info
