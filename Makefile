# One venv, installed from pyproject.toml pinned by constraints.txt; re-installs only when either changes.
# `make demo` needs only the CPU install; `make test` adds the test tools and the gpu extra (the native
# backends' CPU tests).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.spinbot-installed
DEV_STAMP := $(VENV)/.spinbot-dev-installed

.PHONY: install install-dev browser demo test bench clean

$(STAMP): pyproject.toml constraints.txt
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

test: install-dev browser
	$(BIN)/python -m pytest -q

bench: install-dev
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf spinbot-data spinbot-out .pytest_cache
