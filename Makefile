# One venv, installed from pyproject.toml pinned by constraints.txt; re-installs only when either changes.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.spinbot-installed

.PHONY: install browser demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,gpu]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/spinbot demo

browser:
	scripts/install-browser

test: install browser
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf spinbot-data spinbot-out .pytest_cache
