"""Shared fixtures: a real store (SQLite on a temp file, or the live Neo4j), the real app, keys.

``IDGRAPH_TEST_STORE=neo4j`` (set by ``make test-neo4j``, with ``NEO4J_URI``/``NEO4J_PASSWORD``
of the throwaway server it starts) makes the ``store`` fixture and the app's ``settings`` use the
live Neo4j, wiped before each test. Tests that inspect the SQLite graph file itself are marked
``sqlite_only`` and are deselected in that run (``-m "not sqlite_only"``), not skipped.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from bootstrap.container import Container, build_container
from bootstrap.logging import configure_logging
from bootstrap.settings import Settings
from identity.hashing import HashKey, Keyring
from identity.identifiers import NormalizedIdentifier
from identity.model import IdentityEvent
from identity.policy import IdentityPolicy, load_identity_policy
from identity.resolution import ResolutionEngine
from identity.store.port import GraphStore
from identity.store.sqlite import SqliteGraphStore
from privacy.access.api_keys import Scope
from privacy.keys.keyprovider import LocalFileKeyProvider, create_kek_file
from privacy.keys.vault import Vault
from privacy.keys.vault_sqlite import SqliteVaultKeyStore
from tests.support.neo4j_env import live_neo4j_settings

REPO = Path(__file__).resolve().parents[1]
POLICY_DIR = REPO / "policies"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def policy() -> IdentityPolicy:
    """The shipped identity policy."""
    return load_identity_policy(POLICY_DIR / "identity.yaml")


@pytest.fixture
def keyring() -> Keyring:
    """A one-key keyring with a random key."""
    return Keyring([HashKey("k1", secrets.token_bytes(32))], "k1")


TEST_STORE = os.environ.get("IDGRAPH_TEST_STORE", "sqlite")


def neo4j_test_settings() -> dict[str, str]:
    """Where the live Neo4j of this run is; a Neo4j run without one is an error, not a skip."""
    return live_neo4j_settings() or pytest.fail(
        "IDGRAPH_TEST_STORE=neo4j needs NEO4J_URI and NEO4J_PASSWORD (make test-neo4j)"
    )


def open_neo4j_test_store(*, wipe: bool) -> GraphStore:
    """The live Neo4j store of this run, emptied first when ``wipe``."""
    from identity.store.neo4j import Neo4jGraphStore

    where = neo4j_test_settings()
    opened = Neo4jGraphStore(
        where["uri"], where["user"], where["password"], database=where["database"]
    )
    if wipe:
        opened.wipe_for_tests()
    return opened


@pytest.fixture
def store(tmp_path: Path) -> Iterator[GraphStore]:
    """The real store: SQLite on a temp file, or the live Neo4j (wiped) in a Neo4j run."""
    opened = (
        open_neo4j_test_store(wipe=True)
        if TEST_STORE == "neo4j"
        else SqliteGraphStore(tmp_path / "graph.sqlite3")
    )
    yield opened
    opened.close()


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[Vault]:
    """The real vault: a generated KEK file and a key store in the temp dir."""
    create_kek_file(tmp_path / "kek.json", origin="generated")
    keys = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")
    yield Vault(keys, LocalFileKeyProvider(tmp_path / "kek.json"))
    keys.close()


@pytest.fixture
def engine(
    store: SqliteGraphStore, keyring: Keyring, policy: IdentityPolicy, vault: Vault
) -> ResolutionEngine:
    """A resolution engine on the temp store, sealing facts with the real vault."""
    return ResolutionEngine(store, keyring, policy, sealer=vault)


class Ids:
    """Helper to build normalized identifiers and events in tests."""

    def __init__(self, policy: IdentityPolicy) -> None:
        self.policy = policy

    def __call__(self, identifier_type: str, value: str) -> NormalizedIdentifier:
        return self.policy.normalize(identifier_type, value, "GB")

    def event(
        self, *pairs: tuple[str, str], source: str = "web", at: datetime = T0
    ) -> IdentityEvent:
        return IdentityEvent(tuple(self(t, v) for t, v in pairs), source, at)


@pytest.fixture
def ids(policy: IdentityPolicy) -> Ids:
    """Identifier builder."""
    return Ids(policy)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a test service in a temp data dir (on the live Neo4j in a Neo4j run)."""
    graph: dict[str, object] = {}
    if TEST_STORE == "neo4j":
        open_neo4j_test_store(wipe=True).close()
        where = neo4j_test_settings()
        graph = {
            "store_url": where["uri"],
            "neo4j_user": where["user"],
            "neo4j_password": where["password"],
            "neo4j_database": where["database"],
        }
    return Settings(
        env="test",
        data_dir=tmp_path / "data",
        policy_dir=POLICY_DIR,
        default_region="GB",
        max_batch_events=50,
        max_body_bytes=256 * 1024,
        **graph,  # type: ignore[arg-type]
    )


@dataclass
class Api:
    """The real app with a TestClient and API keys of each scope."""

    client: TestClient
    container: Container
    admin: dict[str, str]
    ingest: dict[str, str]
    resolve: dict[str, str]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Everything the service logs (JSON lines), captured for leak checks."""
    configure_logging("debug", json_output=True)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    handler.setFormatter(root.handlers[0].formatter)
    for existing_filter in root.handlers[0].filters:
        handler.addFilter(existing_filter)
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


@pytest.fixture
def api(settings: Settings, log_stream: io.StringIO) -> Iterator[Api]:
    """The real FastAPI app on the real store, with keys for each scope."""
    container = build_container(settings)
    headers = {}
    for scope in (Scope.ADMIN, Scope.INGEST, Scope.RESOLVE):
        _, token = container.api_keys.create(f"test-{scope}", frozenset({scope}))
        headers[scope] = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
        yield Api(
            client, container, headers[Scope.ADMIN], headers[Scope.INGEST], headers[Scope.RESOLVE]
        )
    container.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In a Neo4j run every selected test must run: a skip there fails the session."""
    if TEST_STORE != "neo4j":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and reporter is not None:
        reporter.write_line(f"{len(skipped)} test(s) skipped in a Neo4j run: that is a failure")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
