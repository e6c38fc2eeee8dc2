# `make demo` and `make test` work on a fresh machine: each sets up .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO ?= demo-out

.PHONY: setup test demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

test: setup
	$(BIN)/python -m pytest

demo: setup
	rm -rf $(DEMO)
	$(BIN)/physiofm synth challenge $(DEMO)/raw/challenge --records 300 --seed 0
	$(BIN)/physiofm build ecg $(DEMO)/raw/challenge $(DEMO)/ecg-store

bench: setup
	$(BIN)/python bench/build_ecg.py

clean:
	rm -rf $(VENV) $(DEMO) bench-out .pytest_cache
