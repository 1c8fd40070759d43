# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench soak clean

$(BIN)/codat-expenses: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/codat-expenses
	$(BIN)/codat-expenses demo

test: $(BIN)/codat-expenses
	@# The dashboard's browser test drives Debian's chromium (Playwright downloads no browser);
	@# without it, and without root to install it, that test reports itself skipped.
	command -v chromium >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
		echo "chromium could not be installed: the dashboard's browser test will be skipped" >&2
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@# pytest's exit code 5 (no tests collected) is a failure, not a pass. Four workers: most
	@# tests wait on real servers and processes, so they overlap well on two cores.
	$(BIN)/pytest -m "not soak" -n 4; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

soak: $(BIN)/codat-expenses
	$(BIN)/pytest -m soak -s

bench: $(BIN)/codat-expenses
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	@# Quick mode (under 5 minutes on 2 cores) by default; FULL=1 runs the large sizes.
	$(BIN)/python -m bench $(if $(FULL),--full)

lint: $(BIN)/codat-expenses
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
