# Set-up and everyday commands. `make demo` runs the main job (a short Optuna study of pruning
# settings on MNIST-1D, tracked in MLflow), `make test` runs every test;
# both create the virtual environment in .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# torchvision pins the matching torch; both are plain PyPI releases.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test lint bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH) -e ".[test]"
	touch $@

demo: install
	$(PY) -m sweeps.run -m

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q --doctest-modules prune_core sweeps hydra_plugins analysis tests

bench: install
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m benchmarks.graph_zoo
	$(PY) -m benchmarks.timm_zoo
	$(PY) -m benchmarks.criteria
	$(PY) -m benchmarks.overhead
	$(PY) -m benchmarks.inference
	$(PY) -m benchmarks.sweep_overhead
	$(PY) -m benchmarks.scale_out
