# raylane: `make demo` runs the fraud pipeline on the embedded stack; `make test` runs the suite.
# Both set themselves up idempotently on a machine with only Python 3.11+ and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RATE     ?= 300
DURATION ?= 60
PYTEST_ARGS ?=

.PHONY: setup notebooks demo test test-unit test-integration test-e2e bench lint typecheck clean stack-down

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; v=sys.version_info; sys.exit(0 if v >= (3, 11) else "raylane needs Python 3.11+, found %d.%d; set PYTHON=python3.11" % v[:2])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# JupyterLab on 127.0.0.1 (with its login token) in notebooks/; `make demo` in another
# terminal gives the notebooks a running pipeline to read.
notebooks: setup $(VENV)/.notebooks
	$(BIN)/jupyter lab --ip 127.0.0.1 --no-browser --notebook-dir notebooks

$(VENV)/.notebooks: $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,notebooks]'
	@touch $@

demo: setup
	$(BIN)/raylane demo --rate $(RATE) --duration $(DURATION)

test: setup lint typecheck
	$(BIN)/python -m pytest tests $(PYTEST_ARGS)

test-unit: setup
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: setup
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: setup
	$(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/pipeline.py

lint: setup
	$(BIN)/ruff check platform tests bench models
	$(BIN)/ruff format --check platform tests bench models
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy platform/raylane

stack-down:
	-$(BIN)/raylane dev down

clean: stack-down
	rm -rf $(VENV) .raylane features/data
