# One command sets up and runs the demo; one sets up and runs the tests.
# Both create .venv on first use and reinstall when a pyproject changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.liveseg-installed
PLUGINS := $(wildcard plugins/*/pyproject.toml)
# cellpose 4 needs torchvision; these two are the CPU-usable pair this machine holds locally.
TORCH  := torch==2.14.1 torchvision==0.29.1

export QT_QPA_PLATFORM ?= offscreen

.PHONY: demo test test-fast lint typecheck bench clean

$(STAMP): pyproject.toml $(PLUGINS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,gui,dask,napari,formats]' $(foreach p,$(dir $(PLUGINS)),-e $(p))
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/liveseg run configs/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/acquisition_overhead.py

clean:
	rm -rf $(VENV) runs
