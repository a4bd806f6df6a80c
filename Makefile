# edge-rnn: `make demo` runs the whole pipeline, `make test` runs the tests.
# Every target sets up .venv from the pins in pyproject.toml first (fast when already done).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export TF_CPP_MIN_LOG_LEVEL := 3

# what `make train` / `make run` act on
SCENARIO ?= temperature
CELL     ?= lstm
NAME     ?= $(SCENARIO)-$(CELL)
AUTOCOMPLETE_BUNDLE ?= words-lstm128

CONFIG   ?= edge.toml
DURATION ?= 60

.PHONY: help setup demo test test-fast bench train convert report run anomalies sim autocomplete complete serve loadgen \
	clean deploy rollback deploy-status pi-emu-up pi-emu-down

help: ## list the targets with what each is for
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# Debian packages the demo and tests use: the word list (autocomplete) and the MQTT broker (edge service)
APT_PACKAGES := wamerican mosquitto
# host tools for deploying (ssh, rsync) and for the emulated Pi (qemu-user, a rootfs builder, nspawn, a C compiler for the CPU wrapper)
DEPLOY_PACKAGES := openssh-client rsync
PI_EMU_PACKAGES := qemu-user-static binfmt-support mmdebstrap systemd-container openssh-client openssh-server rsync zstd gcc libc6-dev
# the deploy test boots an emulated Pi, so make setup (and with it make test) installs those too
APT_PACKAGES += $(PI_EMU_PACKAGES)

setup: $(STAMP) ## create .venv with the pinned versions (once; again when pyproject.toml changes)
	@bash tools/apt-deps.sh $(APT_PACKAGES)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"edge-rnn needs Python 3.11, found {sys.version.split()[0]} at {sys.executable}"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[edge,litert,train,convert,dev,bench,sim]"
	@touch $(STAMP)

demo: setup ## the whole pipeline on built-in data: train, convert, run on the edge runtime, summary table
	$(BIN)/python -m pipeline demo

test: setup ## the test suite (what CI runs)
	$(BIN)/python -m pytest -q

test-fast: setup ## the tests not marked slow (skips training-heavy tests and the emulated-Pi deploy)
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup ## latency, memory, cold start, scaling vs PyTorch/ONNX Runtime/numpy/Keras -> reports/bench.md
	$(BIN)/python -m pipeline bench

train: setup ## train one model: make train SCENARIO=vibration CELL=gru
	$(BIN)/python -m train --scenario $(SCENARIO) --cell $(CELL)

convert: setup ## convert every run in runs/ into a bundle in artifacts/
	$(BIN)/python -m convert runs/*/

report: setup ## what each quantized variant costs: make report NAME=temperature-lstm128
	$(BIN)/python -m convert report artifacts/$(NAME)

run: setup ## stream a run's test log through its bundle: make run NAME=temperature-lstm
	$(BIN)/python -m edge_runtime run artifacts/$(NAME) --input runs/$(NAME)/test.csv

anomalies: setup ## anomaly detection per kind on labelled test streams of every run+bundle -> reports/anomalies.md
	$(BIN)/python -m pipeline anomalies

sim: setup ## every bundle in artifacts/ on every device profile (firmware_sim) -> reports/sim-*.json/png + sim-summary.md
	$(BIN)/python -m firmware_sim sweep artifacts/*/ --rate 100 --seconds 30 --faults spike,stuck,dropout,saturation

autocomplete: setup ## the demo's autocomplete stage alone: word-list LSTM vs n-gram, every variant -> reports/autocomplete.md
	$(BIN)/python -m pipeline autocomplete

complete: setup ## type with live suggestions from the autocomplete bundle (after make demo or make autocomplete)
	$(BIN)/python -m edge_runtime complete artifacts/$(AUTOCOMPLETE_BUNDLE)

serve: setup ## the long-running edge service: make serve CONFIG=edge.toml (see deploy/edge.example.toml)
	$(BIN)/python -m edge_runtime serve --config $(CONFIG)

loadgen: setup ## the service under MQTT load, 100 sensors x 50 Hz: make loadgen NAME=temperature-lstm DURATION=60
	$(BIN)/python -m pipeline loadgen artifacts/$(NAME) --duration $(DURATION)

clean: ## remove generated runs, bundles and reports (keeps .venv)
	rm -rf runs artifacts reports .pytest_cache

# ---- deploy to a Raspberry Pi (README: "Deploy to a Raspberry Pi")
PI_HOST       ?=
PI_PORT       ?=
PI_SSH_CONFIG ?=
BUNDLES       ?= artifacts/$(NAME)
DRY_RUN       ?=
KEEP          ?= 3
HEALTH_TIMEOUT ?= 60
PI_ARGS        = --host $(PI_HOST) $(if $(PI_PORT),--port $(PI_PORT)) $(if $(PI_SSH_CONFIG),--ssh-config $(PI_SSH_CONFIG))
IS_DRY_RUN     = $(filter 1 yes true,$(DRY_RUN))
# deploy's config only when given (CONFIG's default, edge.toml, is make serve's): else one is written for the first bundle
DEPLOY_CONFIG  = $(if $(filter command line environment,$(origin CONFIG)),--config $(CONFIG))
PI_EMU_DIR      ?= build/pi-emu

deploy: setup ## put the edge service on a Pi: make deploy PI_HOST=pi@raspberrypi.local [BUNDLES=..] [CONFIG=edge.toml] [DRY_RUN=1]
	@test -n "$(PI_HOST)" || { echo "usage: make deploy PI_HOST=pi@raspberrypi.local [PI_PORT=22] [BUNDLES=artifacts/NAME ...] [CONFIG=edge.toml] [DRY_RUN=1]"; exit 2; }
	@bash tools/apt-deps.sh $(DEPLOY_PACKAGES)
	$(BIN)/python -m deploy deploy $(PI_ARGS) $(foreach b,$(BUNDLES),--bundle $(b)) $(DEPLOY_CONFIG) --keep $(KEEP) --health-timeout $(HEALTH_TIMEOUT) $(if $(IS_DRY_RUN),--dry-run)

rollback: setup ## return the Pi to its previous release: make rollback PI_HOST=...
	@test -n "$(PI_HOST)" || { echo "usage: make rollback PI_HOST=pi@raspberrypi.local"; exit 2; }
	$(BIN)/python -m deploy rollback $(PI_ARGS) --health-timeout $(HEALTH_TIMEOUT) $(if $(IS_DRY_RUN),--dry-run)

deploy-status: setup ## running release, bundle hashes and service counters on the Pi: make deploy-status PI_HOST=...
	@test -n "$(PI_HOST)" || { echo "usage: make deploy-status PI_HOST=pi@raspberrypi.local"; exit 2; }
	$(BIN)/python -m deploy status $(PI_ARGS)

pi-emu-up: ## boot an emulated arm64 Pi on 127.0.0.1 (root; builds its rootfs once, 3-6 min)
	@bash tools/apt-deps.sh $(PI_EMU_PACKAGES)
	$(PYTHON) -m deploy.pi_emu up --dir $(PI_EMU_DIR)

pi-emu-down: ## power the emulated Pi off (add REMOVE=1 to delete its rootfs)
	$(PYTHON) -m deploy.pi_emu down --dir $(PI_EMU_DIR) $(if $(REMOVE),--remove)

# ---- the fresh-machine check (README: "Contributing"): make demo + make test in a clean Debian root
# on the host: the root builder, nspawn, and qemu-user + a C compiler for the arm64 binfmt handler the emulated-Pi step uses
FRESH_CHECK_PACKAGES := mmdebstrap systemd-container zstd git qemu-user-static gcc libc6-dev
.PHONY: fresh-check
COMMIT       ?= HEAD
FRESH_PYTEST ?=

fresh-check: ## make demo + make test from nothing, in a clean Debian bookworm root (root; ~25 min): [COMMIT=rev] [FRESH_PYTEST="tests/x.py"]
	@bash tools/apt-deps.sh $(FRESH_CHECK_PACKAGES)
	$(PYTHON) tools/fresh_machine_check.py --commit $(COMMIT) $(if $(FRESH_PYTEST),--pytest-addopts "$(FRESH_PYTEST)")
