# qasid: `make demo` runs the pipeline offline on bundled data; `make test` installs and tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINTED := pipeline tests $(wildcard bench scripts)

.PHONY: install native demo test test-pure lint format bench eval lock clean serve browser

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP) native

# The hot pure modules compiled to C by mypyc (pipeline/native.py); without a C compiler
# the Python sources run. CI (CI=true) insists on the compiled modules.
native: $(STAMP)
	$(BIN)/python scripts/build_native.py $(if $(CI),--strict)

demo: install
	$(BIN)/qasid demo

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

test: lint browser native
	$(BIN)/pytest -n 2 -q $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-pure

# The compiled modules' tests again on their Python sources (what runs without a compiler).
PURE_TESTS := tests/unit/test_digest.py tests/unit/test_digest_render.py \
	tests/unit/test_reader_hits.py tests/unit/test_text.py tests/unit/test_native.py
test-pure: $(STAMP)
	QASID_PURE_PYTHON=1 $(BIN)/pytest -n 2 -q $(PURE_TESTS)

# The browser tests drive Debian's Chromium (Playwright never downloads a browser here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "note: chromium is not installed; browser tests will be skipped (apt-get install chromium)"; \
	  fi; }

bench: install
	$(BIN)/python -m bench.run_all

eval: $(STAMP)
	$(BIN)/python -m pipeline.evaluate

# Regenerate the lock file after changing dependencies in pyproject.toml.
lock:
	$(BIN)/python -m pip install -q uv
	$(BIN)/uv pip compile pyproject.toml --extra dev -o requirements.lock -q

clean:
	rm -rf var $(VENV) build/native
	find pipeline -name '*.so' -delete
