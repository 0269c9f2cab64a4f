# Two set-up commands: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-slow lint typecheck cypher-lint bench bench-ingest pii-model install clean softhsm

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
test: lint typecheck cypher-lint
	$(PY) -m pytest -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

## Every benchmark, written to bench/REPORT.md with plots: SCALE=small (default), 1m or tiny.
bench: $(STAMP)
	$(PY) bench/report.py --scale $(or $(SCALE),small)

## The ingest benchmark alone, printed: SCALE=small (default) or SCALE=1m.
bench-ingest: $(STAMP)
	$(PY) bench/ingest.py --scale $(or $(SCALE),small)

## Retrain the PII NER model into privacy/scanning/models/pii_ner (seeded, CPU, minutes).
## Prints the fingerprint: pin it as PII_NER_MODEL_SHA256 and update the model card.
pii-model: $(STAMP)
	$(PY) -m tools.pii_model.train --figures privacy/scanning/models/training-figures.json

## SoftHSM2 from Debian for the PKCS#11 key-provider tests (tests/test_pkcs11.py); .ci/run uses it.
softhsm:
	@command -v softhsm2-util >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq softhsm2; }
	@softhsm2-util --version

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
