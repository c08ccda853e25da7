# One venv, installed from pyproject.toml pinned by constraints.txt; re-installs only when either changes.
# `make demo` needs only the CPU install; `make test` adds the test tools and the gpu extra (the native
# backends' CPU tests).
# The newest Python 3.11-3.13 that runs here (a pyenv shim without its version does not count), or PYTHON=.
ifeq ($(origin PYTHON),undefined)
PYTHON := $(firstword $(foreach v,3.13 3.12 3.11,$(shell python$(v) -c '' >/dev/null 2>&1 && echo python$(v))))
endif
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.spinbot-installed
DEV_STAMP := $(VENV)/.spinbot-dev-installed

.PHONY: install install-dev browser demo lint test bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || test -n "$(PYTHON)" || { echo "no python3.11, 3.12 or 3.13 found: set PYTHON=" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e .
	@touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,gpu]'
	@touch $(DEV_STAMP)

install: $(STAMP)

install-dev: $(DEV_STAMP)

browser:
	scripts/install-browser

demo: install
	$(BIN)/spinbot demo

# ruff (lint rules and format check) and mypy, configured in pyproject.toml (scripts/lint).
lint: install-dev
	VENV=$(VENV) scripts/lint

test: install-dev browser lint
	$(BIN)/python -m pytest -q

bench: install-dev
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf spinbot-data spinbot-out .pytest_cache
