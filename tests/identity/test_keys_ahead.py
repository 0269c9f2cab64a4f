"""New anchors take node ids whose vault keys were stored before the graph write (issue 14):
one durable commit per ingest batch instead of a key-file commit plus the graph commit."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE
from typing import Any

import pytest

from identity.hashing import Keyring
from identity.model import Fact, FactInput, FactKind, FactStatus, IdentityEvent, new_node_id
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store.sqlite import SqliteGraphStore
from privacy.keys.keyprovider import LocalFileKeyProvider, WrappedKey, create_kek_file
from privacy.keys.process import ProcessIdentity, process_identity
from privacy.keys.vault import REFS_OWNER, Vault
from privacy.keys.vault_sqlite import SqliteVaultKeyStore
from tests.conftest import T0, Ids

SEALED_KINDS = (FactKind.RAW_IDENTIFIER, FactKind.ATTRIBUTE)


class CountingKeyStore(SqliteVaultKeyStore):
    """The real key store, counting its key-inserting transactions."""

    inserts = 0

    def insert_new(
        self,
        rows: Sequence[tuple[str, WrappedKey]],
        shred_refs: Mapping[str, str],
        holder: int | None = None,
    ) -> dict[str, WrappedKey]:
        self.inserts += 1
        return super().insert_new(rows, shred_refs, holder)

    def insert_ahead(
        self,
        rows: Sequence[tuple[str, WrappedKey]],
        shred_refs: Mapping[str, str],
        process: ProcessIdentity,
        settled: Collection[int] = (),
    ) -> tuple[int, dict[str, WrappedKey]]:
        self.inserts += 1
        return super().insert_ahead(rows, shred_refs, process, settled)


class WatchedStore:
    """The real graph store; calls ``before_write`` when a write transaction starts."""

    def __init__(self, store: SqliteGraphStore, before_write: Callable[[], None]) -> None:
        self._store = store
        self._before_write = before_write

    def write(self, fn: Callable[[Any], Any]) -> Any:
        self._before_write()
        return self._store.write(fn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def key_store(tmp_path: Path) -> Iterator[CountingKeyStore]:
    store = CountingKeyStore(tmp_path / "vault-keys.sqlite3")
    yield store
    store.close()


@dataclass
class Keyed:
    """A vault on the counting key store, a graph store and an engine sealing through both."""

    vault: Vault
    graph: SqliteGraphStore
    engine: ResolutionEngine


KeyedFactory = Callable[..., Keyed]


@pytest.fixture
def keyed(
    tmp_path: Path, key_store: CountingKeyStore, keyring: Keyring, policy: IdentityPolicy
) -> Iterator[KeyedFactory]:
    """``keyed(pool_size=..., vault=None, before_write=None)``: the set-up most tests share
    (``before_write``: called as each graph write starts); graph stores closed at teardown."""
    graphs: list[SqliteGraphStore] = []

    def make(
        *,
        pool_size: int = 4,
        vault: Vault | None = None,
        before_write: Callable[[], None] | None = None,
    ) -> Keyed:
        vault = vault or _vault(tmp_path, key_store, pool_size=pool_size)
        graph = SqliteGraphStore(tmp_path / "graph.sqlite3")
        graphs.append(graph)
        store: Any = graph if before_write is None else WatchedStore(graph, before_write)
        engine = ResolutionEngine(store, keyring, policy, sealer=vault, owner_reservations=vault)
        return Keyed(vault, graph, engine)

    yield make
    for graph in graphs:
        graph.close()


def _vault(tmp_path: Path, keys: SqliteVaultKeyStore, pool_size: int) -> Vault:
    create_kek_file(tmp_path / "kek.json", origin="generated")
    vault = Vault(keys, LocalFileKeyProvider(tmp_path / "kek.json"), pool_size=pool_size)
    vault.reference_key(b"test")  # the reference root key: made once per key file, first
    if isinstance(keys, CountingKeyStore):
        keys.inserts = 0
    return vault


def _event(ids: Ids, n: int) -> IdentityEvent:
    city = FactInput(FactKind.ATTRIBUTE, "city", "location", T0, b'"Lyon"')
    return IdentityEvent(
        (ids("customer_id", f"C-{n}"), ids("email", f"p{n}@shop.de"), ids("cookie_id", f"c{n}")),
        "web",
        T0,
        (city,),
    )


def _sealed_facts(store: SqliteGraphStore, person_id: str) -> list[Fact]:
    return store.read(lambda tx: tx.person_facts(person_id, SEALED_KINDS, FactStatus.ACTIVE))


def _sealed_owners(store: SqliteGraphStore, person_id: str) -> set[str]:
    return {f.node_id for f in _sealed_facts(store, person_id)}


def _opened(vault: Vault, store: SqliteGraphStore, person_id: str | None) -> list[bytes]:
    """The person's sealed values, opened by ``vault``."""
    facts = _sealed_facts(store, person_id or "")
    return vault.decrypt_many([(f.node_id, f.seal_field, f.sealed) for f in facts])


def test_new_anchors_get_keys_stored_before_the_graph_write_when_reservations_are_on(
    tmp_path: Path, key_store: CountingKeyStore, keyed: KeyedFactory, ids: Ids
) -> None:
    # A second connection, as another process (or the file after a crash) would see the keys.
    outside = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")
    at_write: list[set[str]] = []

    def keys_on_disk() -> None:
        at_write.append({owner for owner, _ in outside.not_under("none", "", 100_000)})

    setup = keyed(pool_size=64, before_write=keys_on_disk)
    vault, graph, engine = setup.vault, setup.graph, setup.engine
    try:
        (first,) = engine.ingest([_event(ids, 1)])
        inserts_after_first = key_store.inserts
        outcomes = [engine.ingest([_event(ids, n)])[0] for n in range(2, 12)]

        # The customer id (hub: it anchors the trait) and the email (kept raw) are sealed.
        for outcome, known in zip([first, *outcomes], at_write, strict=True):
            assert outcome.person_id is not None
            owners = _sealed_owners(graph, outcome.person_id)
            assert len(owners) == 2
            assert owners <= known  # every key was on disk before the graph write began
        # The pool (64) covers the next ten events (2-3 ids each): no key-file write at all.
        assert inserts_after_first == 1
        assert key_store.inserts == 1
        # And the values open.
        plain = _opened(vault, graph, first.person_id)
        assert sorted(plain) == [b'"Lyon"', b"p1@shop.de"]
    finally:
        outside.close()


def test_unused_reserved_ids_go_back_to_the_pool_when_identifiers_already_exist(
    key_store: CountingKeyStore, keyed: KeyedFactory, ids: Ids
) -> None:
    setup = keyed(pool_size=4)
    for _ in range(10):
        setup.engine.ingest([_event(ids, 1)])
    # Each event reserves 2 ids (the email, the hub with a trait). The first uses both
    # (one refill of 4); every later one finds all its identifiers and gives both back, so
    # the pool never runs dry again (without giving back: a refill every other event).
    assert key_store.inserts == 1
    assert setup.graph.stats().identifiers == 3


def test_batches_larger_than_the_pool_store_their_keys_before_the_graph_write(
    tmp_path: Path, key_store: CountingKeyStore, keyed: KeyedFactory, ids: Ids
) -> None:
    # A bulk batch seals more new anchors than the pool holds: its keys used to be made at seal
    # time, a key-file commit inside the graph writer's turn. They are made by prepare now.
    outside = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")
    at_write: list[tuple[int, set[str]]] = []

    def keys_on_disk() -> None:
        known = {owner for owner, _ in outside.not_under("none", "", 100_000)}
        at_write.append((key_store.inserts, known))

    setup = keyed(pool_size=4, before_write=keys_on_disk)
    vault, graph, engine = setup.vault, setup.graph, setup.engine
    try:
        prepared = engine.prepare([_event(ids, n) for n in range(20)])  # 40 anchors > 4
        assert key_store.inserts == 1  # one key-file transaction, before any graph write
        outcomes = engine.ingest_prepared([prepared])
        ((inserts_at_write, known),) = at_write
        assert inserts_at_write == 1
        assert key_store.inserts == 1  # the writer made no key
        for outcome in outcomes:
            owners = _sealed_owners(graph, outcome.person_id or "")
            assert len(owners) == 2
            assert owners <= known  # durable before the graph write began
        plain = _opened(vault, graph, outcomes[7].person_id)
        assert sorted(plain) == [b'"Lyon"', b"p7@shop.de"]
    finally:
        outside.close()


def test_batches_above_the_keys_ahead_bound_make_their_keys_at_seal_time(
    tmp_path: Path, key_store: CountingKeyStore, keyed: KeyedFactory, ids: Ids
) -> None:
    create_kek_file(tmp_path / "kek.json", origin="generated")
    vault = Vault(
        key_store, LocalFileKeyProvider(tmp_path / "kek.json"), pool_size=4, max_keys_ahead=10
    )
    vault.reference_key(b"test")
    key_store.inserts = 0
    setup = keyed(vault=vault)
    assert vault.reserve_owners(11, new_node_id) == []
    assert key_store.inserts == 0
    outcomes = setup.engine.ingest([_event(ids, n) for n in range(20)])
    assert key_store.inserts == 1  # one key-file transaction for the whole batch, as before
    for outcome in outcomes:
        assert len(_sealed_owners(setup.graph, outcome.person_id or "")) == 2


def test_unused_keys_made_ahead_serve_the_next_batch_and_are_deleted_at_a_stop(
    tmp_path: Path, key_store: CountingKeyStore, keyed: KeyedFactory, ids: Ids
) -> None:
    setup = keyed(pool_size=4)
    vault, graph, engine = setup.vault, setup.graph, setup.engine
    engine.ingest([_event(ids, n) for n in range(10)])
    assert key_store.inserts == 1
    # The same events again: every identifier exists, so the 20 keys made for them are
    # unused; the next batch of 10 new events (20 anchors) takes them, making none.
    engine.ingest([_event(ids, n) for n in range(10)])
    assert key_store.inserts == 2
    outcomes = engine.ingest([_event(ids, n) for n in range(10, 20)])
    assert key_store.inserts == 2
    for outcome in outcomes:
        assert len(_sealed_owners(graph, outcome.person_id or "")) == 2
    # A stop deletes keys made ahead that no value uses; every sealed owner keeps its key.
    engine.ingest([_event(ids, n) for n in range(10)])  # 20 more spares
    sealed = {
        owner
        for n in range(20)
        for owner in _sealed_owners(graph, engine.resolve(ids("email", f"p{n}@shop.de")) or "")
    }
    assert len(sealed) == 40
    assert len(_owners_in_key_file(tmp_path)) == 60
    vault.discard_pool()
    assert _owners_in_key_file(tmp_path) == sealed


def test_reserved_owners_have_keys_another_connection_sees(
    tmp_path: Path, key_store: CountingKeyStore
) -> None:
    vault = _vault(tmp_path, key_store, pool_size=8)
    owners = vault.reserve_owners(3, new_node_id)
    outside = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")
    try:
        assert set(outside.get_many(owners)) == set(owners)
        assert len(set(owners)) == 3
        assert key_store.inserts == 1
        blob = vault.encrypt(owners[0], "email", b"ann@shop.de")
        assert key_store.inserts == 1  # sealing under a reserved owner writes no key
        assert vault.decrypt(owners[0], "email", blob) == b"ann@shop.de"
        assert not set(owners) & set(vault.reserve_owners(5, new_node_id))  # never handed twice
    finally:
        outside.close()


def _owners_in_key_file(tmp_path: Path) -> set[str]:
    outside = sqlite3.connect(tmp_path / "vault-keys.sqlite3")
    try:
        return {r[0] for r in outside.execute("SELECT owner FROM data_keys")} - {REFS_OWNER}
    finally:
        outside.close()


def test_a_stopping_vault_removes_its_unused_keys_but_keeps_those_handed_out(
    tmp_path: Path, key_store: CountingKeyStore, keyed: KeyedFactory, ids: Ids
) -> None:
    # Keys made ahead and never handed out used to stay in the key file at every stop
    # (up to pool_size per process): wrapped random keys nothing was ever sealed under.
    setup = keyed(pool_size=8)
    vault, graph, engine = setup.vault, setup.graph, setup.engine
    (outcome,) = engine.ingest([_event(ids, 1)])
    used = _sealed_owners(graph, outcome.person_id or "")
    assert len(used) == 2
    in_flight = vault.reserve_owners(1, new_node_id)  # a write may be sealing under it
    assert len(_owners_in_key_file(tmp_path)) == 8

    assert vault.discard_pool() == 5

    assert _owners_in_key_file(tmp_path) == used | set(in_flight)
    assert vault.reserve_owners(1, new_node_id) == []  # nothing is handed out any more
    blob = vault.encrypt(in_flight[0], "email", b"ann@shop.de")
    assert vault.decrypt(in_flight[0], "email", blob) == b"ann@shop.de"
    # Values stored before are still readable, and later ingest still seals (at seal time).
    assert len(_opened(vault, graph, outcome.person_id)) == 2
    (later,) = engine.ingest([_event(ids, 2)])
    assert len(_sealed_owners(graph, later.person_id or "")) == 2


def test_ids_given_back_after_the_pool_was_discarded_lose_their_keys_too(
    tmp_path: Path, key_store: CountingKeyStore
) -> None:
    vault = _vault(tmp_path, key_store, pool_size=4)
    taken = vault.reserve_owners(2, new_node_id)
    vault.discard_pool()
    assert _owners_in_key_file(tmp_path) == set(taken)
    vault.release_owners(taken[:1])  # a committed write that did not use it
    assert _owners_in_key_file(tmp_path) == set(taken[1:])


def _gone_process() -> ProcessIdentity:
    """The identity of a process of this machine that has exited (a crashed server)."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=PIPE)
    try:
        return process_identity(child.pid)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()


def test_a_sweep_removes_the_unused_keys_of_a_process_that_died_and_only_those(
    tmp_path: Path, key_store: CountingKeyStore, keyed: KeyedFactory, ids: Ids
) -> None:
    # A process killed with keys in its pool (and an id handed out whose write never happened)
    # left them in the key file for good; the crash suite counted them as orphans.
    sweeper = _vault(tmp_path, key_store, pool_size=4)  # this process, starting up
    provider = LocalFileKeyProvider(tmp_path / "kek.json")
    dead = Vault(key_store, provider, pool_size=8, process=_gone_process())
    graph, engine = (setup := keyed(vault=dead)).graph, setup.engine
    (outcome,) = engine.ingest([_event(ids, 1)])
    used = _sealed_owners(graph, outcome.person_id or "")
    dead.reserve_owners(1, new_node_id)  # handed out; the process died before its write
    live = Vault(key_store, provider, pool_size=4)  # another vault of a running process
    live_taken = live.reserve_owners(1, new_node_id)
    live_keys = _owners_in_key_file(tmp_path) - used
    pooled = {owner for owner, _ in live._pool}
    live_keys = {o for o in live_keys if o in set(live_taken) or o in pooled}
    assert len(live_keys) == 4

    def existing(owners: Sequence[str]) -> set[str]:
        return graph.read(lambda tx: tx.existing_nodes(owners))

    assert sweeper.sweep_unused(existing) == 6  # five in the pool, one handed out

    assert _owners_in_key_file(tmp_path) == used | live_keys
    assert sweeper.sweep_unused(existing) == 0  # nothing more: the used keys are settled
    assert len(_opened(sweeper, graph, outcome.person_id)) == 2
    assert live.reserve_owners(3, new_node_id)  # the live pool still hands out its ids


def test_a_clean_stop_leaves_the_ids_it_handed_out_to_the_next_sweep(
    tmp_path: Path, key_store: CountingKeyStore, keyed: KeyedFactory, ids: Ids
) -> None:
    setup = keyed(pool_size=8)
    stopping, graph, engine = setup.vault, setup.graph, setup.engine
    (outcome,) = engine.ingest([_event(ids, 1)])
    used = _sealed_owners(graph, outcome.person_id or "")
    # Handed out to a write that failed: dropped, not given back.
    failed = stopping.reserve_owners(1, new_node_id)
    assert stopping.discard_pool() == 5
    assert _owners_in_key_file(tmp_path) == used | set(failed)

    starting = Vault(key_store, LocalFileKeyProvider(tmp_path / "kek.json"))
    swept = starting.sweep_unused(lambda owners: graph.read(lambda tx: tx.existing_nodes(owners)))

    assert swept == 1
    assert _owners_in_key_file(tmp_path) == used


class _SizedStore(CountingKeyStore):
    """Also records how many keys each key-inserting transaction stored."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.sizes: list[int] = []

    def insert_new(
        self,
        rows: Sequence[tuple[str, WrappedKey]],
        shred_refs: Mapping[str, str],
        holder: int | None = None,
    ) -> dict[str, WrappedKey]:
        self.sizes.append(len(rows))
        return super().insert_new(rows, shred_refs, holder)

    def insert_ahead(
        self,
        rows: Sequence[tuple[str, WrappedKey]],
        shred_refs: Mapping[str, str],
        process: ProcessIdentity,
        settled: Collection[int] = (),
    ) -> tuple[int, dict[str, WrappedKey]]:
        self.sizes.append(len(rows))
        return super().insert_ahead(rows, shred_refs, process, settled)


def test_refills_start_small_and_double_so_a_busy_writer_pays_few_key_commits(
    tmp_path: Path,
) -> None:
    store = _SizedStore(tmp_path / "vault-keys.sqlite3")
    try:
        one_shot = _vault(tmp_path, store, pool_size=4096)
        store.sizes.clear()  # the reference root key
        assert len(one_shot.reserve_owners(1, new_node_id)) == 1
        assert store.sizes == [256]  # a one-shot process makes a few hundred keys, not thousands
        store.sizes.clear()
        busy = Vault(store, LocalFileKeyProvider(tmp_path / "kek.json"), pool_size=4096)
        taken = [busy.reserve_owners(200, new_node_id) for _ in range(40)]  # 50-event requests
        assert all(len(ids) == 200 for ids in taken)
        assert len({owner for ids in taken for owner in ids}) == 8000
        # Pools of 256, 512, ..., 4096, then 4096 again (each refill tops the pool up): six
        # key-file commits for 40 requests, where a fixed pool of 256 made one per request (40).
        assert len(store.sizes) == 6, store.sizes
        assert store.sizes[:2] == [256, 512 - 56], store.sizes  # 56 left over from the first
        assert max(store.sizes) <= 4096
        # Above the pool: made for that call alone, in one commit, leaving the pool as it was.
        pooled = len(store.sizes)
        assert len(busy.reserve_owners(4097, new_node_id)) == 4097
        assert store.sizes[pooled:] == [4097]
        assert len(busy.reserve_owners(1000, new_node_id)) == 1000
        assert len(store.sizes) == pooled + 1
    finally:
        store.close()


def test_prepared_parts_are_written_in_one_transaction_when_prepared_before_the_write(
    key_store: CountingKeyStore, keyed: KeyedFactory, ids: Ids
) -> None:
    # prepare() (hashing, key reservation) touches no graph; ingest_prepared() writes several
    # callers' parts in one transaction, in order, each seeing the ones before it.
    writes: list[int] = []
    setup = keyed(pool_size=64, before_write=lambda: writes.append(1))
    graph, engine = setup.graph, setup.engine
    first = engine.prepare([_event(ids, 1)])
    # The second part names the first part's email: linked to its person, not created.
    again = IdentityEvent((ids("email", "p1@shop.de"), ids("cookie_id", "c-2")), "web", T0)
    second = engine.prepare([again, _event(ids, 3)])
    assert writes == []
    assert graph.stats().identifiers == 0
    assert key_store.inserts == 1  # both parts' keys: one refill, before any write

    outcomes = engine.ingest_prepared([first, second])

    assert writes == [1]
    assert key_store.inserts == 1  # the write made no key of its own
    assert [o.outcome.value for o in outcomes] == ["created", "linked", "created"]
    assert outcomes[0].person_id == outcomes[1].person_id != outcomes[2].person_id
    for outcome in (outcomes[0], outcomes[2]):
        assert len(_sealed_owners(graph, outcome.person_id or "")) == 2
    assert graph.stats().identifiers == 7


def test_keys_made_ahead_still_seal_when_a_shred_happens_before_the_write(
    tmp_path: Path, key_store: CountingKeyStore, keyed: KeyedFactory, ids: Ids
) -> None:
    # A shred (any erasure, in any process) between prepare and the write: the keys handed out
    # are then read back from the key file, not taken from memory; nothing else changes.
    setup = keyed(pool_size=4)
    vault, graph, engine = setup.vault, setup.graph, setup.engine
    (erased,) = engine.ingest([_event(ids, 99)])
    gone = _sealed_owners(graph, erased.person_id or "")
    prepared = engine.prepare([_event(ids, n) for n in range(10)])
    assert key_store.inserts == 2  # the first event's pool refill, then this batch's keys
    vault.shred(gone)
    stored = _owners_in_key_file(tmp_path)
    outcomes = engine.ingest_prepared([prepared])
    assert _owners_in_key_file(tmp_path) == stored  # no new key: the stored ones were used
    for n, outcome in enumerate(outcomes):
        plain = _opened(vault, graph, outcome.person_id)
        assert sorted(plain) == [b'"Lyon"', f"p{n}@shop.de".encode()]


def _marked(tmp_path: Path) -> int:
    """Keys that still carry a holder mark (left to a start-up sweep if their process dies)."""
    outside = sqlite3.connect(tmp_path / "vault-keys.sqlite3")
    try:
        (count,) = outside.execute(
            "SELECT count(*) FROM data_keys WHERE holder IS NOT NULL"
        ).fetchone()
        return int(count)
    finally:
        outside.close()


def test_a_sweep_after_a_crash_removes_the_keys_made_ahead_for_a_batch_never_written(
    tmp_path: Path, key_store: CountingKeyStore, keyed: KeyedFactory, ids: Ids
) -> None:
    # A bulk process killed between a batch's key commit and its graph commit used to leave
    # that batch's keys (up to 32,768, ids that exist nowhere) in the key file for good.
    sweeper = _vault(tmp_path, key_store, pool_size=4)  # this process, starting up
    dead = Vault(
        key_store, LocalFileKeyProvider(tmp_path / "kek.json"), pool_size=4, process=_gone_process()
    )
    setup = keyed(vault=dead)
    written = setup.engine.ingest([_event(ids, n) for n in range(10)])  # 20 keys made ahead
    used = {o for w in written for o in _sealed_owners(setup.graph, w.person_id or "")}
    assert len(used) == 20
    setup.engine.prepare([_event(ids, n) for n in range(10, 20)])  # killed before its write
    assert len(_owners_in_key_file(tmp_path) - used) == 20
    assert _marked(tmp_path) == 20  # the batch in flight; the committed one's marks cleared
    asked: list[str] = []

    def existing(owners: Sequence[str]) -> set[str]:
        asked.extend(owners)
        return setup.graph.read(lambda tx: tx.existing_nodes(owners))

    assert sweeper.sweep_unused(existing) == 20

    assert _owners_in_key_file(tmp_path) == used
    # Bounded: the committed batch's marks were cleared by the next key commit, so the sweep
    # read the 20 owners of the batch in flight only, not every key the import made.
    assert len(asked) == 20
    assert not set(asked) & used
    assert _marked(tmp_path) == 0
    plain = _opened(sweeper, setup.graph, written[3].person_id)
    assert sorted(plain) == [b'"Lyon"', b"p3@shop.de"]


def test_keys_made_ahead_keep_no_mark_once_their_batches_committed_and_the_vault_stopped(
    tmp_path: Path, key_store: CountingKeyStore, keyed: KeyedFactory, ids: Ids
) -> None:
    setup = keyed(pool_size=4)
    setup.engine.ingest([_event(ids, n) for n in range(10)])
    # The same events plus new ones: the 20 keys of the repeated ones are spares (still marked).
    setup.engine.ingest([_event(ids, n) for n in range(20)])
    assert _marked(tmp_path) > 0
    setup.vault.discard_pool()
    assert _marked(tmp_path) == 0  # nothing left for a sweep: every key is used or deleted
    assert len(_owners_in_key_file(tmp_path)) == 40


class _TransactionCountingStore(CountingKeyStore):
    """Also counts the key file's write transactions (each one an fsync'd commit)."""

    writes = 0

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self.writes += 1
        with super()._write() as conn:
            yield conn


def test_each_batch_of_keys_made_ahead_is_one_key_file_commit_that_also_clears_used_marks(
    tmp_path: Path, ids: Ids, keyring: Keyring, policy: IdentityPolicy
) -> None:
    store = _TransactionCountingStore(tmp_path / "vault-keys.sqlite3")
    graph = SqliteGraphStore(tmp_path / "graph.sqlite3")
    try:
        vault = _vault(tmp_path, store, pool_size=4)
        engine = ResolutionEngine(graph, keyring, policy, sealer=vault, owner_reservations=vault)
        engine.ingest([_event(ids, n) for n in range(10)])  # 20 anchors: keys made ahead
        # All 20 used by the committed write; their holder's release is left to the next
        # key-file commit (no commit of its own).
        assert _marked(tmp_path) == 20
        store.writes = 0
        outcomes = engine.ingest([_event(ids, n) for n in range(10, 20)])
        # The earlier batch's marks cleared, a holder registered and 20 keys stored: one
        # transaction (three fsync'd commits before: release_holder, register_holder, insert).
        assert store.writes == 1
        for outcome in outcomes:
            assert len(_sealed_owners(graph, outcome.person_id or "")) == 2
        with sqlite3.connect(tmp_path / "vault-keys.sqlite3") as conn:
            (holders,) = conn.execute("SELECT count(*) FROM pool_holders").fetchone()
        # Only the latest batch's holder is left (the first one's was released in that commit).
        assert holders == 1
        vault.discard_pool()
        assert _marked(tmp_path) == 0
    finally:
        graph.close()
        store.close()
