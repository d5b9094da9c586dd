# Two commands do everything: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tinyinterp-installed
CONSTRAINTS := requirements/constraints.txt
export PYTHONHASHSEED := 0
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup test demo bench clean

setup: $(STAMP)

# Re-installs only when pyproject.toml or the pins change; otherwise a no-op.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[dev]"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Trains nothing: a tour of the bundled one-layer model, then the explorer on it (Ctrl-C to stop).
demo: setup
	$(PY) -m tinyinterp.demo
	$(PY) -m tinyinterp explore checkpoints/ts-1l

bench: setup
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
