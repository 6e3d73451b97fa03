# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create .venv and install the project with the extras they need.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out
# On machines without an NVIDIA GPU install the CPU build of torch explicitly: an unpinned torch pulls a
# multi-GB CUDA build.
TORCH_CPU := torch==2.13.0
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo yes)

.PHONY: venv demo demo-quick test test-all lint format clean gpu-check

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
ifneq ($(HAS_GPU),yes)
	$(BIN)/python -m pip install --quiet $(TORCH_CPU)
endif
	$(BIN)/python -m pip install --quiet -e '.[train,export,runtime,dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/stars-edge demo --out $(DEMO_OUT)

demo-quick: venv
	$(BIN)/stars-edge demo --out $(DEMO_OUT) --quick

test: venv
	$(BIN)/python -m pytest

test-all: venv
	$(BIN)/python -m pytest --run-slow

# First run on a machine with an NVIDIA GPU (docs/EXPORT.md): inventory, TensorRT engines, GPU tests, INT8 gate,
# latency, one results file. It installs and downloads nothing (such a machine may have no network): it runs
# with .venv's Python when there is one, else $(PYTHON), and reports what is missing.
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache
