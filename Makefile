# Two commands from a fresh clone: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export ECHOVIDS_MODEL_DIR ?= $(abspath ../shared/models)

.PHONY: install run test chromium bench-deps lint clean

# The browser tests (tests/test_web.py) drive a real chromium; `make test` installs Debian's when it can.
CHROMIUM ?= $(or $(ECHOVIDS_TEST_CHROMIUM),/usr/bin/chromium)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[search,embedder,dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/echovids serve

test: $(STAMP) chromium
	$(PY) -m pytest

# Root (CI, a container) installs chromium with apt; anyone else is told how, and the suite does not run without it.
chromium:
	@if ! command -v "$(CHROMIUM)" >/dev/null 2>&1; then \
		if [ "$$(id -u)" -eq 0 ]; then \
			echo "make: installing chromium for the browser tests (apt-get)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else \
			echo "make test: the browser tests need chromium at $(CHROMIUM) and this is not root." >&2; \
			echo "  Install it: sudo apt-get install -y chromium" >&2; \
			echo "  (or point ECHOVIDS_TEST_CHROMIUM at a chromium binary), then run make test again." >&2; \
			exit 1; \
		fi; \
	fi

# `echovids bench search` measures ScaNN against FAISS and hnswlib: their wheels are the [bench] extra.
bench-deps: $(STAMP)
	$(PY) -m pip install --quiet -e '.[search,embedder,dev,bench]'

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy echovids services evaluation benchmarks

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
