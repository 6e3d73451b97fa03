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

.PHONY: venv demo demo-quick test test-all lint format clean gpu-check modelopt-venv

venv: $(STAMP)

# setup.py and the C kernels too: an editable install compiles runtime/_kernels_c.c once, so a change to it
# needs the install again (the runtime refuses a library built from other sources, it does not rebuild it).
$(STAMP): pyproject.toml setup.py runtime/_kernels_c.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
ifneq ($(HAS_GPU),yes)
	$(BIN)/python -m pip install --quiet $(TORCH_CPU)
endif
	$(BIN)/python -m pip install --quiet -e '.[train,export,runtime,fast,dev]'
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

# NVIDIA ModelOpt for `build-engines --quantizer modelopt`, in its own virtualenv (docs/EXPORT.md): the
# nvidia-modelopt[onnx] extra pins onnx 1.21, onnxruntime-gpu 1.24 and cupy-cuda12x, which clash with the
# export extra. So: the package without its dependencies, plus only what its ONNX INT8 path imports (found with
# `python -X importtime`), with onnxruntime's CPU build; torch because modelopt.onnx.quantization.qdq_utils
# imports it at module level. The export calls it as a subprocess.
MODELOPT_VENV ?= .venv-modelopt
MODELOPT_DEPS := 'onnx~=1.21.0' 'onnxruntime~=1.24.2' 'onnx-graphsurgeon>=0.6.1' ml_dtypes lief nvidia-ml-py \
	onnxslim onnxscript pydot numpy packaging pyyaml tqdm
modelopt-venv: $(MODELOPT_VENV)/.installed

$(MODELOPT_VENV)/.installed:
	$(PYTHON) -m venv $(MODELOPT_VENV)
	$(MODELOPT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MODELOPT_VENV)/bin/python -m pip install --quiet $(TORCH_CPU)
	$(MODELOPT_VENV)/bin/python -m pip install --quiet --no-deps nvidia-modelopt==0.47.0
	$(MODELOPT_VENV)/bin/python -m pip install --quiet $(MODELOPT_DEPS)
	$(MODELOPT_VENV)/bin/python -c "import modelopt.onnx.quantization"
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(MODELOPT_VENV) $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache
