"""Group commit: concurrent callers share one transaction, each still gets its own answer.

The grouping is made deterministic by holding the first writer inside its write until every
other caller has queued behind it (no sleeps, no timing): the second writer must then take all
of them in one group.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from bootstrap.container import build_container
from bootstrap.settings import Settings
from identity.errors import BatchValidationError, CommitOutcomeUnknownError
from identity.group_commit import Arrival, GroupCommitter
from identity.model import EventOutcome, Outcome
from privacy.auditing.log import PERSON_REF_INFO, AuditDraft, SqliteAuditLog
from privacy.keys.vault import Vault
from services.inputs import IdentifyRequest
from services.metrics import StoreOperation
from tests.support.audit_support import CountingRefKeys
from tests.support.waits import lingering, wait_until

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
CALLERS = 12


def _queued(committer: GroupCommitter[Any, Any]) -> int:
    with committer._cond:
        return len(committer._queue)


def _hold_store(store: Any, release: threading.Event) -> threading.Thread:
    """A thread holding ``store``'s write lock until ``release`` (the first batch waits at it);
    returns once the lock is held."""
    held = threading.Event()

    def hold() -> None:
        with store._lock:
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(30)
    return holder


def _run_behind_a_held_writer(
    committer: GroupCommitter[Any, Any],
    release: threading.Event,
    calls: Sequence[Callable[[], Any]],
) -> list[Any]:
    """Start ``calls[0]`` (whose write blocks until ``release``), queue the others behind it,
    then release: returns every call's result (or exception) in order."""

    def outcome(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - returned for the test to inspect
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        first = pool.submit(outcome, calls[0])
        wait_until(lambda: committer.groups == 1)  # the first writer is inside its write
        rest = [pool.submit(outcome, call) for call in calls[1:]]
        wait_until(lambda: _queued(committer) == len(calls) - 1)
        release.set()
        return [first.result(), *(f.result() for f in rest)]


def test_callers_queued_behind_a_commit_are_written_in_one_group_when_it_ends() -> None:
    release = threading.Event()
    written: list[list[int]] = []

    def write(items: Sequence[int]) -> list[int]:
        if not written:
            release.wait(30)
        written.append(list(items))
        return [item * 10 for item in items]

    committer: GroupCommitter[int, int] = GroupCommitter(write)
    results = _run_behind_a_held_writer(
        committer, release, [partial(committer.submit, i) for i in range(CALLERS)]
    )

    assert results == [i * 10 for i in range(CALLERS)]
    assert written[0] == [0]
    assert sorted(written[1]) == list(range(1, CALLERS))  # one group, one transaction
    assert committer.groups == 2


def test_a_failing_item_fails_only_its_own_caller_when_its_group_is_written_again_alone() -> None:
    release = threading.Event()
    groups: list[list[int]] = []

    def write(items: Sequence[int]) -> list[int]:
        if not groups:
            release.wait(30)
        groups.append(list(items))
        if 7 in items:
            raise ValueError("item 7 is bad")
        return list(items)

    committer: GroupCommitter[int, int] = GroupCommitter(write)
    results = _run_behind_a_held_writer(
        committer, release, [partial(committer.submit, i) for i in range(CALLERS)]
    )

    assert isinstance(results[7], ValueError)
    assert [r for i, r in enumerate(results) if i != 7] == [i for i in range(CALLERS) if i != 7]


def test_a_group_whose_commit_outcome_is_unknown_is_not_written_again_and_all_are_told() -> None:
    # A connection lost during COMMIT (tests/identity/store/test_neo4j_ambiguous_commit.py does
    # it to a live Neo4j): the group may be committed, so writing its items again one by one
    # could apply them twice. Every caller of the group gets the error instead.
    release = threading.Event()
    groups: list[list[int]] = []
    unknown = CommitOutcomeUnknownError("connection lost while committing")

    def write(items: Sequence[int]) -> list[int]:
        if not groups:
            release.wait(30)
        groups.append(list(items))
        if len(groups) == 2:
            raise unknown
        return list(items)

    committer: GroupCommitter[int, int] = GroupCommitter(write)
    results = _run_behind_a_held_writer(
        committer, release, [partial(committer.submit, i) for i in range(CALLERS)]
    )

    assert results[0] == 0
    assert all(result is unknown for result in results[1:])
    assert len(groups) == 2  # the shared write only: nothing written again
    assert sorted(groups[1]) == list(range(1, CALLERS))


def test_a_group_is_bounded_by_max_group_and_the_rest_is_written_next() -> None:
    release = threading.Event()
    sizes: list[int] = []

    def write(items: Sequence[int]) -> list[int]:
        if not sizes:
            release.wait(30)
        sizes.append(len(items))
        return list(items)

    committer: GroupCommitter[int, int] = GroupCommitter(write, max_group=4)
    results = _run_behind_a_held_writer(
        committer, release, [partial(committer.submit, i) for i in range(CALLERS)]
    )

    assert results == list(range(CALLERS))
    assert sizes[0] == 1
    assert max(sizes) == 4
    assert sum(sizes) == CALLERS


def test_concurrent_audit_appends_share_a_transaction_and_the_chain_verifies(
    tmp_path: Path,
) -> None:
    release = threading.Event()
    calls = {"n": 0}

    def clock() -> datetime:  # read inside each append transaction: holds the first one
        calls["n"] += 1
        if calls["n"] == 1:
            release.wait(30)
        return datetime(2026, 3, 1, tzinfo=UTC)

    log = SqliteAuditLog(tmp_path / "audit.sqlite3", clock=clock)

    def append(i: int) -> list[int]:
        drafts = [
            AuditDraft("key_ops1", "read.profile", "analytics", f"r_{i}x{k}", "allow", "ok")
            for k in range(3)
        ]
        return [entry.seq for entry in log.append(drafts)]

    try:
        results = _run_behind_a_held_writer(
            log._group, release, [partial(append, i) for i in range(CALLERS)]
        )
        assert log._group.groups == 2
        # Every caller got its own three entries, contiguous, and together they fill 1..3N.
        for seqs in results:
            assert seqs == list(range(seqs[0], seqs[0] + 3))
        assert sorted(s for seqs in results for s in seqs) == list(range(1, 3 * CALLERS + 1))
        verification = log.verify()
        assert verification.ok
        assert verification.entries_checked == 3 * CALLERS
        # Acknowledged means on disk: another connection sees every entry.
        other = SqliteAuditLog(tmp_path / "audit.sqlite3")
        assert other.head().seq == 3 * CALLERS
        other.close()
    finally:
        log.close()


def test_appends_about_persons_share_one_reference_key_lookup_when_committed_together(
    tmp_path: Path, vault: Vault
) -> None:
    release = threading.Event()
    calls = {"n": 0}

    def clock() -> datetime:  # read inside each append transaction: holds the first one
        calls["n"] += 1
        if calls["n"] == 1:
            release.wait(30)
        return datetime(2026, 3, 1, tzinfo=UTC)

    ref_keys = CountingRefKeys(vault)
    log = SqliteAuditLog(
        tmp_path / "audit.sqlite3",
        clock=clock,
        person_ref_key=vault.reference_key(PERSON_REF_INFO),
        person_keys=ref_keys,
    )
    persons = [f"p_{i:024x}" for i in range(CALLERS)]

    def read_audit(i: int) -> str | None:
        draft = AuditDraft("key_ops1", "read.profile", "ad_targeting", None, "allow", "ok")
        # Every third read is of an id not known to exist: no key may be made for it.
        (entry,) = log.append_about(persons[i], [draft], create=i % 3 != 0)
        return entry.person_id

    try:
        results = _run_behind_a_held_writer(
            log._group, release, [partial(read_audit, i) for i in range(CALLERS)]
        )
        assert log._group.groups == 2
        # One lookup per group and kind (the held first writer's, then one each for the
        # known and the unknown persons of the second group), not one per read.
        assert len(ref_keys.calls) == 3
        assert sorted(len(ids) for ids, _ in ref_keys.calls[1:]) == [3, 8]
        for i, ref in enumerate(results):
            assert ref == log.person_ref(persons[i], create=i % 3 != 0)
        made = ref_keys.refs(persons, create=False)
        assert sorted(made) == sorted(p for i, p in enumerate(persons) if i % 3 != 0)
        assert log.verify().ok
    finally:
        log.close()


@pytest.fixture
def sqlite_container(tmp_path: Path) -> Any:
    container = build_container(
        Settings(env="test", data_dir=tmp_path / "data", policy_dir=POLICY_DIR, store_url=None)
    )
    yield container
    container.close()


def test_concurrent_identify_calls_are_resolved_in_one_engine_batch_with_their_own_outcomes(
    sqlite_container: Any,
) -> None:
    service = sqlite_container.ingest
    store = sqlite_container.store
    release = threading.Event()

    def request(i: int) -> IdentifyRequest:
        # Callers 1..N-1 name the shared email (one person in the end); caller 0 is alone.
        identifiers = [{"type": "cookie_id", "value": f"ck-group-{i:03d}"}]
        identifiers.append(
            {"type": "email", "value": "lone@idgraph.dev" if i == 0 else "team@idgraph.dev"}
        )
        return IdentifyRequest.model_validate({"identifiers": identifiers, "source": "web"})

    def first() -> Any:
        return service.identify(request(0), actor="test")

    holder = _hold_store(store, release)
    calls = [first, *(lambda i=i: service.identify(request(i), actor="test") for i in range(1, 4))]
    outcomes = _run_behind_a_held_writer(service._identify_group, release, calls)
    holder.join(30)

    assert service._identify_group.groups == 2
    assert all(not isinstance(o, Exception) for o in outcomes), outcomes
    assert outcomes[0].outcome is Outcome.CREATED
    # In arrival order within one batch: the first of the three creates, the others link.
    shared = {o.person_id for o in outcomes[1:]}
    assert len(shared) == 1
    assert outcomes[0].person_id not in shared
    assert sorted(o.outcome.value for o in outcomes[1:]) == ["created", "linked", "linked"]


def test_concurrent_ingest_batches_share_one_transaction_and_each_gets_its_own_outcomes(
    sqlite_container: Any,
) -> None:
    service = sqlite_container.ingest
    store = sqlite_container.store
    release = threading.Event()

    def batch(i: int) -> list[IdentifyRequest]:
        # Batches 1..N-1 each name the shared email once (one person in the end), plus a
        # cookie of their own; batch 0 is alone. Two events per batch.
        return [
            IdentifyRequest.model_validate(
                {
                    "identifiers": [
                        {"type": "cookie_id", "value": f"ck-batch-{i:03d}-{k}"},
                        {
                            "type": "email",
                            "value": "lone@idgraph.dev" if i == 0 else "team@idgraph.dev",
                        },
                    ],
                    "source": "web",
                }
            )
            for k in range(2)
        ]

    holder = _hold_store(store, release)
    calls = [lambda i=i: service.ingest(batch(i), actor="test") for i in range(4)]
    results = _run_behind_a_held_writer(service._batch_group, release, calls)
    holder.join(30)

    assert service._batch_group.groups == 2  # the first batch alone, then the three together
    assert all(not isinstance(r, Exception) for r in results), results
    assert [len(r) for r in results] == [2, 2, 2, 2]
    assert [o.outcome.value for o in results[0]] == ["created", "linked"]
    # In arrival order within one transaction: the first of the three creates, the rest link.
    later = [o for r in results[1:] for o in r]
    assert len({o.person_id for o in later}) == 1
    assert results[0][0].person_id not in {o.person_id for o in later}
    assert sorted(o.outcome.value for o in later) == ["created", *["linked"] * 5]


class _CountingMetrics:
    """Use-case metrics that count the store transactions they observe (a real sink, as an
    app's registry would be, only simpler to read)."""

    def __init__(self) -> None:
        self.transactions = 0

    @contextmanager
    def time_store(self, operation: StoreOperation) -> Iterator[None]:
        assert operation is StoreOperation.INGEST
        yield
        self.transactions += 1

    def record_ingest(self, outcomes: Iterable[EventOutcome]) -> None:
        pass


def test_batches_of_two_metrics_copies_share_one_transaction_and_both_count_it(
    sqlite_container: Any,
) -> None:
    # An app's ingest service is a with_metrics() copy of its container's: both must write
    # concurrent batches together (they had committers of their own, so never did).
    first_sink, second_sink = _CountingMetrics(), _CountingMetrics()
    first = sqlite_container.ingest.with_metrics(first_sink)
    second = sqlite_container.ingest.with_metrics(second_sink)
    store = sqlite_container.store
    release = threading.Event()

    def batch(i: int) -> list[IdentifyRequest]:
        return [
            IdentifyRequest.model_validate(
                {"identifiers": [{"type": "cookie_id", "value": f"ck-copies-{i}"}], "source": "web"}
            )
        ]

    holder = _hold_store(store, release)
    services = [first, second, first, second]
    calls = [lambda i=i: services[i].ingest(batch(i), actor="test") for i in range(4)]
    # Queued behind the first writer on one committer, whichever copy submitted them.
    results = _run_behind_a_held_writer(first._batch_group, release, calls)
    holder.join(30)

    assert all(not isinstance(r, Exception) for r in results), results
    assert [r[0].outcome.value for r in results] == ["created"] * 4
    assert second._batch_group.groups == 2  # the first batch alone, then the three together
    assert first_sink.transactions == 2  # its batches were in both transactions
    assert second_sink.transactions == 1  # its two batches were in the second one only


def test_every_item_is_written_once_by_one_writer_at_a_time_when_many_callers_race() -> None:
    # Writer hand-over under contention: whatever the interleaving, no two writes overlap, each
    # item is written exactly once and each caller gets its own result.
    active = threading.Lock()
    written: list[int] = []

    def write(items: Sequence[int]) -> list[int]:
        if not active.acquire(blocking=False):
            raise AssertionError("two writers at once")
        try:
            written.extend(items)
            return [item * 2 for item in items]
        finally:
            active.release()

    committer: GroupCommitter[int, int] = GroupCommitter(write, max_group=3)

    def caller(base: int) -> list[int]:
        return [committer.submit(base + k) for k in range(50)]

    with ThreadPoolExecutor(CALLERS) as pool:
        results = list(pool.map(caller, range(0, CALLERS * 1000, 1000)))

    assert results == [[(b + k) * 2 for k in range(50)] for b in range(0, CALLERS * 1000, 1000)]
    assert sorted(written) == sorted(
        b + k for b in range(0, CALLERS * 1000, 1000) for k in range(50)
    )
    assert committer.groups <= len(written)


# -- announced callers (coming) and the writer's linger ------------------------------------
# The linger is an hour in these tests: a writer that waited for it when it should not would
# hang the test (each wait below has a 30 s cap and fails), while the right behaviour finishes
# at once. Nothing is timed.
LONG_LINGER = 3600.0


def _recording() -> tuple[list[list[int]], Callable[[Sequence[int]], list[int]]]:
    """A write function that records each group it writes and answers ten times each item."""
    written: list[list[int]] = []

    def write(items: Sequence[int]) -> list[int]:
        written.append(list(items))
        return [item * 10 for item in items]

    return written, write


def _first_then_announced(committer: GroupCommitter[int, int], arrival: Arrival) -> tuple[int, int]:
    """Submit 1 at once and, once its writer lingers, 2 under ``arrival`` from another thread
    (as a server announces on its event loop and submits from a worker); both answers."""
    go = threading.Event()

    def worker() -> int:
        go.wait(30)
        return committer.submit(2, arrival)

    with ThreadPoolExecutor(2) as pool:
        late = pool.submit(worker)
        first = pool.submit(committer.submit, 1)
        wait_until(lambda: lingering(committer))  # the writer waits for the arrival
        go.set()
        return first.result(30), late.result(30)


def test_a_writer_waits_for_an_announced_caller_and_writes_both_in_one_group() -> None:
    written, write = _recording()
    committer: GroupCommitter[int, int] = GroupCommitter(write, linger_s=LONG_LINGER)
    announced, go = threading.Event(), threading.Event()

    def announced_caller() -> int:
        with committer.coming():
            announced.set()
            go.wait(30)
            return committer.submit(2)

    with ThreadPoolExecutor(2) as pool:
        second = pool.submit(announced_caller)
        assert announced.wait(30)
        first = pool.submit(committer.submit, 1)
        wait_until(lambda: lingering(committer))  # the writer waits for the announced one
        go.set()
        assert (first.result(30), second.result(30)) == (10, 20)

    assert written == [[1, 2]]
    assert committer.groups == 1


def test_a_lone_caller_with_nobody_announced_is_written_at_once() -> None:
    committer: GroupCommitter[int, int] = GroupCommitter(
        lambda items: [i + 1 for i in items], linger_s=LONG_LINGER
    )
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(committer.submit, 1).result(30) == 2

    def announced_self() -> int:  # its own announcement does not make it wait for itself
        with committer.coming():
            return committer.submit(7)

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(announced_self).result(30) == 8


def test_a_writer_stops_waiting_when_the_announced_caller_leaves_without_submitting() -> None:
    committer: GroupCommitter[int, int] = GroupCommitter(
        lambda items: [i + 1 for i in items], linger_s=LONG_LINGER
    )
    announced, leave = threading.Event(), threading.Event()

    def denied_reader() -> None:
        with committer.coming():  # a read that is then denied and appends nothing
            announced.set()
            leave.wait(30)

    with ThreadPoolExecutor(2) as pool:
        reader = pool.submit(denied_reader)
        assert announced.wait(30)
        writer = pool.submit(committer.submit, 1)
        wait_until(lambda: lingering(committer))
        leave.set()
        assert writer.result(30) == 2
        reader.result(30)
    with committer._cond:
        assert committer._coming == 0


def test_a_failed_announced_caller_withdraws_its_announcement() -> None:
    committer: GroupCommitter[int, int] = GroupCommitter(
        lambda items: [i + 1 for i in items], linger_s=LONG_LINGER
    )
    with pytest.raises(RuntimeError), committer.coming():
        raise RuntimeError("the read failed before its audit")
    with committer._cond:
        assert committer._coming == 0
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(committer.submit, 1).result(30) == 2


def test_queued_batches_are_prepared_by_their_callers_while_the_writer_is_busy(
    sqlite_container: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer's turn is only the transaction: each caller hashes its events and reserves
    # its node ids (with stored keys) itself, before it queues, so that work overlaps the
    # writer's commit instead of lengthening it. Seen here while the first writer is held:
    # the three queued callers have already reserved, each once, in its own thread.
    service = sqlite_container.ingest
    store = sqlite_container.store
    vault: Vault = sqlite_container.vault
    reserve = vault.reserve_owners
    reservations: list[tuple[int, int]] = []  # (thread, ids asked for)
    seen = threading.Lock()

    def recording(count: int, make_owner: Callable[[], str]) -> list[str]:
        with seen:
            reservations.append((threading.get_ident(), count))
        return reserve(count, make_owner)

    monkeypatch.setattr(vault, "reserve_owners", recording)
    release = threading.Event()
    callers: list[int] = []  # the calling threads

    def batch(i: int) -> list[IdentifyRequest]:
        # Two events per batch, each with a kept raw email and a trait: two sealed anchors.
        return [
            IdentifyRequest.model_validate(
                {
                    "identifiers": [
                        {"type": "cookie_id", "value": f"ck-prep-{i:03d}-{k}"},
                        {"type": "email", "value": f"prep.{i}.{k}@idgraph.dev"},
                    ],
                    "source": "web",
                    "traits": {"city": "Lyon"},
                }
            )
            for k in range(2)
        ]

    def call(i: int) -> Any:
        callers.append(threading.get_ident())
        return service.ingest(batch(i), actor="test")

    holder = _hold_store(store, release)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(call, 0)
        wait_until(lambda: service._batch_group.groups == 1)  # the writer is inside its write
        rest = [pool.submit(call, i) for i in range(1, 4)]
        wait_until(lambda: _queued(service._batch_group) == 3)
        with seen:
            before = list(reservations)
        release.set()
        results = [first.result(), *(f.result() for f in rest)]
    holder.join(30)

    assert all(not isinstance(r, Exception) for r in results), results
    assert service._batch_group.groups == 2  # the first batch alone, then the three together
    # Four reservations before the first writer was let go: one per caller, in its thread.
    assert sorted(thread for thread, _ in before) == sorted(callers)
    assert all(count == 4 for _, count in before)  # 2 events x (email + trait hub)
    assert reservations == before  # the writers reserved nothing more
    for result in results:
        assert [o.outcome.value for o in result] == ["created", "created"]


def test_an_ingest_batch_writer_waits_for_a_batch_still_being_validated_and_writes_both_at_once(
    sqlite_container: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # POST /v1/ingest batches are announced while they are validated: a writer that takes its
    # group meanwhile waits for them (fewer, larger transactions). Held deterministically: the
    # second batch's validation waits until the first batch's writer is seen lingering.
    service = sqlite_container.ingest
    assert service._batch_group._linger_s > 0  # the service's own committer lingers
    # The same committer with a linger no test machine outlasts (the wait ends on arrival).
    service._batch_group = GroupCommitter(
        service._ingest_batches, max_group=8, linger_s=LONG_LINGER
    )
    validating, go = threading.Event(), threading.Event()
    validate = service.events
    slow_thread: list[int] = []

    def held_validation(*args: Any, **kwargs: Any) -> Any:
        if slow_thread and threading.get_ident() == slow_thread[0]:
            validating.set()
            go.wait(30)
        return validate(*args, **kwargs)

    monkeypatch.setattr(service, "events", held_validation)

    def batch(name: str) -> list[IdentifyRequest]:
        return [
            IdentifyRequest.model_validate(
                {
                    "identifiers": [{"type": "cookie_id", "value": f"ck-linger-{name}-{k}"}],
                    "source": "web",
                }
            )
            for k in range(2)
        ]

    def slow() -> Any:
        slow_thread.append(threading.get_ident())
        return service.ingest(batch("slow"), actor="test")

    with ThreadPoolExecutor(2) as pool:
        second = pool.submit(slow)
        assert validating.wait(30)
        first = pool.submit(service.ingest, batch("first"), actor="test")
        wait_until(lambda: lingering(service._batch_group))  # waits for the validating batch
        go.set()
        results = [first.result(30), second.result(30)]

    assert service._batch_group.groups == 1  # both batches in one transaction
    assert [[o.outcome.value for o in r] for r in results] == [["created"] * 2] * 2


def test_an_invalid_ingest_batch_withdraws_its_announcement_and_writes_nothing(
    sqlite_container: Any,
) -> None:
    service = sqlite_container.ingest
    bad = IdentifyRequest.model_validate(
        {"identifiers": [{"type": "email", "value": "not-an-email"}], "source": "web"}
    )
    with pytest.raises(BatchValidationError):
        service.ingest([bad], actor="test")
    with service._batch_group._cond:
        assert service._batch_group._coming == 0
    assert service._batch_group.groups == 0


def test_an_identify_writer_waits_for_a_call_still_being_validated_and_writes_both_at_once(
    sqlite_container: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Identify calls are announced while they are validated and prepared, as ingest batches
    # are: a writer that takes its group meanwhile waits for them (fewer transactions, less
    # CPU per call). Held deterministically as above.
    service = sqlite_container.ingest
    assert service._identify_group._linger_s > 0  # the service's own committer lingers
    service._identify_group = GroupCommitter(
        service._ingest_group, max_group=50, linger_s=LONG_LINGER
    )
    validating, go = threading.Event(), threading.Event()
    validate = service.events
    slow_thread: list[int] = []

    def held_validation(*args: Any, **kwargs: Any) -> Any:
        if slow_thread and threading.get_ident() == slow_thread[0]:
            validating.set()
            go.wait(30)
        return validate(*args, **kwargs)

    monkeypatch.setattr(service, "events", held_validation)

    def call(name: str) -> IdentifyRequest:
        return IdentifyRequest.model_validate(
            {"identifiers": [{"type": "cookie_id", "value": f"ck-linger-{name}"}], "source": "web"}
        )

    def slow() -> Any:
        slow_thread.append(threading.get_ident())
        return service.identify(call("slow"), actor="test")

    with ThreadPoolExecutor(2) as pool:
        second = pool.submit(slow)
        assert validating.wait(30)
        first = pool.submit(service.identify, call("first"), actor="test")
        wait_until(lambda: lingering(service._identify_group))  # waits for the slow call
        go.set()
        results = [first.result(30), second.result(30)]

    assert service._identify_group.groups == 1  # both calls in one transaction
    assert [r.outcome.value for r in results] == ["created"] * 2


def test_an_invalid_identify_call_withdraws_its_announcement_and_writes_nothing(
    sqlite_container: Any,
) -> None:
    service = sqlite_container.ingest
    bad = IdentifyRequest.model_validate(
        {"identifiers": [{"type": "email", "value": "not-an-email"}], "source": "web"}
    )
    with pytest.raises(BatchValidationError):
        service.identify(bad, actor="test")
    with service._identify_group._cond:
        assert service._identify_group._coming == 0
    assert service._identify_group.groups == 0


def test_an_identify_writer_waits_for_a_call_announced_on_arrival_and_writes_both_at_once(
    sqlite_container: Any,
) -> None:
    # The identify route announces a call on the event loop (announce_identify) before it
    # hands it to a worker thread: a writer that takes its group meanwhile waits for it.
    service = sqlite_container.ingest
    service._identify_group = GroupCommitter(
        service._ingest_group, max_group=50, linger_s=LONG_LINGER
    )

    def call(name: str) -> IdentifyRequest:
        return IdentifyRequest.model_validate(
            {"identifiers": [{"type": "cookie_id", "value": f"ck-arrive-{name}"}], "source": "web"}
        )

    arrival = service.announce_identify()  # this (test) thread announces; a worker submits
    go = threading.Event()

    def announced() -> Any:
        go.wait(30)
        return service.identify(call("announced"), actor="test", arrival=arrival)

    with ThreadPoolExecutor(2) as pool:
        second = pool.submit(announced)
        first = pool.submit(service.identify, call("first"), actor="test")
        wait_until(lambda: lingering(service._identify_group))  # waits for the arrival
        go.set()
        results = [first.result(30), second.result(30)]

    assert service._identify_group.groups == 1  # both calls in one transaction
    assert [r.outcome.value for r in results] == ["created"] * 2
    bad = service.announce_identify()
    with pytest.raises(BatchValidationError):  # refused: its announcement ends with it
        service.identify(
            IdentifyRequest.model_validate(
                {"identifiers": [{"type": "email", "value": "not-an-email"}], "source": "web"}
            ),
            actor="test",
            arrival=bad,
        )
    with service._identify_group._cond:
        assert service._identify_group._coming == 0


# -- arrivals: announced on one thread, submitted from another ------------------------------


def test_a_writer_waits_for_an_arrival_announced_elsewhere_and_writes_both_in_one_group() -> None:
    # A server announces a batch where the request arrives (its event loop) and submits it
    # from a worker thread: the announcement is not tied to the submitting thread.
    written, write = _recording()
    committer: GroupCommitter[int, int] = GroupCommitter(write, linger_s=LONG_LINGER)
    arrival = committer.announce()  # this (test) thread announces; a worker submits
    assert _first_then_announced(committer, arrival) == (10, 20)
    assert written == [[1, 2]]
    with committer._cond:
        assert committer._coming == 0
    arrival.withdraw()  # after submit: a no-op (no announcement is dropped twice)
    with committer._cond:
        assert committer._coming == 0


def test_a_withdrawn_arrival_ends_the_writers_wait_and_is_dropped_once() -> None:
    committer: GroupCommitter[int, int] = GroupCommitter(
        lambda items: [i + 1 for i in items], linger_s=LONG_LINGER
    )
    arrival, other = committer.announce(), committer.announce()
    with ThreadPoolExecutor(1) as pool:
        writer = pool.submit(committer.submit, 1)
        wait_until(lambda: lingering(committer))
        arrival.withdraw()  # a request refused before it reached the use case
        arrival.withdraw()
        with committer._cond:
            assert committer._coming == 1  # the other arrival is still on its way
        other.withdraw()
        assert writer.result(30) == 2
    with committer._cond:
        assert committer._coming == 0


def test_an_arrival_of_another_committer_is_refused() -> None:
    committer: GroupCommitter[int, int] = GroupCommitter(list)
    foreign = GroupCommitter[int, int](list).announce()
    with pytest.raises(ValueError, match="another committer"):
        committer.submit(1, foreign)
    assert committer.groups == 0


def test_a_half_lingering_writer_stops_waiting_once_as_many_are_queued_as_still_coming() -> None:
    # linger_for="half" (the audit log's): a writer waits for announced callers only while more
    # of them are still on their way than are queued, so the callers still busy keep the CPU
    # busy while the group commits. Three announced: the writer (queued) waits; once the
    # second has queued, two are queued and one is coming, and the writer writes those two.
    written, write = _recording()
    committer: GroupCommitter[int, int] = GroupCommitter(
        write, linger_s=LONG_LINGER, linger_for="half"
    )
    second, third = committer.announce(), committer.announce()
    assert _first_then_announced(committer, second) == (10, 20)  # 1 queued, 2 coming: it waits
    assert written == [[1, 2]]  # written without waiting for the third
    with committer._cond:
        assert committer._coming == 1
    third.withdraw()
    with committer._cond:
        assert committer._coming == 0


def test_a_half_lingering_writer_with_as_many_queued_as_coming_writes_at_once() -> None:
    committer: GroupCommitter[int, int] = GroupCommitter(
        lambda items: [i + 1 for i in items], linger_s=LONG_LINGER, linger_for="half"
    )
    other = committer.announce()  # one coming, and the writer's own item queued: no wait
    with ThreadPoolExecutor(1) as pool:
        writer = pool.submit(committer.submit, 1)
        wait_until(lambda: writer.done() or lingering(committer))
        lingered = lingering(committer)
        other.withdraw()  # ends the wait of a writer that lingered (the old rule's)
        assert writer.result(30) == 2
    assert not lingered
    with pytest.raises(ValueError, match="linger_for"):
        GroupCommitter(list, linger_for="most")  # type: ignore[arg-type]
