# Set-up and everyday commands; each target creates the virtual environment in .venv on first use
# and installs the extras it needs (pyproject.toml):
#   make install     prune_core and the sweep app ([sweeps])
#   make demo        a short Optuna study of pruning settings on MNIST-1D, tracked in MLflow ([analysis])
#   make test        lint, then every test ([test]; what CI runs)
#   make test-fast   lint, then the tests not marked slow
#   make lint        ruff (lint and format) over the whole repository, mypy strict on prune_core
#   make bench       every benchmark ([bench]); results in benchmarks/results/
VENV ?= .venv
PY := $(VENV)/bin/python
# torchvision pins the matching torch; both are plain PyPI releases.
TORCH := torch==2.14.1 torchvision==0.29.1
TESTED := prune_core sweeps optuna_sweep hydra_plugins analysis tests

.PHONY: install demo test test-fast lint bench

$(VENV)/bin/python:
	python3 -m venv $(VENV)

# One stamp per extra: pip adds only what that extra needs beyond what is installed.
$(VENV)/.installed-%: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet $(TORCH) -e ".[$*]"
	touch $@

install: $(VENV)/.installed-sweeps

demo: $(VENV)/.installed-analysis
	$(PY) -m sweeps.run -m

lint: $(VENV)/.installed-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# pytest-xdist workers; the app's processes they start are CPU-bound, so one torch thread each.
WORKERS ?= 4
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(WORKERS) --dist worksteal --doctest-modules

test: lint
	$(PYTEST) $(TESTED)

test-fast: lint
	$(PYTEST) -m "not slow" $(TESTED)

bench: $(VENV)/.installed-bench
	$(PY) -m benchmarks.graph_zoo
	$(PY) -m benchmarks.timm_zoo
	$(PY) -m benchmarks.timm_zoo --set transformers
	$(PY) -m benchmarks.model_zoo
	$(PY) -m benchmarks.torchvision_zoo
	$(PY) -m benchmarks.hf_zoo
	$(PY) -m benchmarks.smp_zoo
	$(PY) -m benchmarks.criteria
	$(PY) -m benchmarks.criteria_2d
	$(PY) -m benchmarks.criteria_vit
	$(PY) -m benchmarks.overhead
	$(PY) -m benchmarks.inference
	$(PY) -m benchmarks.pruners
	$(PY) -m benchmarks.sweep_overhead
	$(PY) -m benchmarks.scale_out
	$(PY) -m benchmarks.data_throughput
	$(PY) -m benchmarks.distributed
