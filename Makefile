# Polylink: the things a person does with this repository. `make help` lists them.
# Every target does its own set-up (.venv from the pinned requirements, Node packages), so a
# fresh clone needs only Python 3.11+, Node.js/npm and, for the real broker, mosquitto.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NODES ?= 20
VENV_STAMP := $(VENV)/.installed
NODE_STAMP := tests/mpy/node_modules/.installed
BROWSER_STAMP := tests/browser/node_modules/.installed
WEB_STAMP := fleet/static/vendor/node_modules/.installed
# The MicroPython stubs are installed in typeshed layout into the venv; pyright uses that folder
# as its typeshed so the firmware is checked against MicroPython, not CPython.
MPY_TYPESHED = $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

.DEFAULT_GOAL := help
.PHONY: help system-packages run test sim bench lint setup clean image flash flash-batch deploy merged-image label release

help: ## list these targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

run: setup ## start the fleet manager: web UI + API on :8000, ingest worker, broker on :1883
	$(BIN)/fleet run

test: system-packages setup ## run the whole test suite on SQLite, then on PostgreSQL (lint and firmware type check included)
	@# Both halves run even when the first fails, so one run reports every failure; the target
	@# fails if either did. The PostgreSQL half starts a throwaway cluster of its own (tests/pgcluster.py)
	@# and runs only the tests that open the store (tests/conftest.py, opens_no_store).
	@status=0; \
	$(BIN)/python -m pytest || status=1; \
	$(BIN)/python -m pytest --backend=postgresql || status=1; \
	exit $$status

sim: setup ## run NODES=N simulated firmware nodes against the broker (default 20) [RUNTIME=micropython]
	$(BIN)/python -m polylink_host.sim --nodes $(NODES) $(if $(RUNTIME),--runtime "$(RUNTIME)")

image: setup ## build a node's filesystem image: make image BOARD=HELTEC_V3 NODE=lamp-42 (docs/provisioning.md)
	$(BIN)/fleet provision image --board "$(BOARD)" $(if $(NODE),--node "$(NODE)") $(if $(CLAIM_TOKEN),--claim-token "$(CLAIM_TOKEN)" --claim-port "$(CLAIM_PORT)")

flash: setup ## flash a board: make flash BOARD=.. PORT=/dev/ttyUSB0 [NODE=..] [FIRMWARE=micropython.bin]
	$(BIN)/fleet provision flash --board "$(BOARD)" --port "$(PORT)" $(if $(NODE),--node "$(NODE)") $(if $(FIRMWARE),--firmware "$(FIRMWARE)")

flash-batch: setup ## flash many boards: make flash-batch BOARD=.. PORTS="/dev/ttyUSB0 /dev/ttyUSB1" [FIRMWARE=..]
	$(BIN)/fleet provision batch --board "$(BOARD)" $(foreach p,$(PORTS),--port "$(p)") $(if $(FIRMWARE),--firmware "$(FIRMWARE)")

deploy: setup ## copy changed app files to a board running MicroPython: make deploy PORT=/dev/ttyUSB0 [BOARD=..]
	$(BIN)/fleet provision deploy --port "$(PORT)" $(if $(BOARD),--board "$(BOARD)")

merged-image: setup ## one file for a factory programmer: make merged-image BOARD=.. FIRMWARE=.. [NODE=..]
	$(BIN)/fleet provision merged-image --board "$(BOARD)" --firmware "$(FIRMWARE)" $(if $(NODE),--node "$(NODE)")

label: setup ## printable SVG label with a QR code to the node's page: make label NODE=lamp-42
	$(BIN)/fleet provision label --node "$(NODE)"

release: setup ## build, sign and store an OTA release: make release VERSION=0.2.0 [BOARDS="ESP32_GENERIC .."] [RUNTIME=micropython.app-bin] (docs/ota.md)
	$(BIN)/fleet release build "$(VERSION)" $(foreach b,$(BOARDS),--board "$(b)") $(if $(RUNTIME),--runtime "$(RUNTIME)")

bench: setup ## measure frame sizes, ingest rate and firmware memory (docs/benchmarks.md)
	@status=0; for bench in $(wildcard tests/bench/bench_*.py); do \
		echo "== $$bench"; $(BIN)/python $$bench || status=1; done; exit $$status

lint: setup ## ruff on everything; type-check the firmware against the MicroPython stubs
	$(BIN)/ruff check .
	$(BIN)/pyright -p firmware --typeshedpath "$(MPY_TYPESHED)"

system-packages: ## install (as root) or name the Debian packages the tests need
	@tests/system-packages

setup: $(VENV_STAMP) $(NODE_STAMP) $(BROWSER_STAMP) $(WEB_STAMP) ## build .venv and the Node packages (the other targets do it)

clean: ## remove .venv, Node packages, caches and build output (keeps the data in ./var)
	rm -rf $(VENV) tests/mpy/node_modules tests/browser/node_modules fleet/static/vendor/node_modules build test-artifacts .pytest_cache .ruff_cache .hypothesis *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name '*.mpy' -type f -delete

$(VENV_STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

$(NODE_STAMP): tests/mpy/package.json tests/mpy/package-lock.json
	npm ci --prefix tests/mpy --no-audit --no-fund
	touch $@

# playwright-core drives Debian's chromium (apt); it never downloads a browser of its own.
$(BROWSER_STAMP): tests/browser/package.json tests/browser/package-lock.json
	npm ci --prefix tests/browser --no-audit --no-fund
	touch $@

# Browser libraries the fleet's own pages load (jsQR reads a DevEUI QR code from the camera where
# the browser has no BarcodeDetector for QR, e.g. Chromium on Linux); served from fleet/static.
$(WEB_STAMP): fleet/static/vendor/package.json fleet/static/vendor/package-lock.json
	npm ci --prefix fleet/static/vendor --no-audit --no-fund
	touch $@
