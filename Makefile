# The two commands that work on a fresh machine with only Python 3.11:
#   make demo   creates .venv, installs, runs the built-in demo end to end
#   make test   creates/updates .venv, runs the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench bench-accuracy bench-accuracy-seeds bench-conversion venv clean system-deps

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/xception-edge demo

# OpenSSH for the ssh device tests: installed when missing and we are root (else they skip).
system-deps:
	@sh .ci/system-deps

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

# The suite without the tests marked slow (fresh venv installs, the wheel build, the demo).
test-fast: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) demo-artifacts demo-artifacts-report .pytest_cache

# The performance benchmark (not a test): full-size Xception, every target, ~20 minutes.
bench: $(STAMP)
	$(BIN)/python bench/run_matrix.py
	$(MAKE) bench-accuracy
	$(MAKE) bench-accuracy-seeds
	$(MAKE) bench-conversion

# Conversion cost of full-size Xception (#13): the three int8 targets and --target all, wall time and
# peak RSS of the process tree, beside each vendor's recipe run by hand: bench/conversion.{json,md}, ~25 minutes.
bench-conversion: $(STAMP)
	$(BIN)/python bench/conversion_cost.py

# int8 accuracy on the demo's val_hard, each int8 target (with each transform) beside each
# vendor's default recipe, latency side by side: bench/accuracy.{json,md}, ~15 minutes (AdaRound included).
bench-accuracy: $(STAMP)
	$(BIN)/python bench/accuracy_table.py

# The same int8 targets over 5 calibration draws (mean and spread: how the defaults were chosen):
# bench/accuracy_seeds.{json,md}, ~25 minutes.
bench-accuracy-seeds: $(STAMP)
	$(BIN)/python bench/accuracy_seeds.py
