# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?= -n 2 --durations=15

.PHONY: demo test venv install install-test benchmarks docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[hpc]"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[hpc,test]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/fmri-pain demo demo-output

test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

benchmarks: install-test
	$(BIN)/python benchmarks/run_all.py

docs: install
	$(BIN)/python -m fmri_pain.config.schema > docs/spec.schema.json
	$(BIN)/python -m fmri_pain.config.docs > docs/spec.md
	$(BIN)/python -m fmri_pain.config.spec > pipelines/trial.yaml

clean:
	rm -rf demo-output work .pytest_cache
