"""Backends for the graph-store contract suite.

Every test in this folder runs once per backend. SQLite always runs (a temp file). Neo4j runs
when ``NEO4J_URI`` is set (with ``NEO4J_USER``/``NEO4J_PASSWORD``/``NEO4J_DATABASE``) and is
skipped with the reason otherwise. A backend that passes this suite is the only kind we ship.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from identity.store.port import GraphStore
from tests.support.neo4j_env import SKIP_REASON, live_neo4j_settings

StoreFactory = Callable[[], GraphStore]


def _sqlite_factory(tmp_path: Path) -> StoreFactory:
    from identity.store.sqlite import SqliteGraphStore

    path = tmp_path / "graph.sqlite3"
    return lambda: SqliteGraphStore(path)


def _neo4j_factory() -> StoreFactory:
    where = live_neo4j_settings() or pytest.skip(SKIP_REASON)
    from identity.store.neo4j import Neo4jGraphStore

    def make() -> GraphStore:
        return Neo4jGraphStore(
            where["uri"], where["user"], where["password"], database=where["database"]
        )

    store = make()
    store.wipe_for_tests()  # type: ignore[attr-defined]
    store.close()
    return make


@pytest.fixture(params=["sqlite", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """A function that opens (or re-opens) the same store of the parametrized backend."""
    if request.param == "sqlite":
        return _sqlite_factory(tmp_path)
    return _neo4j_factory()


@pytest.fixture
def store(store_factory: StoreFactory) -> Iterator[GraphStore]:
    """An open, empty store of the parametrized backend."""
    opened = store_factory()
    yield opened
    opened.close()
