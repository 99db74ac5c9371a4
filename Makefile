# Two commands: `make run` and `make test`. Both create or reuse .venv and are safe to repeat.
#   GPU=auto|1|0   pick the NVIDIA extras (onnxruntime-gpu, faiss-gpu) when nvidia-smi sees a GPU (default auto)
#   ARGS="..."      extra arguments for pipeline.py, e.g. make run ARGS="--config configs/cifar10_cpu.toml"
#   PYTEST_ARGS=... extra arguments for pytest, e.g. make test PYTEST_ARGS="-m 'not slow'"
PYTHON ?= python3
VENV ?= .venv
GPU ?= auto
ARGS ?=
PYTEST_ARGS ?=

ifeq ($(GPU),auto)
HAVE_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
else
HAVE_GPU := $(GPU)
endif
# onnxruntime/onnxruntime-gpu and faiss-cpu/faiss-gpu install the same modules: exactly one extra is chosen.
EXTRA := $(if $(filter 1,$(HAVE_GPU)),gpu,cpu)
OTHER_PKGS := $(if $(filter 1,$(HAVE_GPU)),onnxruntime faiss-cpu,onnxruntime-gpu faiss-gpu-cu12)
VPY := $(VENV)/bin/python
STAMP_RUN := $(VENV)/.installed-$(EXTRA)
STAMP_TEST := $(VENV)/.installed-$(EXTRA)-test

.PHONY: run test bench venv wheel clean-venv help

help:
	@echo "make run   - set up .venv ($(EXTRA) extras) and run python pipeline.py $(ARGS)"
	@echo "make test  - set up .venv with test extras and run the test suite"
	@echo "make bench - run the benchmark scripts (see README)"
	@echo "make wheel - build dist/edge_encoder-*.whl, the device install (copy it with the bundle)"

$(VPY):
	@echo ">> creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(VPY)
	@echo ">> installing the project with the '$(EXTRA)' extras into $(VENV)"
	-@$(VPY) -m pip uninstall --quiet --yes $(OTHER_PKGS) >/dev/null 2>&1
	$(VPY) -m pip install --quiet --editable ".[train,$(EXTRA)]"
	@touch $@

$(STAMP_TEST): pyproject.toml $(STAMP_RUN)
	@echo ">> installing the test extras into $(VENV)"
	$(VPY) -m pip install --quiet --editable ".[train,$(EXTRA),test]"
	@touch $@

venv: $(STAMP_RUN)

run: $(STAMP_RUN)
	@echo ">> python pipeline.py $(ARGS)"
	$(VPY) pipeline.py $(ARGS)

test: $(STAMP_TEST)
	@echo ">> pytest $(PYTEST_ARGS)"
	$(VPY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP_TEST)
	@echo ">> benchmarks (writes benchmarks/results/); lightly's MoCo blocks are the training reference"
	$(VPY) -m pip install --quiet --no-deps "lightly>=1.5"
	$(VPY) -m pip install --quiet "lightning-utilities>=0.10"  # lightly.transforms (time_to_accuracy.py)
	$(VPY) benchmarks/run_all.py

# The wheel a device installs (the base install has no torch: see README "Deployment").
wheel: $(VPY)
	rm -rf build  # a stale build/lib could carry modules that no longer exist
	$(VPY) -m pip wheel --quiet --no-deps --wheel-dir dist .
	@ls dist/edge_encoder-*.whl

clean-venv:
	rm -rf $(VENV)
