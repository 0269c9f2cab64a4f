# Two set-up commands: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Two install stamps: `make run` needs the runtime dependencies only; the dev tools (linters,
# test runners, fuzzers, plotting) come with `make test` and every other developer target, and
# are added on top of the same venv. A change to pyproject.toml re-runs `pip install` into the
# existing venv (pip only fetches what is missing); the venv itself is made once.
VENV_CFG  := $(VENV)/pyvenv.cfg
RUN_STAMP := $(VENV)/.installed-run
STAMP     := $(VENV)/.installed-dev

.PHONY: run test test-slow test-browser chromium console-screenshots test-consent-diff mutation lint \
	typecheck cypher-lint bench bench-ingest pii-model install clean softhsm kafka kafka-stop \
	kafka-status test-kafka

$(VENV_CFG):
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(VENV_CFG)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	@touch $@

$(STAMP): pyproject.toml clients/python/pyproject.toml $(RUN_STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]' -e ./clients/python
	@touch $@

## Runtime and dev dependencies (what `make test` installs).
install: $(STAMP)

## Start the API on the embedded SQLite store (creates ./.idgraph with a local key on first run).
## `make run STORE=neo4j`: on the local Neo4j instead (started if needed; see `make neo4j`).
run: $(RUN_STAMP)
ifeq ($(STORE),neo4j)
	@$(MAKE) --no-print-directory run-neo4j
else
	$(VENV)/bin/idgraph serve
endif

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

## Consent decoders against IAB's own JS libraries (npm), 10,000 random states per GPP section.
test-consent-diff: $(STAMP)
	$(PY) -m pytest -m slow tests/privacy/consent/test_consent_diff.py
## Mutation testing of the decision core (slow, ~20-40 min on 2 cores; not part of `make test`):
## prints `mutation score <module>: NN.N %` per module and the survivors not in
## scripts/mutation_equivalents.toml; fails below 95 % for any of the five modules. Modules and the tests that may kill their mutants: [tool.mutmut] in pyproject.toml.
mutation: $(STAMP)
	$(PY) scripts/mutation.py

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

## Retrain the PII NER model into privacy/scanning/models/pii_ner (seeded, CPU, minutes).
## Prints the fingerprint: pin it as PII_NER_MODEL_SHA256 and update the model card.
pii-model: $(STAMP)
	$(PY) -m tools.pii_model.train --figures privacy/scanning/models/training-figures.json

## SoftHSM2 from Debian for the PKCS#11 key-provider tests (tests/privacy/keys/test_pkcs11.py); .ci/run uses it.
softhsm:
	@command -v softhsm2-util >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq softhsm2; }
	@softhsm2-util --version

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache mutants

# ---- Neo4j without Docker (issue 11; docs/neo4j.md) -------------------------------------------
# A local Neo4j Community 5.26 from Maven Central (tools/neo4j-server), Bolt on 127.0.0.1 on a
# port chosen at start (NEO4J_PORT=0) unless NEO4J_PORT is set; data and the generated password
# (0600) under $(NEO4J_HOME).
NEO4J_HOME ?= $(or $(IDGRAPH_DATA_DIR),.idgraph)/neo4j
NEO4J_PORT ?= 0
NEO4J_TOOL := $(PYTHON) tools/neo4j_local.py

.PHONY: neo4j neo4j-stop run-neo4j test-neo4j test-neo4j-slow

## Start the local Neo4j in the background, wait until Bolt answers, print its URI.
neo4j:
	@$(NEO4J_TOOL) start --home $(NEO4J_HOME) --port $(NEO4J_PORT)

## Stop it (SIGTERM: a clean shutdown).
neo4j-stop:
	@$(NEO4J_TOOL) stop --home $(NEO4J_HOME)

$(VENV)/.installed-neo4j: pyproject.toml $(RUN_STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[neo4j]'
	@touch $@

run-neo4j: $(VENV)/.installed-neo4j
	@$(NEO4J_TOOL) start --home $(NEO4J_HOME) --port $(NEO4J_PORT) >/dev/null
	@export IDGRAPH_STORE_URL="$$(cat $(NEO4J_HOME)/bolt-uri)" \
	        IDGRAPH_NEO4J_PASSWORD_FILE="$(abspath $(NEO4J_HOME))/password"; \
	 echo "store: $$IDGRAPH_STORE_URL (make neo4j-stop stops it)"; \
	 $(VENV)/bin/idgraph store migrate && exec $(VENV)/bin/idgraph serve

# The store-facing suites on a throwaway live Neo4j (its own temp home, port chosen at start,
# stopped and deleted afterwards): the contract suite's Neo4j cases, then the API-level tests
# with IDGRAPH_TEST_STORE=neo4j. A skip in this run fails it (tests/conftest.py).
NEO4J_API_TESTS := tests/api/test_api.py tests/identity/test_resolution.py tests/identity/test_unlink_explain.py \
	tests/api/test_facts_api.py tests/api/test_consent_api.py tests/api/test_reads_api.py \
	tests/privacy/dsr/test_erasure.py tests/identity/store/test_store_copy.py tests/identity/store/test_concurrent_writes.py \
	tests/identity/store/test_neo4j_live.py tests/identity/store/test_neo4j_ambiguous_commit.py tests/identity/store/test_crash_safety.py tests/privacy/access/test_message_ids.py

## The contract suite and the store-facing API tests on a throwaway live Neo4j (0 skips).
test-neo4j: $(STAMP)
	@$(NEO4J_TOOL) run -- env IDGRAPH_TEST_STORE=neo4j sh -c '\
	  $(PY) -m pytest -p no:cacheprovider -q tests/contract -m neo4j && \
	  $(PY) -m pytest -p no:cacheprovider -q $(NEO4J_API_TESTS) -m "not sqlite_only and not slow"'

## The slow SIGKILL crash suite (20 server kills with PII scanning, a bulk file killed 5 times)
## with the service's graph in a throwaway live Neo4j.
test-neo4j-slow: $(STAMP)
	@$(NEO4J_TOOL) run -- env IDGRAPH_TEST_STORE=neo4j \
	  $(PY) -m pytest -p no:cacheprovider -q tests/identity/store/test_crash_safety.py -m "slow and not sqlite_only"
# ---- end Neo4j --------------------------------------------------------------------------------
