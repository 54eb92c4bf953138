# Every target creates .venv on first use and installs occfeat into it with the exact versions of constraints.txt.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Test processes (pytest-xdist): most tests run one intra-op thread, so two processes use two cores.
WORKERS ?= 2

.PHONY: venv demo test test-fast bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

demo: venv
	$(BIN)/occfeat demo

test: venv
	$(BIN)/ruff check occfeat tests bench examples
	$(BIN)/python -m pytest -q -n $(WORKERS)

test-fast: venv
	$(BIN)/python -m pytest -q -n $(WORKERS) -m "not slow"

bench: venv
	$(BIN)/python bench/models.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
