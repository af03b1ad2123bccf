# Local / CI set-up: a .venv in the repo root with the CPU build of torch.
# Cluster installs choose their own (CUDA) torch; see docs/cluster.md.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stylepath-installed

.PHONY: demo demo-radiology test lint bench bench-inversion clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/stylepath demo configs/demo.yaml

demo-radiology: $(STAMP)
	$(BIN)/stylepath demo configs/radiology_demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/tiling.py

bench-inversion: $(STAMP)
	PYTHONPATH=. $(BIN)/python bench/inversion.py --config configs/demo.yaml

clean-demo:
	rm -rf work/demo work/radiology_demo
