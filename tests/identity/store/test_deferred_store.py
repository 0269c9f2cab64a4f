"""The store a server connects in the background (identity/store/deferred.py): not ready with a
reason while connecting, start-up work before anything else may use it, bounded retries.

The store behind it is the real SQLite store; only its opener fails on purpose for a while, as a
database that is still starting does. The live-Neo4j version (a real server answering /readyz 503
then 200) is in tests/identity/store/test_neo4j_live.py.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from identity.errors import ConfigurationError, StoreUnavailableError
from identity.store.deferred import DeferredGraphStore, StoreState
from identity.store.port import GraphStore
from identity.store.sqlite import SqliteGraphStore


class _StartsLate:
    """Opens the real SQLite store, but only once ``gate`` is set (refused until then)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.gate = threading.Event()
        self.attempts = 0

    def __call__(self) -> GraphStore:
        self.attempts += 1
        if not self.gate.is_set():
            raise StoreUnavailableError("connection refused (test database still starting)")
        return SqliteGraphStore(self.path)


def test_not_ready_with_the_reason_until_connected_then_start_up_work_runs_first(
    tmp_path: Path,
) -> None:
    opener = _StartsLate(tmp_path / "graph.sqlite3")
    ran_first: list[str] = []
    store = DeferredGraphStore(opener, timeout_s=60, name="test store")

    def start_up_work() -> None:
        # Runs on the connecting thread, which alone may use the store meanwhile.
        ran_first.append(f"{store.stats().persons} persons")
        assert store.state is StoreState.RECOVERING

    store.on_connected = start_up_work
    store.start()
    try:
        with pytest.raises(StoreUnavailableError, match="not ready"):
            store.ping()
        with pytest.raises(StoreUnavailableError):
            store.read(lambda tx: tx.person("p_x"))
        assert store.wait(1.0) is StoreState.CONNECTING  # still retrying
        assert opener.attempts >= 2
        assert "not reachable yet" in store.reason
        assert "still starting" in store.reason
        opener.gate.set()
        assert store.wait(30) is StoreState.READY
        store.ping()
        assert store.read(lambda tx: tx.person("p_x")) is None
        assert ran_first == ["0 persons"]
        assert store.reason == "ready"
    finally:
        store.close()
    assert store.state is StoreState.CLOSED
    with pytest.raises(StoreUnavailableError):
        store.ping()


def test_gives_up_after_the_timeout_and_says_so(tmp_path: Path) -> None:
    opener = _StartsLate(tmp_path / "graph.sqlite3")
    reasons: list[str] = []
    store = DeferredGraphStore(opener, timeout_s=1.2, on_give_up=reasons.append, name="db")
    store.start()
    try:
        assert store.wait(30) is StoreState.FAILED
    finally:
        store.close()
    assert 2 <= opener.attempts <= 4  # 0.5 s, then 1 s: bounded, then no more
    assert len(reasons) == 1
    assert reasons[0].startswith("db not reachable within 1 s")


def test_refused_credentials_and_bad_configuration_are_not_retried(tmp_path: Path) -> None:
    attempts: list[int] = []

    def misconfigured() -> GraphStore:
        attempts.append(1)
        raise ConfigurationError("invalid Neo4j URI")

    reasons: list[str] = []
    store = DeferredGraphStore(misconfigured, timeout_s=60, on_give_up=reasons.append)
    store.start()
    assert store.wait(30) is StoreState.FAILED
    store.close()
    assert attempts == [1]
    assert reasons == ["store refused: invalid Neo4j URI"]

    def refused() -> GraphStore:
        attempts.append(2)
        raise StoreUnavailableError("the server refused the credentials")

    store = DeferredGraphStore(
        refused, timeout_s=60, is_refusal=lambda exc: "credentials" in str(exc)
    )
    store.start()
    assert store.wait(30) is StoreState.FAILED
    store.close()
    assert attempts == [1, 2]
    assert "refused" in store.reason
