# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo lint test bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,parquet,ray,litellm]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shadowprice demo

# Style, lint (line length, complexity) and types, as configured in pyproject.toml. `make test`
# runs it first, so CI (.ci/run -> make test) refuses code that does not pass. Python files
# only: the docs' examples keep their hand-aligned comments.
PY_PATHS := src tests tools benchmarks
lint: $(STAMP)
	$(BIN)/ruff format --check $(PY_PATHS)
	$(BIN)/ruff check $(PY_PATHS)
	$(BIN)/mypy

# Starts the bundled llama.cpp server for the live engine tests (they skip, saying so, if it
# is not there; with SHADOWPRICE_REQUIRE_ENGINE=1, as in CI, a failed start fails the run).
# Two pytest processes, each taking whole files (module fixtures: one Ray, one LiteLLM proxy
# per file): the suite mostly waits on real servers and subprocesses, so two halve its time
# even on two cores; the slowest tests are printed.
test: lint
	@if bash tools/engine.sh start >/dev/null; then :; \
	elif [ "$${SHADOWPRICE_REQUIRE_ENGINE:-0}" = 1 ]; then echo "make test: engine failed to start" >&2; exit 1; \
	else echo "make test: local engine did not start; live engine tests will skip" >&2; fi
	@SHADOWPRICE_LLAMA_URL="$$(cat .cache/llama.url 2>/dev/null)" $(BIN)/python -m pytest \
		-n 2 --dist loadfile --durations=15; \
	rc=$$?; bash tools/engine.sh stop; exit $$rc

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_allocate.py

clean:
	rm -rf $(VENV) build dist *.egg-info
