"""The SQLite graph store's reads do not wait for its write transactions (stop 45).

Until stop 45 one lock covered both connections, so every profile and audience read waited for
the whole of a 10,000-event write transaction (the asynchronous applier's, a bulk batch's):
profile p95 ~2 s during an async ingest. Now a read runs on its own connection under its own
lock and sees the snapshot of its start. Held deterministically: the write is parked inside its
transaction on an event, nothing is timed (each wait has a 30 s cap that only a hung test hits).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from identity import outbound
from identity.hashing import Keyring
from identity.model import FactKind, FactStatus, IdentityEvent, OutboundEvent
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store.port import GraphTransaction
from identity.store.sqlite import SqliteGraphStore
from tests.conftest import Ids

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteGraphStore]:
    store = SqliteGraphStore(tmp_path / "graph.sqlite3")
    yield store
    store.close()


def _held_write(
    event: OutboundEvent,
) -> tuple[threading.Event, threading.Event, Callable[[GraphTransaction], None]]:
    """(inside, release, write function): the function queues ``event``, sets ``inside`` and
    waits for ``release`` before its transaction commits."""
    inside, release = threading.Event(), threading.Event()

    def parked(tx: GraphTransaction) -> None:
        tx.add_outbound([event])
        inside.set()
        assert release.wait(30)

    return inside, release, parked


def test_a_read_runs_while_a_write_transaction_is_open_and_sees_only_what_was_committed(
    sqlite_store: SqliteGraphStore, keyring: Keyring, policy: IdentityPolicy, ids: Ids
) -> None:
    engine = ResolutionEngine(sqlite_store, keyring, policy, clock=lambda: T0)
    (ann,) = engine.ingest([IdentityEvent((ids("cookie_id", "ck-locks-ann"),), "web", T0)])
    assert ann.person_id is not None
    committed = outbound.person_erased("p_before", "e_before", T0)
    sqlite_store.write(lambda tx: tx.add_outbound([committed]))
    pending = outbound.person_erased("p_pending", "e_pending", T0)
    inside, release, parked = _held_write(pending)

    with ThreadPoolExecutor(1) as pool:
        writer = pool.submit(sqlite_store.write, parked)
        assert inside.wait(30)
        # The write is open and holds the store's write lock: both kinds of read answer now
        # (under one lock they waited here until the 30 s cap), from the committed snapshot.
        seen = sqlite_store.read(lambda tx: [e.event_id for e in tx.outbound_page(10)])
        profile = sqlite_store.person_read(
            ann.person_id, ("ad_targeting",), (FactKind.ATTRIBUTE,), FactStatus.ACTIVE
        )
        assert not writer.done()
        release.set()
        writer.result(30)

    assert seen == [committed.event_id]
    assert profile is not None
    # Once the write returned, a read sees it.
    after = sqlite_store.read(lambda tx: [e.event_id for e in tx.outbound_page(10)])
    assert after == [committed.event_id, pending.event_id]


def test_a_write_inside_a_read_callback_is_refused_instead_of_deadlocking(
    sqlite_store: SqliteGraphStore,
) -> None:
    event = outbound.person_erased("p_inner", "e_inner", T0)

    def write_inside(_tx: GraphTransaction) -> None:
        sqlite_store.write(lambda tx: tx.add_outbound([event]))

    with pytest.raises(RuntimeError, match="inside a read"):
        sqlite_store.read(write_inside)
    # Nothing was written, and the store goes on: reads and writes both work after it.
    assert sqlite_store.read(lambda tx: tx.outbound_page(10)) == []
    sqlite_store.write(lambda tx: tx.add_outbound([event]))
    assert [e.event_id for e in sqlite_store.read(lambda tx: tx.outbound_page(10))] == [
        event.event_id
    ]


def test_a_checkpoint_waits_for_the_stores_open_read_and_then_truncates_the_wal(
    sqlite_store: SqliteGraphStore,
) -> None:
    # An erasure's step 3 truncates the WAL that held the erased rows: a read of this store
    # that is still open would pin the WAL and the TRUNCATE would come back busy. The
    # checkpoint takes the read lock too, so it waits for the read and then completes.
    sqlite_store.write(lambda tx: tx.add_outbound([outbound.person_erased("p_wal", "e_wal", T0)]))
    wal = sqlite_store.path.with_name(sqlite_store.path.name + "-wal")
    assert wal.stat().st_size > 0
    reading, finish = threading.Event(), threading.Event()

    def slow_read(tx: GraphTransaction) -> int:
        rows = len(tx.outbound_page(10))
        reading.set()
        assert finish.wait(30)
        return rows

    with ThreadPoolExecutor(2) as pool:
        reader = pool.submit(sqlite_store.read, slow_read)
        assert reading.wait(30)
        checkpoint = pool.submit(sqlite_store.checkpoint)
        assert not checkpoint.done()  # waiting for the read, not failing busy
        finish.set()
        assert reader.result(30) == 1
        checkpoint.result(30)  # raises StoreUnavailableError if the WAL stayed pinned
    assert wal.stat().st_size == 0
