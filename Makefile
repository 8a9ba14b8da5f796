# Two commands do everything on a fresh machine with Python 3.11:
#   make run   - set up, then run the analysis on the bundled data/ (reports in out/)
#   make test  - set up (system packages for browser and workbook tests too), then the whole test suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: run test serve bench system-deps clean

# The product with its test extra, then the development kit beside it (testkit/: the log generator the
# tests and benchmarks use; never in the product's wheel or image). Two steps, in this order, because an
# extra cannot name a local folder portably, and so that the kit's console script is written last.
$(BIN)/.installed: pyproject.toml testkit/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q -e ./testkit
	touch $@

run: $(BIN)/.installed
	$(BIN)/calo-logs-analyzer data/inbox --out out --raw-csv

# Headless Chromium (browser tests) and LibreOffice (workbook opens without repair), from Debian's packages.
system-deps:
	@if command -v chromium >/dev/null && command -v soffice >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium libreoffice-calc-nogui >/dev/null; \
	else echo "note: chromium/libreoffice missing and not root: those tests will be skipped"; fi

test: $(BIN)/.installed system-deps
	$(BIN)/python -m pytest -q

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME) && cp dagster.yaml $@

serve: $(BIN)/.installed $(DAGSTER_HOME)/dagster.yaml
	DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/sensor_tick.py

clean:
	rm -rf out .pytest_cache
