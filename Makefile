# Two set-up commands: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-slow test-browser chromium console-screenshots lint typecheck cypher-lint bench bench-ingest install clean softhsm

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## Start the API on the embedded SQLite store (creates ./.idgraph with a local key on first run).
run: $(STAMP)
	$(VENV)/bin/idgraph serve

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

## Lint every Cypher constant offline (needs node+npm; skipped with a message otherwise).
cypher-lint: $(STAMP)
	@bash scripts/cypher-lint.sh

## The whole default suite: lint, types, Cypher lint, tests (no network, no Docker).
## The browser tests are not part of it (they need Chromium): `make test-browser`.
test: lint typecheck cypher-lint
	$(PY) -m pytest -m "not slow and not browser"

CHROMIUM ?= /usr/bin/chromium

## Debian's Chromium for the browser tests (apt-get; Playwright never downloads a browser).
chromium:
	@if [ -x "$(CHROMIUM)" ]; then echo "chromium: $$($(CHROMIUM) --version)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	else echo "chromium missing: sudo apt-get install chromium (the browser tests skip without it)"; fi

## The console in a real browser (Playwright + Debian Chromium, headless).
test-browser: $(STAMP) chromium
	$(PY) -m pytest -m browser tests/browser

## Re-take the screenshots of docs/console.md (runs the browser tests).
console-screenshots: $(STAMP) chromium
	IDGRAPH_SCREENSHOTS=docs/console $(PY) -m pytest -m browser tests/browser -q

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

## Every benchmark, written to bench/REPORT.md with plots: SCALE=small (default), 1m or tiny.
bench: $(STAMP)
	$(PY) bench/report.py --scale $(or $(SCALE),small)

## The ingest benchmark alone, printed: SCALE=small (default) or SCALE=1m.
bench-ingest: $(STAMP)
	$(PY) bench/ingest.py --scale $(or $(SCALE),small)

## SoftHSM2 from Debian for the PKCS#11 key-provider tests (tests/test_pkcs11.py); .ci/run uses it.
softhsm:
	@command -v softhsm2-util >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq softhsm2; }
	@softhsm2-util --version

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
