# The two commands: `make demo` (run the appliance and push a synthetic study through it) and
# `make test` (install everything the tests need, then run the whole suite). Both work on a
# fresh Debian machine with Python 3.11.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The peers the tests drive: DCMTK (scanner), dicom3tools (dciodvfy), Redis (scale-out queue),
# Orthanc (PACS), Chromium with its WebDriver (the review page's browser tests), nginx (HTTPS
# in front of the web part, as the Ansible role sets it up), restic (off-box backups).
DEBIAN_PACKAGES := dcmtk dicom3tools redis-server orthanc chromium chromium-driver nginx restic \
  openssl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo demo-pacs test lint bench fuzz system-packages clean

$(BIN)/aomas: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/aomas demo-pacs
	$(BIN)/aomas init
	$(BIN)/aomas serve --demo

# The demo's PACS is a local Orthanc; without one the demo still runs, results stay in AOMAS.
demo-pacs:
	@command -v Orthanc >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq orthanc >/dev/null; } || \
	  echo "could not install Orthanc; the demo runs without a PACS"

system-packages:
	@missing=""; \
	for tool in storescu echoscu storescp dciodvfy redis-server Orthanc chromium chromedriver \
	    nginx restic openssl; do \
	  command -v $$tool >/dev/null || missing="yes"; done; \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(DEBIAN_PACKAGES) >/dev/null; \
	fi

lint: $(BIN)/aomas
	$(BIN)/ruff check .

test: system-packages $(BIN)/aomas lint
	$(BIN)/pytest -q

bench: system-packages $(BIN)/aomas
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/preprocess.py
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/review.py
	$(BIN)/python bench/lifecycle.py
	$(BIN)/python bench/backup.py

# Coverage-guided fuzzing (atheris) of what a hostile peer's bytes reach first: the SCP's
# header reader, the upload's validation, the guarded PDU reader (fuzz/targets.py). CI runs a
# short fixed-seed slice of each (tests/test_fuzz.py); this runs FUZZ_RUNS inputs per target.
FUZZ_RUNS ?= 1000000
fuzz: $(BIN)/aomas
	for target in header upload pdu; do \
	  $(BIN)/python -m fuzz.run $$target --runs $(FUZZ_RUNS) --seed 1 || exit 1; done

clean:
	rm -rf $(VENV) var *.egg-info
