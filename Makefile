# edge-rnn: `make demo` runs the whole pipeline, `make test` runs the tests.
# Every target sets up .venv from the hash-checked lock in requirements/ first (fast when already done).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
STAMP  := $(VENV)/.installed-stamp
export TF_CPP_MIN_LOG_LEVEL := 3
# uv uses the Python 3.11 given to it and never fetches an interpreter of its own
export UV_PYTHON_DOWNLOADS := never
# uv's own certificate bundle lacks a CA that a TLS-inspecting proxy adds to the system store (this
# machine kind has one: without this, a fresh machine's uv fails with "invalid peer certificate")
export UV_SYSTEM_CERTS := 1

# The lock: every package of the dev environment (all extras) with its sha256, for Linux x86_64 CPython 3.11.
DEV_LOCK := requirements/dev.lock.txt
# torch's CPU build is not on PyPI (PyPI's torch is the CUDA build with GBs of nvidia-* packages): a folder or
# index holding torch-2.13.0+cpu. Elsewhere: TORCH_WHEELS=https://download.pytorch.org/whl/cpu/torch/
TORCH_WHEELS ?= /opt/wheels
# the device's aarch64 wheelhouse, one lock per interpreter (deploy/release.py downloads with --require-hashes)
DEVICE_RUNTIMES := tflite-runtime ai-edge-litert
DEVICE_PLATFORM := aarch64-manylinux_2_34
LOCK_FLAGS := --generate-hashes --quiet --custom-compile-command "make lock"

# what `make train` / `make run` act on
SCENARIO ?= temperature
CELL     ?= lstm
NAME     ?= $(SCENARIO)-$(CELL)
AUTOCOMPLETE_BUNDLE ?= words-lstm192

CONFIG   ?= edge.toml
DURATION ?= 60

.PHONY: help setup lock lint mqtt-broker demo test test-fast bench bench-real bench-lecture search-real train convert report run anomalies sim autocomplete complete serve loadgen \
	clean deploy rollback deploy-status pi-emu-up pi-emu-down

help: ## list the targets with what each is for
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# Debian packages, per target. make setup (and so make demo): the word list for autocomplete.
APT_PACKAGES := wamerican
# the MQTT broker: the service's tests, make bench's service load, make loadgen
MQTT_PACKAGES := mosquitto
# host tools for deploying to a Pi (ssh, rsync)
DEPLOY_PACKAGES := openssh-client rsync
# the emulated Pi: qemu-user, a rootfs builder (arch-test: its foreign-architecture support), nspawn, sshd in
# the rootfs, rsync, zstd for the cached rootfs, a C compiler for the CPU wrapper
# (one line: tests/test_deploy_pi.py reads it)
PI_EMU_PACKAGES := qemu-user-static binfmt-support mmdebstrap arch-test systemd-container openssh-client openssh-server rsync zstd gcc libc6-dev
# the headless browser the live page's test drives through Playwright (tests/test_service_http.py;
# Debian's build, never `playwright install`, which downloads browsers)
BROWSER_PACKAGES := chromium
# make test runs the MQTT tests, boots the emulated Pi (tests/test_deploy_pi.py) and loads the live page in chromium
TEST_PACKAGES := $(MQTT_PACKAGES) $(PI_EMU_PACKAGES) $(BROWSER_PACKAGES)

# the targets that start a Mosquitto broker (make test installs it with TEST_PACKAGES)
test-fast bench loadgen: mqtt-broker
mqtt-broker:
	@bash tools/apt-deps.sh $(MQTT_PACKAGES)

setup: $(STAMP) ## create .venv from the lock, hashes checked (once; again when the lock or pyproject.toml changes)
	@bash tools/apt-deps.sh $(APT_PACKAGES)

$(STAMP): $(DEV_LOCK) requirements/uv.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"edge-rnn needs Python 3.11, found {sys.version.split()[0]} at {sys.executable}"'
	@$(PYTHON) -m venv $(VENV) || { echo "'$(PYTHON) -m venv' failed: on Debian/Ubuntu install python3-venv (apt-get install python3-venv)"; exit 1; }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/uv.txt
	# --compile-bytecode: uv leaves no .pyc (pip writes them), and where PYTHONDONTWRITEBYTECODE is set (this machine,
	# most Docker images) every process then compiled torch and TensorFlow from source: 10-17 s a process here
	$(UV) pip sync --quiet --compile-bytecode --python $(BIN)/python --require-hashes --find-links $(TORCH_WHEELS) $(DEV_LOCK)
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	# the project's own modules too (gitignored __pycache__; a module edited later is compiled in memory, as before):
	# ~50 ms of every edge runtime cold start here
	$(BIN)/python -m compileall -q edge_runtime edge_eval train convert pipeline firmware_sim deploy
	@touch $(STAMP)

lock: $(STAMP) ## regenerate the locks in requirements/ from pyproject.toml's pins (then make setup installs them)
	$(UV) pip compile pyproject.toml --all-extras $(LOCK_FLAGS) --python $(BIN)/python \
		--python-platform x86_64-manylinux_2_28 --find-links $(TORCH_WHEELS) --no-emit-find-links \
		--constraint requirements/torch-cpu.txt -o $(DEV_LOCK)
	@! grep -q '^nvidia-' $(DEV_LOCK) || { echo "$(DEV_LOCK) holds nvidia-* packages: torch resolved to the CUDA build"; exit 1; }
	for runtime in $(DEVICE_RUNTIMES); do \
		$(PYTHON) tools/device_requirements.py $$runtime | $(UV) pip compile - $(LOCK_FLAGS) --python-version 3.11 \
			--python-platform $(DEVICE_PLATFORM) -o requirements/device-aarch64-$$runtime.lock.txt || exit 1; \
	done
	$(UV) pip compile requirements/uv.in $(LOCK_FLAGS) --python $(BIN)/python -o requirements/uv.txt

lint: setup ## ruff and the import rules (import-linter contracts in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

demo: setup ## the whole pipeline on built-in data: train, convert, run on the edge runtime, summary table
	$(BIN)/python -m pipeline demo

test: setup ## the test suite (what CI runs)
	@bash tools/apt-deps.sh $(TEST_PACKAGES)
	$(BIN)/python -m pytest -q --durations=40  # the slowest tests, so CI logs show where its time goes

test-fast: setup ## ~5 minutes, no torch/TensorFlow: the tests not marked slow, on tests/fixture_bundles
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup ## latency, memory, cold start, scaling vs PyTorch/ONNX Runtime/numpy/Keras -> reports/bench.md
	$(BIN)/python -m pipeline bench

bench-real: setup ## real sensor series (pinned wheels, fetched once, hash-checked) through CSV/train/convert/device runtime -> reports/bench-real.md
	$(BIN)/python -m pipeline bench-real $(foreach s,$(SERIES),--series $(s))

bench-lecture: setup ## LSTM, GRU and a streaming Transformer at matched sizes: latency/state vs context 64..4096, MCU budgets, accuracy -> reports/rnn-vs-transformer.md
	$(BIN)/python -m pipeline bench-lecture $(if $(QUICK),--quick)

search-real: setup ## the model search (python -m pipeline search) on every real series -> reports/search-real.md [SERIES=..] [TRIALS=12]
	$(BIN)/python -m pipeline search-real $(foreach s,$(SERIES),--series $(s)) --trials $(or $(TRIALS),12)

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

deploy: setup ## put the edge service on a Pi: make deploy PI_HOST=pi@raspberrypi.local [BUNDLES=..] [CONFIG=edge.toml] [TRUSTED_KEY=key.pub] [DRY_RUN=1]
	@test -n "$(PI_HOST)" || { echo "usage: make deploy PI_HOST=pi@raspberrypi.local [PI_PORT=22] [BUNDLES=artifacts/NAME ...] [CONFIG=edge.toml] [DRY_RUN=1]"; exit 2; }
	@bash tools/apt-deps.sh $(DEPLOY_PACKAGES)
	$(BIN)/python -m deploy deploy $(PI_ARGS) $(foreach b,$(BUNDLES),--bundle $(b)) $(DEPLOY_CONFIG) $(if $(TRUSTED_KEY),--trusted-key $(TRUSTED_KEY)) --keep $(KEEP) --health-timeout $(HEALTH_TIMEOUT) $(if $(IS_DRY_RUN),--dry-run)

rollback: setup ## return the Pi to its previous release: make rollback PI_HOST=...
	@test -n "$(PI_HOST)" || { echo "usage: make rollback PI_HOST=pi@raspberrypi.local"; exit 2; }
	$(BIN)/python -m deploy rollback $(PI_ARGS) --health-timeout $(HEALTH_TIMEOUT) $(if $(IS_DRY_RUN),--dry-run)

deploy-status: setup ## running release, bundle hashes and service counters on the Pi: make deploy-status PI_HOST=...
	@test -n "$(PI_HOST)" || { echo "usage: make deploy-status PI_HOST=pi@raspberrypi.local"; exit 2; }
	$(BIN)/python -m deploy status $(PI_ARGS)

pi-emu-up: ## boot an emulated arm64 Pi on 127.0.0.1 (root; builds its rootfs once, 3-6 min)
	@bash tools/apt-deps.sh $(PI_EMU_PACKAGES)
	$(PYTHON) -m deploy.emulator up --dir $(PI_EMU_DIR)

pi-emu-down: ## power the emulated Pi off (add REMOVE=1 to delete its rootfs)
	$(PYTHON) -m deploy.emulator down --dir $(PI_EMU_DIR) $(if $(REMOVE),--remove)

# ---- the fresh-machine check (README: "Contributing"): make demo + make test in a clean Debian root
# on the host: the root builder, nspawn, and qemu-user + a C compiler for the arm64 binfmt handler the emulated-Pi step uses
FRESH_CHECK_PACKAGES := mmdebstrap systemd-container zstd git qemu-user-static gcc libc6-dev
.PHONY: fresh-check
COMMIT       ?= HEAD
FRESH_PYTEST ?=

fresh-check: ## make demo + make test from nothing, in a clean Debian bookworm root (root; ~25 min): [COMMIT=rev] [FRESH_PYTEST="tests/x.py"]
	@bash tools/apt-deps.sh $(FRESH_CHECK_PACKAGES)
	$(PYTHON) tools/fresh_machine_check.py --commit $(COMMIT) $(if $(FRESH_PYTEST),--pytest-addopts "$(FRESH_PYTEST)")
