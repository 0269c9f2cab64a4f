# Two set-up commands: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-slow lint typecheck cypher-lint bench bench-ingest install clean softhsm \
	kafka kafka-stop kafka-status test-kafka

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

## A local Apache Kafka broker (KRaft, from Maven Central; needs java 17+ and mvn), data in
## .idgraph/kafka. KAFKA_PORT=0 picks a free port; the default is the last port, else 9092.
KAFKA_SERVER := python3 tools/kafka-server/kafka_server.py
kafka:
	$(KAFKA_SERVER) start $(if $(KAFKA_PORT),--port $(KAFKA_PORT))

kafka-stop:
	$(KAFKA_SERVER) stop

kafka-status:
	$(KAFKA_SERVER) status

## The stream suites on a real broker, which the tests start on a free port and stop again
## (or KAFKA_BOOTSTRAP=host:port to use a running one). Includes the slow SIGKILL soak.
test-kafka: $(STAMP)
	IDGRAPH_TEST_KAFKA=1 $(PY) -m pytest -m kafka -p no:cacheprovider tests/stream

## SoftHSM2 from Debian for the PKCS#11 key-provider tests (tests/test_pkcs11.py); .ci/run uses it.
softhsm:
	@command -v softhsm2-util >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq softhsm2; }
	@softhsm2-util --version

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
