# coviu-agent: the two commands a new machine needs are `make demo` and `make test`.
# Only python3 (>= 3.11) and make are assumed; everything else is installed into .venv from uv.lock.

PYTHON ?= python3
VENV := .venv
UV_HOME := .uv
UV := $(UV_HOME)/bin/uv
UV_VERSION := 0.13.9
BIN := $(VENV)/bin
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export LANGGRAPH_CLI_NO_ANALYTICS := 1
export LANGGRAPH_NO_VERSION_CHECK := true
export LANGSMITH_TRACING := false

.PHONY: install demo test check lint typecheck unit fast soak studio bench eval clean

$(UV):
	$(PYTHON) -m venv $(UV_HOME)
	$(UV_HOME)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	@touch $@

install: $(VENV)/.installed

## make demo: the main job on the embedded sandbox (triage, then the nightly audit); `--sandbox` asks for it, and
## leaves any Truto account in `.env` alone.
demo: install
	$(BIN)/coviu-agent --sandbox tools
	$(BIN)/coviu-agent --sandbox triage "A priority patient needs a duty nurse now" --patient-name "Ava Jenkins"
	$(BIN)/coviu-agent --sandbox audit --out reports

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest

## make test: lint, types, then the whole test suite (about 15 minutes on 2 cores); says how long it took.
test:
	@start=$$(date +%s); status=0; \
	$(MAKE) --no-print-directory lint typecheck unit || status=$$?; \
	elapsed=$$(( $$(date +%s) - start )); \
	echo "make test: $$( [ $$status = 0 ] && echo passed || echo FAILED ) in $$((elapsed / 60)) min $$((elapsed % 60)) s"; \
	exit $$status

## make check: the quick loop: lint, types, and the tests that are neither end to end nor slow (about 3 minutes).
check:
	@start=$$(date +%s); status=0; \
	$(MAKE) --no-print-directory lint typecheck fast || status=$$?; \
	elapsed=$$(( $$(date +%s) - start )); \
	echo "make check: $$( [ $$status = 0 ] && echo passed || echo FAILED ) in $$((elapsed / 60)) min $$((elapsed % 60)) s"; \
	exit $$status

fast: install
	$(BIN)/pytest -q -m "not e2e and not slow"

## make soak: the scenario tests on many random sandbox profiles (SOAK_SEEDS, default 1-50). `make test` runs
## default, variant, random-1 and random-2; a failing random-<seed> replays with
## `coviu-agent sandbox serve --profile random --seed <seed>`.
SOAK_SEEDS ?= 1-50
soak: install
	COVIU_TEST_PROFILE_SEEDS=$(SOAK_SEEDS) $(BIN)/pytest -q -m "not e2e" -k "random-" \
		tests/test_triage.py tests/test_audit.py tests/test_assistant.py tests/test_recordings.py \
		tests/test_fault_matrix.py tests/test_mcp.py tests/test_upstream_errors.py

## make eval: the planner evals (evals/) on scripted models on every sandbox profile (also part of `make test`);
## `coviu-agent eval --base-url URL --model M` runs the same cases against a real OpenAI-compatible endpoint.
eval: install
	$(BIN)/pytest -q tests/test_evals.py

## make studio: the graphs on a local LangGraph dev server; Studio (LangSmith's web UI) connects to it. The URL printed
## is the one the server bound; STUDIO_PORT (default: 2024, else the next free port) busy: refused. State per port.
STUDIO_HOST ?= 127.0.0.1
STUDIO_PORT ?=
studio: install
	COVIU_AGENT_SANDBOX=1 $(BIN)/python -m agent.studio $(STUDIO_HOST) $(STUDIO_PORT)

## make bench: audit, naive and peer clients side by side, two processes on one account, the summary cache, triage
## and start-up (N=200, a few minutes; BENCH_ARGS="--n 1000 --runs 3" for more). bench/README.md has the figures.
BENCH_ARGS ?=
bench: install
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(UV_HOME) .pytest_cache .mypy_cache .ruff_cache
