# Two commands a new user needs: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first: later dependencies accept it instead of pulling a CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	# constraints.txt pins the versions the suite was last green on (pyproject keeps ranges).
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/lorastudio demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# The edit-test loop: everything but the tests marked slow (longer tiny-model runs) and the
# PostgreSQL ones. `make test` above stays the full suite that CI and the README run.
test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow and not postgres"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) studio .pytest_cache
