# Two commands a new user needs: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Where torch comes from; empty: pip's configured index (PyPI, or the local wheel mirror CI uses).
# PyPI's Linux torch is the CUDA build (GBs): on a CPU-only machine
# `make install TORCH_INDEX=https://download.pytorch.org/whl/cpu` takes the CPU build instead.
TORCH_INDEX ?=

.PHONY: install demo test test-fast lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first (from TORCH_INDEX when set): later dependencies accept it instead of pulling another build.
	$(BIN)/pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	# constraints.txt pins the versions the suite was last green on (pyproject keeps ranges).
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/lorastudio demo

# Two workers (pytest-xdist), one torch thread each: the tiny-model tests are small ops, and the
# served/browser tests wait on processes, so two at once finish in ~60 % of the serial time. loadfile:
# a test file runs on one worker, so its module fixtures (a served studio) are built once and its
# tests may build on each other.
test: $(STAMP)
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile

# The edit-test loop: everything but the tests marked slow (longer tiny-model runs) and the
# PostgreSQL ones. `make test` above stays the full suite that CI and the README run.
test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow and not postgres"

# The CPU benchmarks (issue 18): lorastudio's path beside the plain diffusers/peft one, same model and
# run; figures go into benchmarks/RESULTS.md. About 10 minutes on 2 cores (first run: +1 min to write
# the 2 GB random-weight SD1.5 file and a 4 GB diffusers folder of it into ~/.cache/lorastudio-bench,
# kept for the next run; delete that folder to free them). The GPU set: benchmarks/gpu.sh.
bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/load.py --families sd15 --repeats 2
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/lora_stack.py --repeats 2
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/generate.py --shape sd15-full --sizes 64,256 --steps 4 --repeats 2
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/train.py --model "" --shapes sd15 --resolutions 64,256 --batch 1 --steps 8 --warmup 2 --images 2 --models-dir ~/.cache/lorastudio-bench
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/cpu_user.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) studio .pytest_cache
