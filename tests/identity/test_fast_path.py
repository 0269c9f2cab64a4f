"""The all-new-identifiers fast path writes exactly the graph of the general path.

:meth:`ResolutionEngine._resolve_event` takes a shortcut for an event whose identifiers are all
new (none blocked, suppressed, stored, or created earlier in the batch, every type within its
limit). Generated sequences of batches mix such events with events naming existing identifiers,
identifiers repeated within an event and across events of one batch, blocked values, limit
conflicts, erased (suppressed) identifiers, do-not-link rules, restricted persons, facts,
consents and redelivered message ids. Each sequence runs twice, on two real stores and vaults,
once with the fast path and once without; outcomes and every row of every table (sealed values
compared by their plaintext) must be equal. Ids come from counters, so equal means equal.
"""

from __future__ import annotations

import itertools
import sqlite3
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identity import resolution
from identity.hashing import Keyring
from identity.model import (
    RESTRICTION_PURPOSE,
    ConsentInput,
    ConsentSignal,
    EventOutcome,
    FactInput,
    FactKind,
    FactStatus,
    IdentityEvent,
    Outcome,
)
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store.sqlite import SqliteGraphStore
from privacy.keys.keyprovider import LocalFileKeyProvider, create_kek_file
from privacy.keys.vault import Vault
from privacy.keys.vault_sqlite import SqliteVaultKeyStore
from tests.conftest import T0, Ids

pytestmark = pytest.mark.sqlite_only

# A small pool, so that generated events often meet identifiers of earlier events and batches;
# "fresh" values (an index past the pool) are new unless drawn twice.
_VALUES = {
    "customer_id": [f"C{i}" for i in range(4)] + ["test"],  # "test" is a blocked value
    "email": [f"u{i}@shop.de" for i in range(5)] + ["noreply@shop.de"],  # blocked pattern
    "phone": ["+442079460958", "+442079460959", "+4915100012345", "+4915100020264"],
    "cookie_id": [f"k{i}" for i in range(6)] + ["null"],  # blocked value
}
_TYPES = tuple(_VALUES)
_SUPPRESSED = (("email", "u4@shop.de"), ("cookie_id", "k5"))


@st.composite
def _identifier(draw: st.DrawFn) -> tuple[str, str]:
    kind = draw(st.sampled_from(_TYPES))
    pool = _VALUES[kind]
    if kind == "phone" or draw(st.booleans()):
        return kind, draw(st.sampled_from(pool))
    fresh = draw(st.integers(0, 400))
    return kind, f"f{fresh}@new.de" if kind == "email" else f"F{kind[0]}{fresh}"


@dataclass(frozen=True)
class _EventSpec:
    identifiers: tuple[tuple[str, str], ...]
    source: str
    minute: int
    attribute: str | None
    quarantined: bool
    consent: str | None  # a purpose, or RESTRICTION_PURPOSE for a restriction record
    message: int | None


_event_specs = st.builds(
    _EventSpec,
    identifiers=st.lists(_identifier(), min_size=1, max_size=5).map(tuple),
    source=st.sampled_from(("web", "crm")),
    minute=st.integers(0, 30),
    attribute=st.none() | st.sampled_from(("city", "favourite_category")),
    quarantined=st.booleans(),
    consent=st.none() | st.sampled_from(("marketing", RESTRICTION_PURPOSE)),
    message=st.none() | st.integers(0, 6),  # small: redeliveries happen
)
_batches = st.lists(st.lists(_event_specs, min_size=1, max_size=8), min_size=1, max_size=4)


def _event(ids: Ids, spec: _EventSpec) -> IdentityEvent:
    at = T0 + timedelta(minutes=spec.minute)
    facts: tuple[FactInput, ...] = ()
    if spec.attribute is not None:
        status = FactStatus.QUARANTINED if spec.quarantined else FactStatus.ACTIVE
        payload = f'"{spec.attribute}-{spec.minute}"'.encode()
        facts = (FactInput(FactKind.ATTRIBUTE, spec.attribute, "behavioural", at, payload, status),)
    consents: tuple[ConsentInput, ...] = ()
    if spec.consent is not None:
        restriction = spec.consent == RESTRICTION_PURPOSE
        signal = ConsentSignal.RESTRICTION if restriction else ConsentSignal.DIRECT
        consents = (ConsentInput(spec.consent, not restriction, at, signal, "consent", "proof"),)
    return IdentityEvent(
        tuple(ids(kind, value) for kind, value in spec.identifiers),
        spec.source,
        at,
        facts,
        consents,
        None if spec.message is None else f"m{spec.message}",
    )


class _Counters:
    """Deterministic ids for everything the engine and the model draw at random."""

    def __init__(self) -> None:
        self._counts = itertools.count()

    def make(self, prefix: str) -> str:
        return f"{prefix}_{next(self._counts):024x}"


def _dump(path: Path, vault: Vault) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table; sealed fact values as their plaintext (the ciphertext differs
    between two vaults by design)."""
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        dump: dict[str, list[tuple[Any, ...]]] = {}
        for table in tables:
            if table in ("sqlite_sequence", "facts"):
                continue
            # seen_at is the store's own clock at commit, not the engine's: not compared.
            columns = "digest" if table == "seen_messages" else "*"
            rows = conn.execute(f"SELECT {columns} FROM {table}").fetchall()  # noqa: S608
            dump[table] = sorted(rows, key=repr)
        facts = conn.execute(
            "SELECT f.pk, f.fact_id, i.node_id, f.kind, f.name, f.category, f.at, f.source,"
            " f.status, f.pii, f.sealed FROM facts f JOIN identifiers i ON i.pk = f.node"
            " ORDER BY f.pk"
        ).fetchall()
    finally:
        conn.close()
    plain = vault.decrypt_many([(row[2], f"{row[3]}:{row[4]}", row[10]) for row in facts])
    dump["facts"] = [(*row[:10], text) for row, text in zip(facts, plain, strict=True)]
    return dump


def _run(
    work: Path,
    fast: bool,
    batches: list[list[IdentityEvent]],
    keyring: Keyring,
    policy: IdentityPolicy,
    ids: Ids,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[list[EventOutcome]], dict[str, list[tuple[Any, ...]]]]:
    work.mkdir()
    ids_made = _Counters()
    monkeypatch.setattr(resolution, "new_fact_id", lambda: ids_made.make("f"))
    monkeypatch.setattr(resolution, "new_consent_id", lambda: ids_made.make("c"))
    create_kek_file(work / "kek.json", origin="generated")
    keys = SqliteVaultKeyStore(work / "vault-keys.sqlite3")
    vault = Vault(keys, LocalFileKeyProvider(work / "kek.json"))
    store = SqliteGraphStore(work / "graph.sqlite3")
    try:
        engine = ResolutionEngine(
            store,
            keyring,
            policy,
            clock=lambda: T0 + timedelta(hours=1),
            person_ids=lambda: ids_made.make("p"),
            node_ids=lambda: ids_made.make("n"),
            sealer=vault,
            rule_ids=lambda: ids_made.make("r"),
            fast_new_events=fast,
        )
        # A graph to start from: two persons, one split by an operator's unlink (a
        # do-not-link rule between u0 and k0), and erased identifiers on the suppression list.
        engine.ingest(
            [
                ids.event(("email", "u0@shop.de"), ("cookie_id", "k0"), ("cookie_id", "k1")),
                ids.event(("customer_id", "C1"), ("phone", "+442079460958")),
            ]
        )
        engine.unlink(ids("email", "u0@shop.de"), ids("cookie_id", "k0"))
        erased = [keyring.hash(ids(kind, value)) for kind, value in _SUPPRESSED]
        store.write(lambda tx: tx.suppress(erased))
        outcomes = [engine.ingest(batch) for batch in batches]
        store.checkpoint()
    finally:
        store.close()
    try:
        return outcomes, _dump(work / "graph.sqlite3", vault)
    finally:
        keys.close()


@settings(
    max_examples=25,
    derandomize=True,  # the same examples on every run: deterministic in CI
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(specs=_batches)
def test_fast_path_writes_the_graph_of_the_general_path_when_batches_mix_new_and_known(
    specs: list[list[_EventSpec]],
    keyring: Keyring,
    policy: IdentityPolicy,
    ids: Ids,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches = [[_event(ids, spec) for spec in batch] for batch in specs]
    with tempfile.TemporaryDirectory() as tmp:
        fast = _run(Path(tmp) / "fast", True, batches, keyring, policy, ids, monkeypatch)
        general = _run(Path(tmp) / "general", False, batches, keyring, policy, ids, monkeypatch)
    assert fast[0] == general[0]
    assert fast[1] == general[1]


def test_fast_path_is_taken_and_matches_when_every_identifier_is_new(
    keyring: Keyring, policy: IdentityPolicy, ids: Ids, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk-like batch: events of new identifiers only (the fast path), then one event that
    names an identifier of one of them and a new one (general path, a link), in one batch."""
    batch = [
        ids.event(
            ("customer_id", f"B{i}"),
            ("email", f"b{i}@bulk.de"),
            ("cookie_id", f"bk{i}"),
            at=T0 + timedelta(seconds=i),
        )
        for i in range(40)
    ]
    batch.append(ids.event(("cookie_id", "bk1"), ("cookie_id", "bk-new")))
    taken: list[int] = []
    create = ResolutionEngine._create

    def counting(self: ResolutionEngine, *args: Any) -> EventOutcome:
        taken.append(1)
        return create(self, *args)

    monkeypatch.setattr(ResolutionEngine, "_create", counting)
    with tempfile.TemporaryDirectory() as tmp:
        fast = _run(Path(tmp) / "fast", True, [batch], keyring, policy, ids, monkeypatch)
        assert len(taken) == 40 + 2  # the batch's new events and the set-up's two
        general = _run(Path(tmp) / "general", False, [batch], keyring, policy, ids, monkeypatch)
        assert len(taken) == 40 + 2  # the general path never takes it
    assert fast == general
    assert [o.outcome for o in fast[0][0]] == [Outcome.CREATED] * 40 + [Outcome.LINKED]
