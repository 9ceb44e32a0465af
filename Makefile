# session-sidecar: every entry point a developer or CI needs.
# `make test` works on a fresh clone with Python 3.11 and make; as root it also installs the
# Debian tools the integration tests drive (node, go, nginx, chromium, ...). The README's
# "What make test does to this machine" says what that installs, takes and leaves behind.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config/proxy.yaml
# `make run` and `make check-config` need only the runtime dependencies, so they get their own
# environment: the project (editable) and pyproject.toml's `dependencies`, no test extras.
# du -sh on x86_64 Linux, Python 3.11, 2026-12-03: .venv-run 73 MB, .venv (with `test`) 482 MB.
RUN_VENV ?= .venv-run
RUN_BIN  := $(RUN_VENV)/bin

.PHONY: help deps venv run-venv lint test test-subset test-unit test-integration run check-config \
	bench bench-codec soak clean distclean

help:
	@echo "make run          the proxy on $(CONFIG), from $(RUN_VENV) (runtime dependencies only)"
	@echo "make test         lint + type-check + the whole test suite (as root: installs Debian tools)"
	@echo "make test-subset  only the tests that need neither root nor Debian packages"
	@echo "make distclean    make clean, and remove what make test left outside the repository"
	@echo "make bench-codec  codec timings beside the bare primitives"
	@echo "make bench        the sidecar beside nginx, a bare proxy and Apache (docs/benchmarks.md)"

deps:
	@bash scripts/install-system-deps.sh

$(BIN)/.installed: pyproject.toml
	@echo "[make venv] $(VENV): the project and its test extras from PyPI (usually 20 s with pip's cache warm, longer the first time; 490 MB)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

venv: $(BIN)/.installed

$(RUN_BIN)/.installed: pyproject.toml
	@echo "[make run-venv] $(RUN_VENV): the project's runtime dependencies (usually 30 s, 73 MB)"
	$(PYTHON) -m venv $(RUN_VENV)
	$(RUN_BIN)/pip install --quiet --upgrade pip
	$(RUN_BIN)/pip install --quiet -e .
	@touch $@

run-venv: $(RUN_BIN)/.installed

lint: venv
	$(BIN)/ruff check proxy tests scripts examples adapters/flask adapters/django adapters/asgi
	$(BIN)/ruff format --check proxy tests scripts examples adapters/flask adapters/django adapters/asgi
	$(BIN)/mypy

test: deps venv lint
	$(BIN)/pytest -q -p no:cacheprovider tests

# Not what CI runs: the tests marked `system` (they drive a tool from `make deps`, or need root)
# are left out, and both ends of the run say so.
SUBSET_BANNER := !!! SUBSET: only the tests that need neither root nor the Debian packages of \
	make deps; the tests marked system do NOT run. make test runs the whole suite.
test-subset: venv lint
	@echo '$(SUBSET_BANNER)'
	@$(BIN)/pytest -q -p no:cacheprovider -m "not system" tests; status=$$?; \
	  echo '$(SUBSET_BANNER)'; exit $$status

test-unit: venv
	$(BIN)/pytest -q tests/unit

test-integration: deps venv
	$(BIN)/pytest -q tests/integration

# exec: the proxy replaces the shell, so a SIGTERM, SIGINT or SIGHUP sent to its pid is its own.
run: run-venv
	SESSION_SECRET=$${SESSION_SECRET:-dev-only-secret-change-me-0123456789abcdef} \
	  exec $(RUN_BIN)/session-sidecar serve -c $(CONFIG)

check-config: run-venv
	SESSION_SECRET=$${SESSION_SECRET:-dev-only-secret-change-me-0123456789abcdef} \
	  $(RUN_BIN)/session-sidecar check-config -c $(CONFIG)

bench-codec: venv
	$(BIN)/python scripts/bench_codec.py

# About 5 minutes. BENCH_ARGS for a quick or partial run, e.g.
#   make bench BENCH_ARGS="--rounds 1 --seconds 2 --rows none,hit4"
# (scripts/bench_proxy.py --help lists them all; docs/benchmarks.md says what it measures).
BENCH_ARGS ?=
$(BIN)/.bench-installed: $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[test,bench]'
	@touch $@

bench: deps venv $(BIN)/.bench-installed
	bash scripts/bench.sh $(BENCH_ARGS)

# Not in CI: 1,000,000 requests of sessions, uploads, downloads and WebSockets (about 25 min on
# a 2-core machine); fails on any error or if the proxy's RSS or fds are not flat within 10%.
soak: venv
	$(BIN)/python scripts/soak.py --requests 1000000

clean:
	rm -rf $(VENV) $(RUN_VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
	rm -rf adapters/*/build adapters/*/*.egg-info

# What `make test` left outside the repository (scripts/distclean.sh lists it); never a package.
distclean: clean
	@bash scripts/distclean.sh
