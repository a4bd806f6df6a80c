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

.PHONY: help setup demo test bench train convert report run anomalies sim autocomplete complete serve loadgen clean

help: ## list the targets with what each is for
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

# Debian packages the demo and tests use: the word list (autocomplete) and the MQTT broker (edge service)
APT_PACKAGES := wamerican mosquitto

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
