# Two commands matter: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The demo needs the runtime dependencies only (a smaller, faster first install); the test
# extras come with the first `make test`.
RUNTIME := $(VENV)/.runtime

.PHONY: demo test faults check lint typecheck fmt clean bench

$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(RUNTIME)
	$(BIN)/nightowl dev --triggers examples.demo

# scripts/test-services.sh installs what the suite needs where it can (or names the command)
# and starts Redis, PostgreSQL and RabbitMQ when they are down.
test: $(STAMP)
	./scripts/test-services.sh
	$(BIN)/python -m pytest -n 2 -m "not faults" $(PYTEST_ARGS)

# The fault harness (tests/faults): real deployments under injected faults, one scenario at
# a time; then the fault matrix in docs/reliability.md is regenerated from the results,
# whether or not every scenario passed.
faults: $(STAMP)
	./scripts/test-services.sh
	$(BIN)/python -m pytest -n 0 -m faults tests/faults $(PYTEST_ARGS); status=$$?; \
	$(BIN)/python -m tests.faults.report; exit $$status

# Seconds, and no Redis or PostgreSQL: lint, format, types and the unit tier (tests/README.md).
check: lint
	$(BIN)/python -m pytest -n 0 tests/unit $(PYTEST_ARGS)

# ruff over the whole tree, tests included; mypy over scheduler, triggers, agents and tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

typecheck: $(STAMP)
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The benchmarks of the real processes (docs/performance.md); BENCH_ARGS="--quick --json" is
# the smoke test .ci/run runs. The peers (RedBeat, APScheduler) are the `bench` extra.
# Only the benchmarks' report goes to stdout (set-up output to stderr), so `--json` pipes.
bench: $(VENV)/.bench
	@./scripts/test-services.sh >&2
	@$(BIN)/python -m benchmarks $(BENCH_ARGS)

$(VENV)/.bench: $(STAMP)
	@$(BIN)/python -m pip install --quiet -e ".[bench]" >&2
	@touch $@

clean:
	rm -rf $(VENV) .nightowl .pytest_cache .mypy_cache .ruff_cache
