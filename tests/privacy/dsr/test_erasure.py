"""Erasure (GDPR Art. 17): nothing about the person is left in any file or log, it is atomic
and recoverable, it sticks (suppression), and another person's data stays intact."""

from __future__ import annotations

import dataclasses
import io
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bootstrap.container import Container, build_container
from bootstrap.settings import Settings
from identity.errors import StoreUnavailableError
from identity.hashing import HashedIdentifier, HashKey, Keyring
from identity.identifiers import NormalizedIdentifier
from identity.model import (
    ConsentInput,
    ConsentSignal,
    FactKind,
    FactStatus,
    IdentityEvent,
    Outcome,
    RefusalReason,
)
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store.port import GraphStore, GraphTransaction
from identity.store.sqlite import SqliteGraphStore
from privacy.access.api_keys import Scope
from privacy.auditing.log import AuditLog, SqliteAuditLog
from privacy.dsr.erasure import ERASURE_ACTION, ErasureIncompleteError, ErasureService
from privacy.keys.vault import DataKeyDestroyedError, Vault, VaultUnavailableError
from tests.conftest import REPO, Api, Ids

ANN = {
    "email": "Ann.Erased@Shop-Privacy.example.de",
    "phone": "+44 20 7946 0777",
    "customer_id": "ERASE-ME-0001",
    "cookie_id": "ck-erase-me-77",
}
BOB = {
    "email": "bob.kept@shop-privacy.example.de",
    "phone": "+44 20 7946 0888",
    "customer_id": "KEEP-ME-0002",
    "cookie_id": "ck-keep-me-88",
}
ANN_CITY = "Wolfsburg-Erasedorf"
BOB_CITY = "Keepington"
ANN_ORDER = "order-erase-4711"
PROOF = "cd" * 32
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _identify(api: Api, person: dict[str, str], city: str, order: str) -> dict[str, Any]:
    response = api.client.post(
        "/v1/identify",
        json={
            "source": "web",
            "identifiers": [{"type": t, "value": v} for t, v in person.items()],
            "traits": {"city": city, "age_band": "25-34"},
            "events": [
                {
                    "name": "purchase",
                    "timestamp": "2026-03-01T09:00:00Z",
                    "properties": {"order_id": order, "amount": 59.9, "currency": "EUR"},
                }
            ],
        },
        headers=api.ingest,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _normalized(container: Container, person: dict[str, str]) -> list[NormalizedIdentifier]:
    policy = container.identity_policy
    return [policy.normalize(t, v, "GB") for t, v in person.items()]


def _service(container: Container, **kwargs: Any) -> ErasureService:
    return ErasureService(
        kwargs.pop("store", container.store),
        kwargs.pop("vault", container.vault),
        container.keyring,
        kwargs.pop("audit", container.audit),
        **kwargs,
    )


@dataclass
class Subject:
    """What the graph held about one person before the erasure (to look for afterwards)."""

    person_id: str
    node_ids: list[str]
    hashes: list[HashedIdentifier]
    fact_ids: list[str]
    sealed: list[bytes]
    consent_ids: list[str]
    wrapped_keys: list[bytes]


def _subject(container: Container, person_id: str) -> Subject:
    def read(tx: GraphTransaction) -> Subject:
        nodes = tx.cluster(person_id).nodes
        facts = [
            f for status in FactStatus for f in tx.person_facts(person_id, list(FactKind), status)
        ]
        consents = tx.person_consents(person_id, ["marketing", "analytics"])
        return Subject(
            person_id,
            [n.node_id for n in nodes],
            [n.hashed for n in nodes],
            [f.fact_id for f in facts],
            [f.sealed for f in facts],
            [c.record_id for c in consents],
            [],
        )

    subject = container.store.read(read)
    keys = container.vault_keys.get_many(subject.node_ids)
    subject.wrapped_keys = [k.blob for k in keys.values()]
    return subject


def _add_consents(container: Container, person: dict[str, str]) -> None:
    (email, *_) = _normalized(container, person)
    consents = (
        ConsentInput("marketing", True, T0, ConsentSignal.DIRECT, "consent", PROOF),
        ConsentInput("analytics", False, T0, ConsentSignal.TCF, "consent", PROOF),
    )
    (outcome,) = container.engine.ingest([IdentityEvent((email,), "cmp", T0, consents=consents)])
    assert outcome.consents_recorded == 2


def _raw_needles(person: dict[str, str], container: Container) -> set[bytes]:
    values = set(person.values())
    values |= {n.value for n in _normalized(container, person)}
    values |= {v.lower() for v in values} | {v.upper() for v in values}
    values |= {v.replace(" ", "") for v in values}
    values.add(person["phone"].replace("+44 ", "0").replace(" ", ""))  # national form
    return {v.encode() for v in values} | {v.encode("utf-16-le") for v in values}


def _id_needles(subject: Subject) -> set[bytes]:
    needles = {subject.person_id.encode()}
    needles |= {n.encode() for n in subject.node_ids + subject.fact_ids + subject.consent_ids}
    needles |= set(subject.sealed) | set(subject.wrapped_keys)
    return needles


def _all_hashes(keyring: Keyring, identifiers: list[NormalizedIdentifier]) -> set[bytes]:
    return {c.digest for i in identifiers for c in keyring.candidates(i)}


def _files(data_dir: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(data_dir)): path.read_bytes()
        for path in sorted(data_dir.rglob("*"))
        if path.is_file()
    }


def _hits(files: dict[str, bytes], needles: Collection[bytes]) -> dict[str, int]:
    return {
        name: found
        for name, blob in files.items()
        if (found := sum(1 for needle in needles if needle in blob))
    }


@pytest.fixture
def two_persons(api: Api) -> tuple[Subject, Subject]:
    """Ann and Bob, ingested through the app with traits and events, plus consents; a refusal
    holding Ann's email hash (named next to Bob's customer id)."""
    container = api.container
    _identify(api, ANN, ANN_CITY, ANN_ORDER)
    _identify(api, BOB, BOB_CITY, "order-keep-0815")
    _add_consents(container, ANN)
    _add_consents(container, BOB)
    conflict = api.client.post(
        "/v1/identify",
        json={
            "source": "crm",
            "identifiers": [
                {"type": "customer_id", "value": BOB["customer_id"]},
                {"type": "email", "value": ANN["email"]},
            ],
        },
        headers=api.ingest,
    )
    assert conflict.json()["refused"], conflict.text
    engine = container.engine
    ann_id = engine.resolve(_normalized(container, ANN)[0])
    bob_id = engine.resolve(_normalized(container, BOB)[0])
    assert ann_id
    assert bob_id
    assert ann_id != bob_id
    return _subject(container, ann_id), _subject(container, bob_id)


def _erase_through_the_dsr_api(api: Api) -> dict[str, Any]:
    """Submit an erasure request (``POST /v1/dsr``), let the worker run it, return the result."""
    container = api.container
    _, token = container.api_keys.create("dsr-tool", frozenset({Scope.DSR}))
    headers = {"Authorization": f"Bearer {token}"}
    submitted = api.client.post(
        "/v1/dsr",
        json={
            "request_id": "dsr-req-1",
            "type": "erasure",
            "subject_identities": [{"type": "email", "value": ANN["email"]}],
        },
        headers=headers,
    )
    assert submitted.status_code in (200, 202), submitted.text
    deadline = time.monotonic() + 300  # a net against hangs only
    while True:
        container.dsr.run_once()
        status = api.client.get("/v1/dsr/dsr-req-1", headers=headers).json()
        if status["status"] not in ("pending", "in_progress") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status["status"] == "completed", status
    result: dict[str, Any] = status["result"]
    return result


@pytest.mark.sqlite_only
@pytest.mark.parametrize("via", ["service", "dsr_api"])
def test_nothing_about_the_person_is_left_in_any_file_or_log_when_erased(
    api: Api, two_persons: tuple[Subject, Subject], log_stream: io.StringIO, via: str
) -> None:
    container = api.container
    ann, bob = two_persons
    data_dir = container.settings.data_dir
    raw = _raw_needles(ANN, container)
    ids = _id_needles(ann)
    hashes = _all_hashes(container.keyring, _normalized(container, ANN))
    hex_hashes = {h.hex().encode() for h in hashes}
    container.store.checkpoint()  # type: ignore[attr-defined]
    before = _files(data_dir)
    # The search finds what it looks for: before the erasure, the graph file holds all of it.
    found_before = _hits(before, ids)
    assert "graph.sqlite3" in found_before
    assert any(name.startswith("vault-keys.sqlite3") for name in found_before)
    assert _hits(before, hashes)
    assert len(ann.sealed) >= 4
    assert len(ann.consent_ids) == 2
    assert ann.wrapped_keys

    if via == "service":
        erased = _service(container).erase(
            [_normalized(container, ANN)[0]], request_id="dsr-req-1", actor="key_test"
        )
        result = dataclasses.asdict(erased)
    else:  # the whole request path: API, DSR store and worker, downstream outbox
        result = _erase_through_the_dsr_api(api)

    assert result["persons_erased"] == 1
    assert result["identifiers_erased"] == 4
    assert result["consents_deleted"] == 2
    assert result["keys_shredded"] >= 1
    assert result["identifiers_suppressed"] == 4
    # Every file: no raw value, no id, no ciphertext, no wrapped key of Ann's, no hash in hex.
    after = _files(data_dir)
    if via == "dsr_api":
        assert "dsr.sqlite3" in after  # the request file is scanned too
    assert _hits(after, raw) == {}
    assert _hits(after, ids) == {}
    assert _hits(after, hex_hashes) == {}
    # The keyed hashes remain in exactly one place: the graph's suppression table.
    assert set(_hits(after, hashes)) == {"graph.sqlite3"}
    _assert_hashes_only_in_the_suppression_table(data_dir / "graph.sqlite3", hashes)
    logs = log_stream.getvalue().encode()
    assert [n for n in raw | ids | hashes | hex_hashes if n in logs] == []
    # Bob is intact and readable.
    _assert_intact(container, bob)


def _assert_hashes_only_in_the_suppression_table(graph: Path, hashes: set[bytes]) -> None:
    """Empty the suppression table in a copy of the file: then no hash may be left in it."""
    copy = graph.with_name("graph-copy.sqlite3")
    shutil.copyfile(graph, copy)
    try:
        store = SqliteGraphStore(copy)  # secure_delete on, like the real store
        try:
            store.write(lambda tx: tx._conn.execute("DELETE FROM suppressed"))
            store.checkpoint()
        finally:
            store.close()
        assert [h for h in hashes if h in copy.read_bytes()] == []
    finally:
        for leftover in copy.parent.glob("graph-copy.sqlite3*"):
            leftover.unlink()


def _assert_intact(container: Container, subject: Subject) -> None:
    now = _subject(container, subject.person_id)
    assert now.node_ids == subject.node_ids
    assert now.fact_ids == subject.fact_ids
    assert now.consent_ids == subject.consent_ids
    facts = container.store.read(
        lambda tx: tx.person_facts(subject.person_id, list(FactKind), FactStatus.ACTIVE)
    )
    plain = container.vault.decrypt_many([(f.node_id, f.seal_field, f.sealed) for f in facts])
    assert BOB_CITY.encode() in b"".join(plain)
    assert container.engine.resolve(_normalized(container, BOB)[2]) == subject.person_id


def test_re_ingest_is_refused_and_counted_when_the_identifiers_were_erased(
    api: Api, two_persons: tuple[Subject, Subject]
) -> None:
    container = api.container
    _service(container).erase(_normalized(container, ANN)[:1], "dsr-req-2", "cli")

    again = _identify(api, ANN, ANN_CITY, ANN_ORDER)
    with_new = api.client.post(
        "/v1/identify",
        json={
            "source": "web",
            "identifiers": [
                {"type": "email", "value": ANN["email"]},
                {"type": "cookie_id", "value": "ck-brand-new"},
            ],
        },
        headers=api.ingest,
    ).json()

    assert again["outcome"] == "refused"
    assert {r["reason"] for r in again["refused"]} == {"suppressed"}
    assert len(again["refused"]) == 4  # the phone and cookie too: every identifier was Ann's
    assert with_new["outcome"] == "created"  # the new cookie alone, linked to nothing erased
    assert [r["reason"] for r in with_new["refused"]] == ["suppressed"]
    for identifier in _normalized(container, ANN):
        assert container.engine.resolve(identifier) is None
    metrics = api.client.get("/metrics", headers=api.admin).text
    assert 'idgraph_ingest_refused_identifiers_total{reason="suppressed"} 5.0' in metrics


def test_one_audit_entry_with_counts_and_no_personal_data_when_erased(
    api: Api, two_persons: tuple[Subject, Subject]
) -> None:
    container = api.container
    ann, _ = two_persons
    before = container.audit.head().seq

    _service(container).erase(_normalized(container, ANN)[:1], "dsr-req-3", "key_abc")

    entries = [e for e in container.audit.entries(after_seq=before) if e.action == ERASURE_ACTION]
    assert len(entries) == 1
    (entry,) = entries
    assert entry.actor == "key_abc"
    assert entry.person_id is None
    assert entry.details["request_id"] == "dsr-req-3"
    assert entry.details["persons_erased"] == 1
    assert entry.details["identifiers_erased"] == 4
    assert ann.person_id not in repr(entry)
    assert container.audit.verify().ok


# -- atomicity and recovery ------------------------------------------------------------------------


class _FailingTransaction:
    """Delegates to the real transaction, raising when ``method`` is called."""

    def __init__(self, tx: GraphTransaction, method: str) -> None:
        self._tx = tx
        self._method = method

    def __getattr__(self, name: str) -> Any:
        if name == self._method:
            raise StoreUnavailableError(f"injected failure in {name}")
        return getattr(self._tx, name)


class _FailingStore:
    """A graph store whose write transactions fail at ``method`` (after earlier deletes)."""

    def __init__(self, store: GraphStore, method: str) -> None:
        self._store = store
        self._method = method

    def write(self, fn: Callable[[Any], Any]) -> Any:
        return self._store.write(lambda tx: fn(_FailingTransaction(tx, self._method)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.mark.parametrize("method", ["suppress", "add_erasure_outbox"])
def test_nothing_is_deleted_when_the_graph_transaction_fails_after_some_deletes(
    api: Api, two_persons: tuple[Subject, Subject], method: str
) -> None:
    container = api.container
    ann, _ = two_persons
    stats = container.store.stats()
    failing = _FailingStore(container.store, method)

    with pytest.raises(StoreUnavailableError):
        _service(container, store=failing).erase(_normalized(container, ANN)[:1], "r-4", "cli")

    assert container.store.stats() == stats
    assert _subject(container, ann.person_id) == ann
    assert container.store.read(lambda tx: tx.pending_erasures()) == []
    assert container.store.read(lambda tx: tx.suppressed(ann.hashes)) == set()
    facts = container.store.read(
        lambda tx: tx.person_facts(ann.person_id, list(FactKind), FactStatus.ACTIVE)
    )
    plain = container.vault.decrypt_many([(f.node_id, f.seal_field, f.sealed) for f in facts])
    assert ANN_CITY.encode() in b"".join(plain)  # no key was shredded


class _VaultFailingOnce:
    """The real vault, whose first shred raises before destroying anything."""

    def __init__(self, vault: Vault) -> None:
        self._vault = vault
        self.failures = 1

    def shred(self, owners: Collection[str]) -> int:
        if self.failures:
            self.failures -= 1
            raise VaultUnavailableError("injected: key file unavailable")
        return self._vault.shred(owners)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vault, name)


class _AuditFailingOnce:
    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit
        self.failures = 1

    def append(self, drafts: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailableError("injected: audit log unavailable")
        return self._audit.append(drafts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._audit, name)


def _ann_blobs(container: Container, ann: Subject) -> list[tuple[str, str, bytes]]:
    facts = container.store.read(
        lambda tx: tx.person_facts(ann.person_id, list(FactKind), FactStatus.ACTIVE)
    )
    return [(f.node_id, f.seal_field, f.sealed) for f in facts]


@pytest.mark.parametrize("failing", ["vault", "audit"])
def test_erasure_completes_on_recover_when_a_step_after_the_graph_commit_failed(
    api: Api, two_persons: tuple[Subject, Subject], failing: str
) -> None:
    container = api.container
    ann, bob = two_persons
    blobs = _ann_blobs(container, ann)
    service = _service(
        container,
        **(
            {"vault": _VaultFailingOnce(container.vault)}
            if failing == "vault"
            else {"audit": _AuditFailingOnce(container.audit)}
        ),
    )

    with pytest.raises(ErasureIncompleteError) as caught:
        service.erase(_normalized(container, ANN)[:1], "dsr-req-5", "cli")

    assert caught.value.request_id == "dsr-req-5"
    # The graph is fully erased; the outbox says the rest is pending.
    assert container.store.read(lambda tx: tx.person(ann.person_id)) is None
    (pending,) = container.store.read(lambda tx: tx.pending_erasures())
    # The erased nodes' keys, and the person's audit reference key (privacy.audit_refs).
    aref = container.audit.person_ref_owners([ann.person_id])
    assert set(pending.node_ids) == set(ann.node_ids) | set(aref)

    assert service.recover() == 1

    assert container.store.read(lambda tx: tx.pending_erasures()) == []
    with pytest.raises(DataKeyDestroyedError):
        container.vault.decrypt_many(blobs)
    erasures = [e for e in container.audit.entries() if e.action == ERASURE_ACTION]
    assert len(erasures) == 1
    assert service.recover() == 0
    _assert_intact(container, bob)


class _VaultShreddingSlowly:
    """The real vault, whose shred waits (at most 30 s) until ``go`` is set, once it has said
    it started."""

    def __init__(self, vault: Vault) -> None:
        self._vault = vault
        self.started = threading.Event()
        self.go = threading.Event()

    def shred(self, owners: Collection[str]) -> int:
        self.started.set()
        self.go.wait(30)
        return self._vault.shred(owners)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vault, name)


def test_a_recovery_while_an_erasure_is_finishing_waits_and_finds_nothing_to_finish(
    api: Api, two_persons: tuple[Subject, Subject]
) -> None:
    # The DSR worker recovers every pass, with an ErasureService of its own: it must not
    # finish (and audit) an erasure that a request is finishing (a flaky double entry, stop 52).
    container = api.container
    slow = _VaultShreddingSlowly(container.vault)
    erasing = _service(container, vault=slow)
    recovering = _service(container)
    results: dict[str, Any] = {}
    erase = threading.Thread(
        target=lambda: results.update(
            erased=erasing.erase(_normalized(container, ANN)[:1], "dsr-req-7", "cli")
        )
    )
    recover = threading.Thread(target=lambda: results.update(recovered=recovering.recover()))

    erase.start()
    assert slow.started.wait(30)  # the graph is committed, the entry pending, the shred held
    recover.start()
    recover.join(0.5)
    waited = recover.is_alive()
    slow.go.set()
    erase.join(30)
    recover.join(30)

    assert waited  # without the lock it read the pending entry and finished it meanwhile
    assert results["recovered"] == 0
    assert results["erased"].persons_erased == 1
    erasures = [e for e in container.audit.entries() if e.action == ERASURE_ACTION]
    assert len(erasures) == 1
    assert container.store.read(lambda tx: tx.pending_erasures()) == []


_CRASH_SCRIPT = """
import os, signal, sys
from bootstrap.container import build_container
from bootstrap.settings import Settings
from privacy.dsr.erasure import ErasureService

container = build_container(Settings(env="test", data_dir=sys.argv[1], policy_dir=sys.argv[2],
                                     pii_scan=False, default_region="GB"))
identifier = container.identity_policy.normalize("email", sys.argv[3], "GB")
real_shred = container.vault.shred

def die(owners):  # the graph transaction has committed; the process dies before the shred
    os.kill(os.getpid(), signal.SIGKILL)

container.vault.shred = die
ErasureService(container.store, container.vault, container.keyring, container.audit).erase(
    [identifier], "dsr-crash", "cli")
"""


@pytest.mark.sqlite_only
def test_start_up_completes_an_erasure_when_the_process_was_killed_before_the_shred(
    tmp_path: Path, ids: Ids
) -> None:
    settings = Settings(
        env="test", data_dir=tmp_path / "data", policy_dir=REPO / "policies", pii_scan=False
    )
    container = build_container(settings)
    try:
        email = container.identity_policy.normalize("email", ANN["email"], "GB")
        (outcome,) = container.engine.ingest([IdentityEvent((email,), "web", T0)])
        assert outcome.person_id is not None
        (raw,) = container.store.read(
            lambda tx: tx.person_facts(
                outcome.person_id or "", [FactKind.RAW_IDENTIFIER], FactStatus.ACTIVE
            )
        )
    finally:
        container.close()

    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _CRASH_SCRIPT,
            str(settings.data_dir),
            str(REPO / "policies"),
            ANN["email"],
        ],
        cwd=REPO,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()

    graph = sqlite3.connect(settings.data_dir / "graph.sqlite3")
    pending = graph.execute("SELECT count(*) FROM erasure_outbox WHERE done_at IS NULL").fetchone()
    persons = graph.execute("SELECT count(*) FROM persons").fetchone()
    graph.close()
    assert (pending[0], persons[0]) == (1, 0)  # graph erased, shred pending

    restarted = build_container(settings)  # recovery runs at start-up
    try:
        assert restarted.store.read(lambda tx: tx.pending_erasures()) == []
        with pytest.raises(DataKeyDestroyedError):
            restarted.vault.decrypt(raw.node_id, raw.seal_field, raw.sealed)
        assert [e.details["request_id"] for e in restarted.audit.entries()] == ["dsr-crash"]
    finally:
        restarted.close()


# -- concurrency, copies, rotation, lifting -----------------------------------------------------


def _graph_invariants(path: Path) -> dict[str, int]:
    """Rows pointing at something that does not exist (all must be 0)."""
    conn = sqlite3.connect(path)
    try:
        checks = {
            "nodes without person": "SELECT count(*) FROM identifiers i "
            "LEFT JOIN persons p ON p.pk = i.person WHERE p.pk IS NULL",
            "persons without nodes": "SELECT count(*) FROM persons p WHERE NOT EXISTS "
            "(SELECT 1 FROM identifiers i WHERE i.person = p.pk)",
            "dangling links": "SELECT count(*) FROM links l WHERE NOT EXISTS "
            "(SELECT 1 FROM identifiers i WHERE i.pk = l.a) OR NOT EXISTS "
            "(SELECT 1 FROM identifiers i WHERE i.pk = l.b)",
            "dangling facts": "SELECT count(*) FROM facts f WHERE NOT EXISTS "
            "(SELECT 1 FROM identifiers i WHERE i.pk = f.node)",
            "dangling consents": "SELECT count(*) FROM consents c WHERE NOT EXISTS "
            "(SELECT 1 FROM identifiers i WHERE i.node_id = c.node_id)",
        }
        return {name: conn.execute(sql).fetchone()[0] for name, sql in checks.items()}
    finally:
        conn.close()


@pytest.mark.sqlite_only
def test_concurrent_erasure_and_ingest_of_the_same_person_leave_a_consistent_state(
    store: SqliteGraphStore,
    engine: ResolutionEngine,
    vault: Vault,
    keyring: Keyring,
    ids: Ids,
    tmp_path: Path,
) -> None:
    audit = SqliteAuditLog(tmp_path / "audit.sqlite3")
    service = ErasureService(store, vault, keyring, audit)
    email = ids("email", "ann@erase.example.de")
    engine.ingest([IdentityEvent((email, ids("customer_id", "C-ANN")), "web", T0)])
    outcomes: list[tuple[str, Outcome, str | None]] = []
    start = threading.Barrier(2)

    def ingest() -> None:
        start.wait()
        for i in range(60):
            cookie = f"ck-race-{i}"
            (outcome,) = engine.ingest(
                [IdentityEvent((email, ids("cookie_id", cookie)), "web", T0 + timedelta(seconds=i))]
            )
            outcomes.append((cookie, outcome.outcome, outcome.person_id))

    def erase() -> None:
        start.wait()
        service.erase([email], "race-1", "cli")

    threads = [threading.Thread(target=ingest), threading.Thread(target=erase)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    audit.close()

    assert engine.resolve(email) is None
    assert _graph_invariants(store.path) == dict.fromkeys(_graph_invariants(store.path), 0)
    after: list[str] = []
    for cookie, outcome, person_id in outcomes:
        found = engine.resolve(ids("cookie_id", cookie))
        if outcome is Outcome.CREATED:  # after the erasure: the email was refused
            assert found == person_id
            after.append(found or "")
        else:  # before: linked to Ann and erased with her
            assert outcome is Outcome.LINKED
            assert found is None
    # Each later cookie is a person of its own, linked to nothing erased.
    counts = store.read(lambda tx: tx.type_counts(after))
    assert counts == {person: {"cookie_id": 1} for person in after}
    assert store.stats().identifiers == len(after)
    assert store.read(lambda tx: tx.pending_erasures()) == []


@pytest.mark.sqlite_only
def test_a_copy_taken_before_the_erasure_cannot_be_decrypted_afterwards(
    api: Api, two_persons: tuple[Subject, Subject], tmp_path: Path
) -> None:
    container = api.container
    ann, bob = two_persons
    container.store.checkpoint()  # type: ignore[attr-defined]
    backup = tmp_path / "backup-graph.sqlite3"
    shutil.copyfile(container.settings.data_dir / "graph.sqlite3", backup)

    _service(container).erase(_normalized(container, ANN)[:1], "dsr-req-6", "cli")

    old = SqliteGraphStore(backup)
    try:
        ann_facts = old.read(
            lambda tx: tx.person_facts(ann.person_id, list(FactKind), FactStatus.ACTIVE)
        )
        bob_facts = old.read(
            lambda tx: tx.person_facts(bob.person_id, list(FactKind), FactStatus.ACTIVE)
        )
    finally:
        old.close()
    assert len(ann_facts) >= 3
    for fact in ann_facts:
        with pytest.raises(DataKeyDestroyedError):
            container.vault.decrypt(fact.node_id, fact.seal_field, fact.sealed)
    assert container.vault.decrypt_many([(f.node_id, f.seal_field, f.sealed) for f in bob_facts])


@pytest.mark.parametrize("phone_key_shredded", [False, True])
def test_erasure_finds_and_suppresses_under_every_key_when_the_hash_key_rotated(
    store: SqliteGraphStore,
    policy: IdentityPolicy,
    vault: Vault,
    keyring: Keyring,
    ids: Ids,
    tmp_path: Path,
    phone_key_shredded: bool,
) -> None:
    # With phone_key_shredded, the phone's data key is gone before the erasure (an operator's
    # shred, an interrupted erasure). The email's kept value is still readable and must still be
    # suppressed under every key: reading the person's values all or nothing used to drop the
    # email too, so it stayed suppressed under the old key only (retire that key and re-ingest
    # brought it back).
    old_engine = ResolutionEngine(store, keyring, policy, sealer=vault)
    customer, email = ids("customer_id", "C-ROT"), ids("email", "rot@x.de")
    phone = ids("phone", "+44 20 7946 0555")
    (first,) = old_engine.ingest([IdentityEvent((customer, email, phone), "web", T0)])
    if phone_key_shredded:
        nodes = store.read(lambda tx: tx.cluster(str(first.person_id)).nodes)
        assert vault.shred([n.node_id for n in nodes if n.hashed.type == "phone"]) == 1
    rotated = keyring.with_keys({"k2": bytes(range(32, 64))}, "k2")
    audit = SqliteAuditLog(tmp_path / "audit.sqlite3")
    try:
        # The request names only the customer id; the kept values are read from the vault.
        result = ErasureService(store, vault, rotated, audit).erase([customer], "rot-1", "cli")
    finally:
        audit.close()

    assert result.persons_erased == 1
    assert result.identifiers_suppressed == 3
    # An unreadable phone is still suppressed under the key it was stored with.
    phones = {keyring.hash(phone)} if phone_key_shredded else set(rotated.candidates(phone))
    expected = {*rotated.candidates(customer), *rotated.candidates(email), *phones}
    assert store.read(lambda tx: tx.suppressed(list(expected))) == expected
    new_engine = ResolutionEngine(store, rotated, policy, sealer=vault)
    (outcome,) = new_engine.ingest([IdentityEvent((email,), "web", T0)])
    assert outcome.refusals[0].reason is RefusalReason.SUPPRESSED
    # Retire the old key: the email is still suppressed under the new one.
    retired = Keyring([HashKey("k2", bytes(range(32, 64)))], "k2")
    (outcome,) = ResolutionEngine(store, retired, policy, sealer=vault).ingest(
        [IdentityEvent((email,), "web", T0)]
    )
    assert outcome.refusals[0].reason is RefusalReason.SUPPRESSED


def test_unknown_identifier_is_suppressed_though_nothing_is_erased(
    store: SqliteGraphStore,
    engine: ResolutionEngine,
    vault: Vault,
    keyring: Keyring,
    ids: Ids,
    tmp_path: Path,
) -> None:
    audit = SqliteAuditLog(tmp_path / "audit.sqlite3")
    try:
        result = ErasureService(store, vault, keyring, audit).erase(
            [ids("email", "never@seen.de")], "none-1", "cli"
        )
    finally:
        audit.close()

    assert (result.persons_erased, result.identifiers_suppressed) == (0, 1)
    (outcome,) = engine.ingest([ids.event(("email", "never@seen.de"))])
    assert outcome.outcome is Outcome.REFUSED


def test_lifting_suppression_lets_the_identifier_be_ingested_again_and_is_audited(
    store: SqliteGraphStore,
    engine: ResolutionEngine,
    vault: Vault,
    keyring: Keyring,
    ids: Ids,
    tmp_path: Path,
) -> None:
    audit = SqliteAuditLog(tmp_path / "audit.sqlite3")
    try:
        service = ErasureService(store, vault, keyring, audit)
        engine.ingest([ids.event(("email", "back@x.de"), ("cookie_id", "ck-back"))])
        service.erase([ids("email", "back@x.de")], "er-1", "cli")

        assert service.lift_suppression([ids("email", "back@x.de")], "optin-1", "cli") == 1

        (outcome,) = engine.ingest([ids.event(("email", "back@x.de"))])
        assert outcome.outcome is Outcome.CREATED
        (cookie,) = engine.ingest([ids.event(("cookie_id", "ck-back"))])
        assert cookie.outcome is Outcome.REFUSED  # still suppressed: not named in the opt-in
        lifted = [e for e in audit.entries() if e.action == "dsr.suppression_lifted"]
        assert [e.details["identifiers_lifted"] for e in lifted] == [1]
    finally:
        audit.close()


@pytest.mark.sqlite_only
def test_graph_store_runs_with_secure_delete(store: SqliteGraphStore) -> None:
    assert store.read(lambda tx: tx._conn.execute("PRAGMA secure_delete").fetchone()) == (1,)


def test_cli_lifts_suppression_only_after_confirmation_and_never_prints_the_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.setenv("IDGRAPH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IDGRAPH_POLICY_DIR", str(REPO / "policies"))
    monkeypatch.setenv("IDGRAPH_DEFAULT_REGION", "GB")
    monkeypatch.setenv("IDGRAPH_ENV", "test")
    monkeypatch.setenv("IDGRAPH_PII_SCAN", "false")
    settings = Settings()
    container = build_container(settings)
    try:
        email = container.identity_policy.normalize("email", ANN["email"], "GB")
        container.engine.ingest([IdentityEvent((email,), "web", T0)])
        _service(container).erase([email], "er-cli", "cli")
    finally:
        container.close()
    runner = CliRunner()
    args = ["dsr", "lift-suppression", "--type", "email", "--value", "-", "--request-id", "opt-1"]

    declined = runner.invoke(app, args, input=ANN["email"] + "\nn\n")
    accepted = runner.invoke(app, args, input=ANN["email"] + "\ny\n")
    again = runner.invoke(app, [*args, "--yes"], input=ANN["email"] + "\n")

    assert declined.exit_code == 1, declined.output
    assert accepted.exit_code == 0, accepted.output
    assert again.exit_code == 3, again.output  # nothing left to lift
    for result in (declined, accepted, again):
        assert ANN["email"].lower() not in result.output.lower()
    container = build_container(settings)
    try:
        (outcome,) = container.engine.ingest([IdentityEvent((email,), "web", T0)])
        assert outcome.outcome is Outcome.CREATED
        lifted = [e for e in container.audit.entries() if e.action == "dsr.suppression_lifted"]
        assert [(e.actor, e.details["request_id"]) for e in lifted] == [("cli", "opt-1")] * 2
    finally:
        container.close()


@pytest.mark.sqlite_only
def test_store_copy_carries_the_suppression_list_so_erased_persons_stay_erased(
    store: SqliteGraphStore,
    engine: ResolutionEngine,
    policy: IdentityPolicy,
    vault: Vault,
    keyring: Keyring,
    ids: Ids,
    tmp_path: Path,
) -> None:
    from identity.store.copy import copy_graph

    engine.ingest([ids.event(("email", "gone@x.de"), ("cookie_id", "ck-gone"))])
    engine.ingest([ids.event(("email", "kept@x.de"))])
    audit = SqliteAuditLog(tmp_path / "audit.sqlite3")
    try:
        ErasureService(store, vault, keyring, audit).erase(
            [ids("email", "gone@x.de")], "c-1", "cli"
        )
    finally:
        audit.close()
    store.checkpoint()
    target = SqliteGraphStore(tmp_path / "target.sqlite3")
    try:
        report = copy_graph(store.path, target, batch_size=1)

        assert (report.persons, report.suppressed) == (1, 2)
        copied = ResolutionEngine(target, keyring, policy, sealer=vault)
        (again,) = copied.ingest([ids.event(("email", "gone@x.de"), ("cookie_id", "ck-gone"))])
        assert again.outcome is Outcome.REFUSED
        assert copied.resolve(ids("email", "kept@x.de")) is not None
    finally:
        target.close()


def test_the_dsr_worker_finishes_an_interrupted_erasure_on_its_next_pass(
    api: Api, two_persons: tuple[Subject, Subject]
) -> None:
    container = api.container
    ann, bob = two_persons
    blobs = _ann_blobs(container, ann)
    service = _service(container, vault=_VaultFailingOnce(container.vault))
    with pytest.raises(ErasureIncompleteError):
        service.erase(_normalized(container, ANN)[:1], "dsr-req-6", "cli")
    assert len(container.store.read(lambda tx: tx.pending_erasures())) == 1

    report = container.dsr.run_once()  # one worker tick, not a restart

    assert report.erasures_recovered == 1
    assert container.store.read(lambda tx: tx.pending_erasures()) == []
    with pytest.raises(DataKeyDestroyedError):
        container.vault.decrypt_many(blobs)
    _assert_intact(container, bob)
