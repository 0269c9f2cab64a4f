"""A batch reads the restriction records of the persons its events merge outright in one read
(``GraphTransaction.persons_consents``), not one read per person: a bulk file merges a few per
cent of its events, and each read was a statement of its own in the writer's turn. What must not
change: a restricted person is still never merged with another (refusal ``restricted``).

The first test fails on the old code (one consent read per person: 40 here)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from identity.hashing import Keyring
from identity.model import RESTRICTION_PURPOSE, ConsentInput, ConsentSignal
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store.sqlite import SqliteGraphStore
from tests.conftest import T0, Ids

pytestmark = pytest.mark.sqlite_only


def _restriction() -> ConsentInput:
    return ConsentInput(
        RESTRICTION_PURPOSE, False, T0, ConsentSignal.RESTRICTION, "legal_obligation", "ab" * 32
    )


def test_a_batch_reads_the_restrictions_of_the_persons_it_merges_once_when_it_merges_many(
    tmp_path: Path, keyring: Keyring, policy: IdentityPolicy, ids: Ids
) -> None:
    store = SqliteGraphStore(tmp_path / "graph.sqlite3")
    engine = ResolutionEngine(store, keyring, policy, clock=lambda: T0)
    try:
        firsts = engine.ingest([ids.event(("cookie_id", f"a{i}")) for i in range(20)])
        restricted = replace(ids.event(("cookie_id", "b0")), consents=(_restriction(),))
        seconds = engine.ingest(
            [restricted, *(ids.event(("cookie_id", f"b{i}")) for i in range(1, 20))]
        )
        statements: list[str] = []
        store._conn.set_trace_callback(statements.append)
        try:
            bridges = engine.ingest(
                [ids.event(("cookie_id", f"a{i}"), ("cookie_id", f"b{i}")) for i in range(20)]
            )
        finally:
            store._conn.set_trace_callback(None)
    finally:
        store.close()
    consent_reads = [s for s in statements if "JOIN consents" in s]
    assert len(consent_reads) == 1
    # The restricted person merged with no one; every other pair merged.
    assert [r.reason.value for r in bridges[0].refusals] == ["restricted"]
    assert bridges[0].person_id == firsts[0].person_id
    assert seconds[0].person_id not in {b.person_id for b in bridges}
    assert all(b.merged_person_ids for b in bridges[1:])
    assert {b.person_id for b in bridges[1:]} <= {f.person_id for f in firsts} | {
        s.person_id for s in seconds
    }
