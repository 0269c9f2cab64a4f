"""A change set may carry its new nodes, links and facts as :class:`identity.model.Records`
(the field tuples of each record, built into records only when read): the engine does so for
every write since stop 37, because the SQLite store only turns each record into a row tuple
again, and building a frozen dataclass per node, link and fact was ~3 % of bulk CPU. What must hold:
Records read as the tuple of the same records; the store writes the same rows from Records as
from records; and a bulk batch builds no IdentifierNode, Link or Fact object for what it writes
(``test_a_batch_of_new_identifiers_builds_no_node_link_or_fact_objects_...`` fails on the old
code: one IdentifierNode per new node, one Link per link, one Fact per sealed value)."""

from __future__ import annotations

import sqlite3
from dataclasses import fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from identity.hashing import Keyring
from identity.model import ChangeSet, Fact, IdentifierNode, Link, Records
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store.port import GraphTransaction
from identity.store.sqlite import SqliteGraphStore
from privacy.keys.vault import Vault
from tests.conftest import T0, Ids
from tests.identity.store.test_wide_writes import _batch

pytestmark = pytest.mark.sqlite_only


def _fields(record: Any) -> tuple[Any, ...]:
    return tuple(getattr(record, f.name) for f in fields(record))


def _as_records(changes: ChangeSet) -> ChangeSet:
    return replace(
        changes,
        new_nodes=Records(IdentifierNode, [_fields(n) for n in changes.new_nodes]),
        links=Records(Link, [_fields(x) for x in changes.links]),
        facts=Records(Fact, [_fields(f) for f in changes.facts]),
    )


def _rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(path)
    try:
        tables = ("persons", "identifiers", "links", "facts")
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}  # noqa: S608 - fixed names
    finally:
        conn.close()


def test_records_read_as_the_tuple_of_the_same_records_when_indexed_or_iterated() -> None:
    changes = _batch(3)
    nodes = changes.new_nodes
    records = _as_records(changes).new_nodes
    assert isinstance(records, Records)
    assert len(records) == len(nodes) == 6
    assert records == nodes
    assert nodes == records
    assert list(records) == list(nodes)
    assert records[0] == nodes[0]
    assert records[-1] == nodes[-1]
    assert records[1:3] == nodes[1:3]
    assert nodes[2] in records
    assert hash(records) == hash(nodes)
    assert repr(records) == repr(nodes)
    assert records != nodes[:-1]


def test_store_writes_the_same_rows_when_nodes_and_facts_come_as_records(tmp_path: Path) -> None:
    changes = _batch(50)
    written = {}
    for name, carried in (("records", _as_records(changes)), ("objects", changes)):
        store = SqliteGraphStore(tmp_path / f"{name}.sqlite3")

        def apply(tx: GraphTransaction, carried: ChangeSet = carried) -> None:
            tx.apply(carried)

        try:
            store.write(apply)
        finally:
            store.close()
        written[name] = _rows(tmp_path / f"{name}.sqlite3")
    assert written["records"] == written["objects"]
    assert len(written["records"]["identifiers"]) == 100
    assert len(written["records"]["links"]) == 50
    assert len(written["records"]["facts"]) == 50


def test_a_batch_of_new_identifiers_builds_no_node_link_or_fact_objects_when_written(
    tmp_path: Path,
    keyring: Keyring,
    policy: IdentityPolicy,
    ids: Ids,
    vault: Vault,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[str] = []
    for record_type in (IdentifierNode, Link, Fact):
        init = record_type.__init__

        def counting(
            self: Any, *args: Any, _init: Any = init, _name: str = record_type.__name__
        ) -> None:
            built.append(_name)
            _init(self, *args)

        monkeypatch.setattr(record_type, "__init__", counting)
    store = SqliteGraphStore(tmp_path / "graph.sqlite3")
    try:
        engine = ResolutionEngine(store, keyring, policy, sealer=vault)
        outcomes = engine.ingest(
            [
                ids.event(
                    ("customer_id", f"R{i}"),
                    ("email", f"r{i}@records.de"),  # kept raw: a sealed fact per email
                    ("cookie_id", f"rk{i}"),
                    at=T0 + timedelta(seconds=i),
                )
                for i in range(30)
            ]
        )
    finally:
        store.close()
    written = _rows(tmp_path / "graph.sqlite3")
    assert len(written["identifiers"]) == 90
    assert len(written["links"]) == 60
    assert len(written["facts"]) == 30  # the emails' sealed raw values
    assert [o.new_identifiers for o in outcomes] == [3] * 30
    assert built == []
