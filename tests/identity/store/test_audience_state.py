"""The SQLite store's materialized audience state (issue 14): per-person event counters and
current consent, kept by triggers through ingest, merges, splits, erasure and retention.

The property test builds random graphs through the store port, changes them at random (more
events and consents, merges, splits, erasures, quarantined and deleted events, consent proof
retention) and proves that a member scan over the materialized state gives **the same
membership and the same denial counts** as the evaluator without it: every person's events
counted from its facts and every person decided by the policy engine from all its consent
records.
"""

from __future__ import annotations

import secrets
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from signal import SIGKILL
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from identity.hashing import HashedIdentifier
from identity.model import (
    RESTRICTION_PURPOSE,
    ChangeSet,
    ConsentExclusion,
    ConsentRecord,
    ConsentSignal,
    EventCountRule,
    Fact,
    FactKind,
    FactStatus,
    IdentifierNode,
    MemberRow,
    MemberScan,
    MemberScanPage,
    PersonRecord,
    consent_exclusion,
    consent_grant,
    new_node_id,
)
from identity.store import sqlite_audience
from identity.store.port import GraphTransaction
from identity.store.sqlite import SqliteGraphStore
from privacy.access.policy_engine import Caller, ConsentReason, PersonContext, PolicyEngine
from privacy.access.purposes import load_purposes_policy

POLICIES = Path(__file__).resolve().parents[3] / "policies"
NOW = datetime(2026, 6, 15, 13, 30, tzinfo=UTC)
PURPOSE = "ad_targeting"  # consent, default deny: the store-side filter applies
OTHER = "analytics"
NAMES = ("purchase", "visit")
SIGNALS = (
    ConsentSignal.DIRECT,
    ConsentSignal.TCF,
    ConsentSignal.OBJECTION,
    ConsentSignal.COMPELLING_GROUNDS,
    ConsentSignal.RESTRICTION,
    ConsentSignal.GPC,
    ConsentSignal.GPP,
    ConsentSignal.WEBHOOK,
)
# Few distinct decision times, so that ties (a grant and a denial at once) are common.
# 400 days: a TCF grant that old has expired (13 months), any other has not.
CONSENT_TIMES = tuple(NOW - timedelta(days=d) for d in (1, 1, 2, 40, 400))
# When a record was stored (seconds after NOW): the order of the records decided at one time,
# which names the deciding record (ConsentGrant).
RECORDED = (0, 0, 5)
RULE_SETS = (
    (EventCountRule("purchase", NOW - timedelta(days=7), 1),),
    (EventCountRule("purchase", NOW - timedelta(days=7, hours=5), 2),),
    (EventCountRule("visit", NOW - timedelta(days=3), 1), EventCountRule("purchase", NOW, 0)),
    # Whichever of two rules drives the scan, the other is checked per person: both windows
    # start inside a day.
    (
        EventCountRule("purchase", NOW - timedelta(days=7), 1),
        EventCountRule("visit", NOW - timedelta(days=3), 1),
    ),
    (
        EventCountRule("purchase", NOW - timedelta(days=30), 1),
        EventCountRule("visit", NOW - timedelta(days=2, minutes=7), 2),
    ),
    # More events than the first slots of event_latest: its later slots, as the driving rule
    # and as a further one, and a rule beyond its slots (the counters drive).
    (EventCountRule("purchase", NOW - timedelta(days=7), 3),),
    (
        EventCountRule("visit", NOW - timedelta(days=3), 1),
        EventCountRule("purchase", NOW - timedelta(days=30), 4),
    ),
    (EventCountRule("purchase", NOW - timedelta(days=30), sqlite_audience.LATEST_SLOTS + 1),),
    (
        EventCountRule("visit", NOW - timedelta(days=2, minutes=7), 1),
        EventCountRule("purchase", NOW - timedelta(days=7), sqlite_audience.LATEST_SLOTS + 1),
    ),
    (),
)

# Minutes from NOW: anywhere within days on both sides of the windows, and often just around a
# window's start (inside its first day: the counters of whole days do not settle those).
_BOUNDARIES = (7 * 1440, 7 * 1440 + 300, 3 * 1440, 30 * 1440, 2 * 1440 + 7)
_MINUTES = st.one_of(
    st.integers(-10 * 24 * 60, 60),
    st.builds(
        lambda start, delta: -start + delta,
        st.sampled_from(_BOUNDARIES),
        st.sampled_from((-1, 0, 1, 90, 600)),
    ),
)
_events = st.lists(
    st.tuples(
        st.integers(0, 2),  # which node of the person
        st.sampled_from(NAMES),
        _MINUTES,
        st.booleans(),  # active (else quarantined)
    ),
    max_size=4,
)
_consents = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.sampled_from((PURPOSE, PURPOSE, OTHER)),
        st.booleans(),
        st.sampled_from(CONSENT_TIMES),
        st.sampled_from(SIGNALS),
        st.sampled_from(RECORDED),
    ),
    max_size=4,
)
_person = st.tuples(st.just("person"), st.integers(1, 3), _events, _consents)
_step = st.one_of(
    _person,
    st.tuples(st.just("merge"), st.integers(0, 50), st.integers(0, 50)),
    st.tuples(st.just("split"), st.integers(0, 50), st.integers(0, 2)),
    st.tuples(st.just("erase"), st.integers(0, 50)),
    st.tuples(st.just("more"), st.integers(0, 50), _events, _consents),
    st.tuples(st.just("quarantine"), st.integers(0, 500)),
    st.tuples(st.just("delete_event"), st.integers(0, 500)),
    st.tuples(st.just("prune_consents"), st.integers(0, 3)),
)


class _Graph:
    """The store and what the test knows about it (persons and their nodes)."""

    def __init__(self, store: SqliteGraphStore) -> None:
        self.store = store
        self.persons: dict[str, list[str]] = {}

    def _pick(self, index: int) -> str:
        ids = sorted(self.persons)  # never empty: step() returns first when it is
        return ids[index % len(ids)]

    def _facts_and_consents(
        self,
        nodes: list[str],
        events: list[tuple[int, str, int, bool]],
        # (node, purpose, granted, at, signal[, seconds after NOW it was recorded])
        consents: list[tuple[Any, ...]],
    ) -> tuple[tuple[Fact, ...], tuple[ConsentRecord, ...]]:
        facts = tuple(
            Fact(
                "f_" + secrets.token_hex(8),
                nodes[k % len(nodes)],
                FactKind.EVENT,
                name,
                "behavioural",
                NOW + timedelta(minutes=minutes),
                "test",
                FactStatus.ACTIVE if active else FactStatus.QUARANTINED,
                b"sealed",
            )
            for k, name, minutes, active in events
        )
        records = tuple(
            ConsentRecord(
                "c_" + secrets.token_hex(8),
                nodes[k % len(nodes)],
                RESTRICTION_PURPOSE if signal is ConsentSignal.RESTRICTION else purpose,
                granted,
                at,
                NOW + timedelta(seconds=recorded[0] if recorded else 0),
                "test",
                signal,
                "consent",
                "ab" * 32,
            )
            for k, purpose, granted, at, signal, *recorded in consents
        )
        return facts, records

    def step(self, op: tuple[Any, ...]) -> None:  # noqa: PLR0912 - one branch per operation
        kind = op[0]
        if kind == "person":
            _, count, events, consents = op
            person = "p_" + secrets.token_hex(6)
            nodes = [new_node_id() for _ in range(int(count))]
            facts, records = self._facts_and_consents(nodes, events, consents)
            changes = ChangeSet(
                new_persons=(PersonRecord(person, NOW, NOW),),
                new_nodes=tuple(
                    IdentifierNode(
                        n,
                        HashedIdentifier("cookie_id", "k1", secrets.token_bytes(16)),
                        person,
                        NOW,
                        NOW,
                    )
                    for n in nodes
                ),
                facts=facts,
                consents=records,
            )
            self.store.write(lambda tx: tx.apply(changes))
            self.persons[person] = nodes
            return
        if not self.persons:
            return
        if kind == "merge":
            a, b = self._pick(int(op[1])), self._pick(int(op[2]))
            if a == b:
                return
            self.store.write(lambda tx: tx.apply(ChangeSet(merged={b: a})))
            self.persons[a] += self.persons.pop(b)
        elif kind == "split":
            person = self._pick(int(op[1]))
            nodes = self.persons[person]
            if len(nodes) < 2:
                return
            node = nodes[int(op[2]) % len(nodes)]
            fresh = "p_" + secrets.token_hex(6)
            changes = ChangeSet(
                new_persons=(PersonRecord(fresh, NOW, NOW),), reassigned={node: fresh}
            )
            self.store.write(lambda tx: tx.apply(changes))
            nodes.remove(node)
            self.persons[fresh] = [node]
        elif kind == "erase":
            person = self._pick(int(op[1]))
            self.store.write(lambda tx: tx.erase_person(person))
            del self.persons[person]
        elif kind == "more":
            person = self._pick(int(op[1]))
            facts, records = self._facts_and_consents(self.persons[person], op[2], op[3])
            self.store.write(lambda tx: tx.apply(ChangeSet(facts=facts, consents=records)))
        elif kind in ("quarantine", "delete_event"):
            events = self._event_ids()
            if not events:
                return
            fact_id = events[int(op[1]) % len(events)]
            if kind == "quarantine":
                self.store.write(lambda tx: tx.set_fact_status([fact_id], FactStatus.QUARANTINED))
            else:
                self.store.write(lambda tx: tx.delete_facts([fact_id]))
        elif kind == "prune_consents":
            before = CONSENT_TIMES[int(op[1])] + timedelta(seconds=1)
            self.store.write(lambda tx: tx.delete_superseded_consents(before, 1_000))

    def _event_ids(self) -> list[str]:
        conn: sqlite3.Connection = self.store._conn
        return [
            r[0]
            for r in conn.execute("SELECT fact_id FROM facts WHERE kind = 'event' ORDER BY fact_id")
        ]


def _page(scan: MemberScan, after: str, limit: int, tx: GraphTransaction) -> MemberScanPage:
    return tx.member_page(scan, after, limit)


def _events_of(person_id: str, tx: GraphTransaction) -> list[Fact]:
    return tx.person_facts(person_id, (FactKind.EVENT,), FactStatus.ACTIVE)


def _consents_of(person_id: str, tx: GraphTransaction) -> list[ConsentRecord]:
    return tx.person_consents(person_id, [PURPOSE])


def _scan(store: SqliteGraphStore, scan: MemberScan, limit: int) -> list[MemberRow]:
    return _scan_counted(store, scan, limit)[0]


def _scan_counted(
    store: SqliteGraphStore, scan: MemberScan, limit: int
) -> tuple[list[MemberRow], Counter[ConsentExclusion]]:
    """Every row of ``scan`` and the persons its consent filter left out, counted by reason."""
    rows: list[MemberRow] = []
    excluded: Counter[ConsentExclusion] = Counter()
    after = ""
    while (found := store.read(partial(_page, scan, after, limit))).scanned:
        assert found.scanned == len(found.rows) + sum(found.excluded.values())
        rows += found.rows
        excluded.update(found.excluded)
        after = found.last_person_id
    return rows, excluded


def _expected(
    store: SqliteGraphStore, engine: PolicyEngine, rules: tuple[EventCountRule, ...]
) -> tuple[list[str], Counter[str]]:
    """Members and denials by reason as the evaluator without materialized state finds them:
    events counted from every person's facts, every person decided from all its records."""
    caller = Caller("k", frozenset({PURPOSE}), "k")
    members: list[str] = []
    denied: Counter[str] = Counter()
    for row in _scan(store, MemberScan(), 7):
        pid = row.person_id
        events = store.read(partial(_events_of, pid))
        if not all(
            sum(1 for f in events if f.name == r.name and f.at >= r.since) >= r.min_count
            for r in rules
        ):
            continue
        records = store.read(partial(_consents_of, pid))
        decision = engine.decide(caller, PersonContext(pid, tuple(records)), PURPOSE, (), NOW)
        if decision.allowed:
            members.append(pid)
        else:
            denied[decision.reason] += 1
    return members, denied


def _actual(
    store: SqliteGraphStore, engine: PolicyEngine, rules: tuple[EventCountRule, ...], limit: int
) -> tuple[list[str], Counter[str]]:
    """Members and denials through the materialized state, as ReadService scans them."""
    caller = Caller("k", frozenset({PURPOSE}), "k")
    scan = MemberScan(
        event_rules=rules,
        consent_purposes=(PURPOSE,),
        consent_filter=engine.consent_filter(PURPOSE),
    )
    members: list[str] = []
    rows, excluded = _scan_counted(store, scan, limit)
    denied: Counter[str] = Counter({reason.value: n for reason, n in excluded.items()})
    page = [(row.person_id, row.consents if row.grant is None else row.grant, ()) for row in rows]
    for row, decision in zip(rows, engine.decide_many(caller, page, PURPOSE, NOW), strict=True):
        records = store.read(partial(_consents_of, row.person_id))
        # The page carries the person's records, in the same order, or the grant they reduce to.
        assert row.grant == consent_grant(records, PURPOSE)
        assert list(row.consents) == ([] if row.grant is not None else records)
        # Either way the engine decides as from every record (the deciding record included).
        assert decision == engine.decide(
            caller, PersonContext(row.person_id, tuple(records)), PURPOSE, (), NOW
        )
        if decision.allowed:
            members.append(row.person_id)
        else:
            denied[decision.reason] += 1
    return members, denied


def _recomputed_counters(conn: sqlite3.Connection) -> dict[tuple[str, str, int], int]:
    counts: Counter[tuple[str, str, int]] = Counter()
    for name, person, at in conn.execute(
        "SELECT f.name, p.person_id, f.at FROM facts f JOIN identifiers i ON i.pk = f.node "
        "JOIN persons p ON p.pk = i.person WHERE f.kind = 'event' AND f.status = 'active'"
    ):
        counts[(name, person, at // sqlite_audience.DAY_MS)] += 1
    return dict(counts)


def _recomputed_bounds(conn: sqlite3.Connection) -> dict[tuple[str, str, int], tuple[int, int]]:
    """The earliest and latest time of the active events of every (name, person, day)."""
    bounds: dict[tuple[str, str, int], tuple[int, int]] = {}
    for name, person, at in conn.execute(
        "SELECT f.name, p.person_id, f.at FROM facts f JOIN identifiers i ON i.pk = f.node "
        "JOIN persons p ON p.pk = i.person WHERE f.kind = 'event' AND f.status = 'active'"
    ):
        key = (name, person, at // sqlite_audience.DAY_MS)
        lo, hi = bounds.get(key, (at, at))
        bounds[key] = (min(lo, at), max(hi, at))
    return bounds


def _assert_bounds_hold(conn: sqlite3.Connection) -> None:
    """Every counter row's bounds hold all its events' times (events taken off may leave them
    wider than the events left: bounds, not the exact span)."""
    kept = sqlite_audience.bounds_of(conn)
    exact = _recomputed_bounds(conn)
    assert kept.keys() == exact.keys()
    for key, (lo, hi) in exact.items():
        assert kept[key][0] <= lo
        assert kept[key][1] >= hi


def _assert_latest_holds(conn: sqlite3.Connection) -> None:
    """``event_latest`` holds a row per (name, person) with active events and no other; an
    exact row's times are the latest of the person's events of the name (latest first), any
    row's are at or after them, slot by slot (bounds: events taken off leave them as they were),
    and a slot is empty only when the person has fewer events."""
    times: dict[tuple[str, str], list[int]] = {}
    for name, person, at in conn.execute(
        "SELECT f.name, p.person_id, f.at FROM facts f JOIN identifiers i ON i.pk = f.node "
        "JOIN persons p ON p.pk = i.person WHERE f.kind = 'event' AND f.status = 'active'"
    ):
        times.setdefault((name, person), []).append(at)
    kept = sqlite_audience.latest_of(conn)
    assert kept.keys() == times.keys()
    for key, all_times in times.items():
        latest = tuple(sorted(all_times, reverse=True)[: sqlite_audience.LATEST_SLOTS])
        exact, held = kept[key]
        if exact:
            assert held == latest
        else:
            assert len(held) >= len(latest)
            assert all(h >= t for h, t in zip(held, latest, strict=False))


def _recomputed_consent_state(
    conn: sqlite3.Connection,
) -> dict[tuple[str, str], tuple[object, ...]]:
    """What ``consent_current`` must hold, computed in Python from every record."""
    records: dict[tuple[str, str], list[tuple[int, int, str, int, str]]] = {}
    for person, purpose, granted, at, signal, recorded_at, record_id in conn.execute(
        "SELECT p.person_id, c.purpose, c.granted, c.at, c.signal, c.recorded_at, c.record_id "
        "FROM consents c JOIN identifiers i ON i.node_id = c.node_id "
        "JOIN persons p ON p.pk = i.person"
    ):
        if (purpose == RESTRICTION_PURPOSE) == (signal == "restriction"):
            records.setdefault((person, purpose), []).append(
                (at, granted, signal, recorded_at, record_id)
            )
    state: dict[tuple[str, str], tuple[object, ...]] = {}
    special_signals = ("objection", "compelling_grounds")
    for key, rows in records.items():
        special = sum(1 for row in rows if row[2] in special_signals)
        plain = [row for row in rows if row[2] not in special_signals]
        top = max((row[0] for row in plain), default=None)
        at_top = {row[1] for row in plain if row[0] == top}
        granted = min(at_top) if at_top else None
        # The deciding record: the first by (recorded_at, record id) of those at the latest
        # time that answer as the row does.
        deciding = min(
            (row for row in plain if row[0] == top and row[1] == granted),
            key=lambda row: (row[3], row[4]),
            default=None,
        )
        decided = (
            (None, None, None) if deciding is None else (deciding[4], deciding[2], deciding[3])
        )
        state[key] = (top, granted, int(len(at_top) > 1), special, *decided)
    return state


def _recomputed_consent_records(
    conn: sqlite3.Connection,
) -> dict[tuple[str, str], list[list[object]]]:
    """What ``consent_records`` must hold: every record of every (person, purpose)."""
    columns = ", ".join(f"c.{name}" for name in sqlite_audience.CONSENT_FIELDS)
    records: dict[tuple[str, str], list[list[object]]] = {}
    for person, *row in conn.execute(
        f"SELECT p.person_id, {columns} FROM consents c "  # noqa: S608 - constant columns
        "JOIN identifiers i ON i.node_id = c.node_id JOIN persons p ON p.pk = i.person"
    ):
        records.setdefault((person, row[2]), []).append(list(row))
    return {key: sorted(rows, key=repr) for key, rows in records.items()}


def _rewrite(path: Path, statements: Sequence[str]) -> None:
    """Run ``statements`` on the closed store file ``path`` in one transaction (an older
    idgraph's layout written back)."""
    old = sqlite3.connect(path)
    with old:
        for statement in statements:
            old.execute(statement)
    old.close()


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine(load_purposes_policy(POLICIES / "purposes.yaml"))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    # A few persons first, so that merges, splits and erasures have something to work on.
    start=st.lists(_person, min_size=2, max_size=5),
    steps=st.lists(_step, min_size=1, max_size=12),
    limit=st.integers(1, 4),
)
def test_member_scans_over_materialized_state_give_the_same_members_and_denials(
    tmp_path_factory: pytest.TempPathFactory,
    engine: PolicyEngine,
    start: list[tuple[Any, ...]],
    steps: list[tuple[Any, ...]],
    limit: int,
) -> None:
    store = SqliteGraphStore(tmp_path_factory.mktemp("aud") / "graph.sqlite3", synchronous="OFF")
    try:
        graph = _Graph(store)
        for step in (*start, *steps):
            graph.step(step)
        conn: sqlite3.Connection = store._conn
        assert sqlite_audience.counters_of(conn) == _recomputed_counters(conn)
        _assert_bounds_hold(conn)
        _assert_latest_holds(conn)
        assert sqlite_audience.consent_state_of(conn) == _recomputed_consent_state(conn)
        assert sqlite_audience.consent_records_of(conn) == _recomputed_consent_records(conn)
        # The consent rows decide exactly what the reference definition decides.
        exclusions = {
            row.person_id: consent_exclusion(
                store.read(partial(_consents_of, row.person_id)), PURPOSE
            )
            for row in _scan(store, MemberScan(), 5)
        }
        kept, excluded = _scan_counted(
            store, MemberScan(consent_purposes=(PURPOSE,), consent_filter=PURPOSE), 3
        )
        assert [row.person_id for row in kept] == [p for p, e in exclusions.items() if e is None]
        assert excluded == Counter(e for e in exclusions.values() if e is not None)
        for row in kept:
            records = store.read(partial(_consents_of, row.person_id))
            assert row.grant == consent_grant(records, PURPOSE)
            assert list(row.consents) == ([] if row.grant is not None else records)
        for rules in RULE_SETS:
            assert _actual(store, engine, rules, limit) == _expected(store, engine, rules)
    finally:
        store.close()


def test_exclusion_reasons_are_the_policy_engines_reasons() -> None:
    engine_reasons = {r.value for r in ConsentReason}
    assert {e.value for e in ConsentExclusion} <= engine_reasons


def test_consent_filter_applies_only_to_consent_purposes_that_default_to_deny(
    engine: PolicyEngine,
) -> None:
    assert engine.consent_filter(PURPOSE) == PURPOSE
    assert engine.consent_filter("fraud_prevention") is None  # legitimate interest, grant
    assert engine.consent_filter("legal_claims") is None  # legal obligation
    assert engine.consent_filter("no_such_purpose") is None


def test_an_existing_store_is_filled_once_when_opened_by_this_version(tmp_path: Path) -> None:
    """A file written before the audience state existed (no tables, no triggers) gets them on
    open, filled from its rows; a second open leaves them as they are."""
    path = tmp_path / "graph.sqlite3"
    store = SqliteGraphStore(path)
    graph = _Graph(store)
    graph.step(
        (
            "person",
            2,
            [(0, "purchase", -60, True), (1, "purchase", -3000, True)],
            [(1, PURPOSE, True, CONSENT_TIMES[0], ConsentSignal.DIRECT)],
        )
    )
    graph.step(
        (
            "person",
            1,
            [(0, "visit", -10, True)],
            [(0, PURPOSE, False, CONSENT_TIMES[1], ConsentSignal.TCF)],
        )
    )
    conn: sqlite3.Connection = store._conn
    live_counters = sqlite_audience.counters_of(conn)
    live_consents = sqlite_audience.consent_state_of(conn)
    assert live_counters
    assert live_consents
    store.close()
    old = sqlite3.connect(path)
    with old:
        for name in (
            "event_days_on_insert",
            "event_days_on_delete",
            "event_days_on_update",
            "consent_current_on_insert",
            "consent_current_on_delete",
            "audience_state_on_move",
        ):
            old.execute(f"DROP TRIGGER {name}")
        old.execute("DROP TABLE event_days")
        old.execute("DROP TABLE consent_current")
        old.execute("DELETE FROM meta WHERE key = 'audience_state'")
    old.close()
    reopened = SqliteGraphStore(path)
    try:
        conn = reopened._conn
        assert sqlite_audience.counters_of(conn) == live_counters
        assert sqlite_audience.consent_state_of(conn) == live_consents
        # Maintained from then on.
        _Graph(reopened).step(("person", 1, [(0, "visit", -5, True)], []))
        assert sqlite_audience.counters_of(conn) == _recomputed_counters(conn)
    finally:
        reopened.close()


def test_a_file_of_audience_state_1_gets_the_consent_records_when_opened(
    tmp_path: Path, engine: PolicyEngine
) -> None:
    """A schema 7 file written before ``consent_records`` existed (audience state 1: counters
    and current consent with their triggers, no records) gets the table, its triggers and its
    rows on open, keeps its counters and current consent as they were, scans as the evaluator
    does, and keeps the records current through later writes, merges and erasures."""
    path = tmp_path / "graph.sqlite3"
    store = SqliteGraphStore(path)
    graph = _Graph(store)
    for step in (
        (
            "person",
            2,
            [(0, "purchase", -60, True), (1, "purchase", -3000, True)],
            [
                (1, PURPOSE, True, CONSENT_TIMES[0], ConsentSignal.DIRECT),
                (0, PURPOSE, False, CONSENT_TIMES[2], ConsentSignal.TCF),
                (0, OTHER, True, CONSENT_TIMES[3], ConsentSignal.DIRECT),
            ],
        ),
        (
            "person",
            1,
            [(0, "purchase", -10, True), (0, "purchase", -20, True)],
            [
                (0, PURPOSE, True, CONSENT_TIMES[1], ConsentSignal.TCF),
                (0, PURPOSE, False, CONSENT_TIMES[3], ConsentSignal.RESTRICTION),
            ],
        ),
        ("person", 1, [(0, "purchase", -5, True)], []),
    ):
        graph.step(step)
    conn: sqlite3.Connection = store._conn
    live_records = sqlite_audience.consent_records_of(conn)
    live_counters = sqlite_audience.counters_of(conn)
    live_consents = sqlite_audience.consent_state_of(conn)
    assert len(live_records) == 4  # (2 persons, PURPOSE), (first, OTHER), (second, "*")
    store.close()
    old = sqlite3.connect(path)
    with old:
        for name in (
            "consent_records_on_insert",
            "consent_records_on_delete",
            "consent_records_on_move",
        ):
            old.execute(f"DROP TRIGGER {name}")
        old.execute("DROP TABLE consent_records")
        old.execute("UPDATE meta SET value = '1' WHERE key = 'audience_state'")
    old.close()
    reopened = SqliteGraphStore(path)
    try:
        conn = reopened._conn
        assert sqlite_audience.consent_records_of(conn) == live_records
        assert sqlite_audience.counters_of(conn) == live_counters
        assert sqlite_audience.bounds_of(conn) == _recomputed_bounds(conn)
        assert sqlite_audience.consent_state_of(conn) == live_consents
        (state,) = conn.execute("SELECT value FROM meta WHERE key = 'audience_state'").fetchone()
        assert state == str(sqlite_audience.STATE_VERSION)
        rules = (EventCountRule("purchase", NOW - timedelta(days=1), 1),)
        assert _actual(reopened, engine, rules, 2) == _expected(reopened, engine, rules)
        # Maintained from then on: more records, a merge, an erasure.
        graph.store = reopened
        first = sorted(graph.persons)[0]
        graph.step(("more", 0, [], [(0, PURPOSE, False, CONSENT_TIMES[0], ConsentSignal.TCF)]))
        graph.step(("merge", 1, 2))
        graph.step(("erase", 0))
        assert sqlite_audience.consent_records_of(conn) == _recomputed_consent_records(conn)
        assert not any(person == first for person, _ in sqlite_audience.consent_records_of(conn))
        assert _actual(reopened, engine, rules, 2) == _expected(reopened, engine, rules)
    finally:
        reopened.close()


FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
# What a file of schema 6 opened by the audience state's first version (text keys) held: its
# tables, a fill marker, and triggers over the old tables' columns (two of them here).
_V6_AUDIENCE_STATE = (
    (
        "CREATE TABLE event_days (name TEXT NOT NULL, person_id TEXT NOT NULL, "
        "day INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (name, person_id, day)) "
        "WITHOUT ROWID"
    ),
    (
        "CREATE TABLE consent_current (person_id TEXT NOT NULL, purpose TEXT NOT NULL, "
        "decided_at INTEGER, granted INTEGER, tie INTEGER NOT NULL, special INTEGER NOT NULL, "
        "PRIMARY KEY (person_id, purpose)) WITHOUT ROWID"
    ),
    "INSERT INTO event_days VALUES ('purchase', 'p_stale', 1, 5)",
    "INSERT INTO consent_current VALUES ('p_stale', 'marketing', 1, 1, 0, 0)",
    "INSERT INTO meta (key, value) VALUES ('audience_state', '1')",
    (
        "CREATE TRIGGER event_days_on_insert AFTER INSERT ON facts WHEN NEW.kind = 'event' BEGIN "
        "INSERT INTO event_days (name, person_id, day, n) SELECT NEW.name, person_id, "
        "NEW.at / 86400000, 1 FROM identifiers WHERE node_id = NEW.node_id "
        "ON CONFLICT (name, person_id, day) DO UPDATE SET n = n + 1; END"
    ),
    (
        "CREATE TRIGGER audience_state_on_move AFTER UPDATE OF person_id ON identifiers BEGIN "
        "DELETE FROM consent_current WHERE person_id = OLD.person_id; END"
    ),
)


@pytest.mark.parametrize("stale_state", [False, True], ids=["without-state", "with-old-state"])
def test_audience_state_is_filled_over_the_new_tables_when_a_version_6_file_migrates(
    tmp_path: Path, engine: PolicyEngine, stale_state: bool
) -> None:
    """The schema 7 migration (integer keys) rebuilds facts, identifiers and consents: the
    counters and current consent are filled from the migrated rows (also when the file held
    state and triggers of the text-keyed layout), scans give what the evaluator gives, and
    writes after the migration keep the state current."""
    path = tmp_path / "v6.sqlite3"
    path.write_bytes((FIXTURES / "graph-v6.sqlite3").read_bytes())
    path.chmod(0o600)
    if stale_state:
        _rewrite(path, _V6_AUDIENCE_STATE)
    store = SqliteGraphStore(path)
    try:
        conn: sqlite3.Connection = store._conn
        counters = sqlite_audience.counters_of(conn)
        assert counters
        assert counters == _recomputed_counters(conn)
        consents = sqlite_audience.consent_state_of(conn)
        assert consents
        assert consents == _recomputed_consent_state(conn)
        assert sqlite_audience.consent_records_of(conn) == _recomputed_consent_records(conn)
        assert sqlite_audience.consent_records_of(conn)
        triggers = {
            row[0]: row[1]
            for row in conn.execute(
                "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'"
            )
        }
        assert triggers["event_days_on_insert"] == "facts"
        assert triggers["audience_state_on_move"] == "identifiers"
        assert triggers["consent_records_on_insert"] == "consents"
        rules = (EventCountRule("purchase", datetime(2026, 1, 1, tzinfo=UTC), 2),)
        assert _actual(store, engine, rules, 5) == _expected(store, engine, rules)
        graph = _Graph(store)
        graph.step(
            (
                "person",
                2,
                [(0, "purchase", -5, True), (1, "visit", -60, True)],
                [(1, PURPOSE, True, CONSENT_TIMES[0], ConsentSignal.DIRECT)],
            )
        )
        old_person = next(
            row.person_id
            for row in store.read(lambda tx: tx.member_page(MemberScan(), "", 10)).rows
            if row.person_id not in graph.persons
        )
        store.write(lambda tx: tx.apply(ChangeSet(merged={sorted(graph.persons)[0]: old_person})))
        assert sqlite_audience.counters_of(conn) == _recomputed_counters(conn)
        assert sqlite_audience.consent_state_of(conn) == _recomputed_consent_state(conn)
        assert sqlite_audience.consent_records_of(conn) == _recomputed_consent_records(conn)
        assert _actual(store, engine, rules, 3) == _expected(store, engine, rules)
    finally:
        store.close()


def test_a_file_of_audience_state_2_gets_counter_bounds_and_bounded_triggers_when_opened(
    tmp_path: Path, engine: PolicyEngine
) -> None:
    """A file of audience state 2 (counters without time bounds, written by triggers without
    them) gets the bounds on open: the columns, the exact bounds of its events, and triggers that
    keep them (a trigger of state 2 left in place would write rows without bounds)."""
    path = tmp_path / "graph.sqlite3"
    store = SqliteGraphStore(path)
    graph = _Graph(store)
    graph.step(("person", 2, [(0, "purchase", -60, True), (1, "purchase", -3000, True)], []))
    graph.step(("person", 1, [(0, "visit", -10, True), (0, "visit", -20, True)], []))
    conn: sqlite3.Connection = store._conn
    live_counters = sqlite_audience.counters_of(conn)
    store.close()
    old = sqlite3.connect(path)
    with old:  # the state 2 shape: no bounds, an insert trigger without them
        for name in ("event_days_on_insert", "event_days_on_update", "audience_state_on_move"):
            old.execute(f"DROP TRIGGER {name}")
        old.execute("ALTER TABLE event_days RENAME TO event_days_v3")
        old.execute(
            "CREATE TABLE event_days (name TEXT NOT NULL, person_id TEXT NOT NULL, "
            "day INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (name, person_id, day)) "
            "WITHOUT ROWID"
        )
        old.execute("INSERT INTO event_days SELECT name, person_id, day, n FROM event_days_v3")
        old.execute("DROP TABLE event_days_v3")
        old.execute(
            "CREATE TRIGGER event_days_on_insert AFTER INSERT ON facts "
            "WHEN NEW.kind = 'event' AND NEW.status = 'active' BEGIN "
            "INSERT INTO event_days (name, person_id, day, n) SELECT NEW.name, p.person_id, "
            "NEW.at / 86400000, 1 FROM identifiers i JOIN persons p "
            "ON p.pk = i.person WHERE i.pk = NEW.node "
            "ON CONFLICT (name, person_id, day) DO UPDATE SET n = n + 1; END"
        )
        old.execute("UPDATE meta SET value = '2' WHERE key = 'audience_state'")
    old.close()
    reopened = SqliteGraphStore(path)
    try:
        conn = reopened._conn
        assert sqlite_audience.counters_of(conn) == live_counters
        assert sqlite_audience.bounds_of(conn) == _recomputed_bounds(conn)
        (state,) = conn.execute("SELECT value FROM meta WHERE key = 'audience_state'").fetchone()
        assert state == str(sqlite_audience.STATE_VERSION)
        graph.store = reopened
        graph.step(("more", 0, [(0, "purchase", -7, True)], []))
        graph.step(("person", 1, [(0, "purchase", -4000, True)], []))
        graph.step(("merge", 0, 2))
        assert sqlite_audience.counters_of(conn) == _recomputed_counters(conn)
        assert sqlite_audience.bounds_of(conn) == _recomputed_bounds(conn)
        for rules in RULE_SETS:
            assert _actual(reopened, engine, rules, 2) == _expected(reopened, engine, rules)
    finally:
        reopened.close()


def test_a_boundary_day_counter_whose_bounds_lie_in_the_window_settles_a_rule_without_the_events(
    tmp_path: Path,
) -> None:
    """The window of a rule starts inside a day. A person whose events of that day all came
    after the start is counted from the counter (its lower bound is in the window) and one
    whose events all came before it not at all (its upper bound is not): neither reads its
    events. Shown by a counter that says more events than the facts hold (never so outside a
    test): the counter decides. A counter whose bounds straddle the start is counted exactly.
    (A rule of more events than ``event_latest`` holds times for: the counters drive it.)"""
    store = SqliteGraphStore(tmp_path / "graph.sqlite3")
    try:
        graph = _Graph(store)
        since = NOW - timedelta(days=7)  # 13:30 UTC of its day
        minutes_to_since = 7 * 1440
        # Purchases on the boundary day (after since; one before and one after; before), and a
        # visit an hour ago each (for a scan driven by another rule).
        for offsets in ((10, 20), (-10, 20), (-20, -10)):
            events = [(0, "purchase", -minutes_to_since + m, True) for m in offsets]
            graph.step(("person", 1, [*events, (0, "visit", -60, True)], []))
        after, straddling, before = graph.persons
        conn: sqlite3.Connection = store._conn
        many = sqlite_audience.LATEST_SLOTS + 1
        with conn:  # tamper: every counter says that many events
            conn.execute("UPDATE event_days SET n = ?", (many,))
        rule = (EventCountRule("purchase", since, many),)
        members = [r.person_id for r in _scan(store, MemberScan(event_rules=rule), 10)]
        # after: settled by its counter; straddling: exact count, 1 < many; before: 0.
        assert members == [after]
        # As a further rule of a scan driven by another one, the same.
        both = (EventCountRule("visit", NOW - timedelta(days=1), 1), *rule)
        assert [r.person_id for r in _scan(store, MemberScan(event_rules=both), 10)] == [after]
        assert {straddling, before}.isdisjoint(members)
    finally:
        store.close()


# What a state 3 file held for consent records: a row of all records per (person, purpose),
# rewritten by its triggers on every record written (their bodies, shortened to what matters
# here: the old row shape).
_STATE_3_RECORDS = (
    "DROP TRIGGER consent_records_on_insert",
    "DROP TRIGGER consent_records_on_delete",
    "DROP TRIGGER consent_records_on_move",
    "ALTER TABLE consent_records RENAME TO consent_records_v4",
    (
        "CREATE TABLE consent_records (person_id TEXT NOT NULL, purpose TEXT NOT NULL, "
        "records TEXT NOT NULL, PRIMARY KEY (person_id, purpose)) WITHOUT ROWID"
    ),
    (
        "INSERT INTO consent_records SELECT person_id, purpose, group_concat(records) "
        "FROM consent_records_v4 GROUP BY person_id, purpose"
    ),
    "DROP TABLE consent_records_v4",
    (
        "CREATE TRIGGER consent_records_on_insert AFTER INSERT ON consents BEGIN "
        "DELETE FROM consent_records WHERE purpose = NEW.purpose AND person_id = (SELECT "
        "p.person_id FROM identifiers i JOIN persons p ON p.pk = i.person "
        "WHERE i.node_id = NEW.node_id); "
        "INSERT INTO consent_records (person_id, purpose, records) SELECT p.person_id, "
        "c.purpose, group_concat(json_array(c.record_id, c.node_id, c.purpose, c.granted, c.at, "
        "c.recorded_at, c.source, c.signal, c.lawful_basis, c.proof)) FROM persons p "
        "CROSS JOIN identifiers i ON i.person = p.pk CROSS JOIN consents c "
        "ON c.node_id = i.node_id WHERE c.purpose = NEW.purpose AND p.pk = (SELECT person "
        "FROM identifiers WHERE node_id = NEW.node_id) GROUP BY p.pk, c.purpose; END"
    ),
    "UPDATE meta SET value = '3' WHERE key = 'audience_state'",
)


def test_a_file_of_audience_state_3_gets_a_consent_records_row_per_record_when_opened(
    tmp_path: Path, engine: PolicyEngine
) -> None:
    """A file of audience state 3 (a ``consent_records`` row of all records per person and
    purpose, rewritten by its trigger on every record) gets a row per record on open and
    triggers that write those; its counters are kept as they are (no second fill of the
    events); scans and later writes, merges and erasures stay right."""
    path = tmp_path / "graph.sqlite3"
    store = SqliteGraphStore(path)
    graph = _Graph(store)
    graph.step(
        (
            "person",
            2,
            [(0, "purchase", -60, True)],
            [
                (0, PURPOSE, True, CONSENT_TIMES[2], ConsentSignal.DIRECT),
                (1, PURPOSE, False, CONSENT_TIMES[0], ConsentSignal.TCF),
                (1, PURPOSE, True, CONSENT_TIMES[0], ConsentSignal.DIRECT),
                (0, OTHER, True, CONSENT_TIMES[3], ConsentSignal.DIRECT),
            ],
        )
    )
    graph.step(
        (
            "person",
            1,
            [(0, "purchase", -10, True)],
            [
                (0, PURPOSE, True, CONSENT_TIMES[1], ConsentSignal.TCF),
                (0, PURPOSE, False, CONSENT_TIMES[3], ConsentSignal.OBJECTION),
            ],
        )
    )
    conn: sqlite3.Connection = store._conn
    live_records = sqlite_audience.consent_records_of(conn)
    live_consents = sqlite_audience.consent_state_of(conn)
    store.close()
    old = sqlite3.connect(path)
    with old:
        for statement in _STATE_3_RECORDS:
            old.execute(statement)
        # A counter no fill would make: it stays only if the counters are not filled again.
        old.execute("UPDATE event_days SET n = 41 WHERE n = 1 AND name = 'purchase'")
    assert old.execute("SELECT count(*) FROM consent_records").fetchone() == (3,)
    old.close()
    reopened = SqliteGraphStore(path)
    try:
        conn = reopened._conn
        assert conn.execute("SELECT count(*) FROM consent_records").fetchone() == (6,)
        assert sqlite_audience.consent_records_of(conn) == live_records
        assert sqlite_audience.consent_state_of(conn) == live_consents
        assert {n for (n,) in conn.execute("SELECT n FROM event_days")} == {41}
        (state,) = conn.execute("SELECT value FROM meta WHERE key = 'audience_state'").fetchone()
        assert state == str(sqlite_audience.STATE_VERSION)
        with conn:
            conn.execute("UPDATE event_days SET n = 1")  # back to the truth for the scans below
        rules = (EventCountRule("purchase", NOW - timedelta(days=1), 1),)
        assert _actual(reopened, engine, rules, 1) == _expected(reopened, engine, rules)
        # Maintained from then on (the old insert trigger, left in place, would fail here).
        graph.store = reopened
        graph.step(("more", 0, [], [(0, PURPOSE, False, CONSENT_TIMES[0], ConsentSignal.TCF)]))
        graph.step(("more", 1, [], [(0, PURPOSE, True, CONSENT_TIMES[0], ConsentSignal.DIRECT)]))
        graph.step(("merge", 0, 1))
        assert sqlite_audience.consent_records_of(conn) == _recomputed_consent_records(conn)
        assert sqlite_audience.consent_state_of(conn) == _recomputed_consent_state(conn)
        assert _actual(reopened, engine, rules, 1) == _expected(reopened, engine, rules)
        graph.step(("erase", 0))
        assert sqlite_audience.consent_records_of(conn) == {}
        assert sqlite_audience.consent_state_of(conn) == {}
    finally:
        reopened.close()


# Every row of the audience state, in key order, as stored (the records' JSON text included).
_STATE_ROWS = (
    "SELECT * FROM consent_records ORDER BY person_id, purpose, record_id",
    "SELECT * FROM consent_current ORDER BY person_id, purpose",
    "SELECT * FROM event_days ORDER BY name, person_id, day",
)


def _state_rows(conn: sqlite3.Connection) -> list[list[tuple[object, ...]]]:
    return [conn.execute(query).fetchall() for query in _STATE_ROWS]


# Persons with records on several nodes and purposes, merged and split after they were written
# (nodes of one person from different times), with restrictions and objections.
_UPGRADE_STEPS: tuple[tuple[Any, ...], ...] = (
    *(
        (
            "person",
            3,
            [(k, "purchase", -60 * k, True), (k + 1, "visit", -3000, k % 2 == 0)],
            [
                (k, PURPOSE, k % 2 == 0, CONSENT_TIMES[k % 4], SIGNALS[k % 5]),
                (k + 1, OTHER, True, CONSENT_TIMES[(k + 1) % 4], ConsentSignal.DIRECT),
                (k + 2, PURPOSE, k % 3 == 0, CONSENT_TIMES[(k + 2) % 4], SIGNALS[(k + 2) % 5]),
            ],
        )
        for k in range(12)
    ),
    ("merge", 0, 5),
    ("merge", 7, 2),
    ("split", 3, 1),
    ("more", 4, [], [(0, PURPOSE, False, CONSENT_TIMES[0], ConsentSignal.TCF)]),
    ("erase", 9),
)


def test_a_file_of_audience_state_3_upgraded_holds_the_rows_the_same_data_written_at_state_4_holds(
    tmp_path: Path,
) -> None:
    """The upgrade from state 3 writes, row for row and byte for byte, the ``consent_records``
    rows the triggers wrote for the same data at state 4, and keeps ``consent_current`` and
    ``event_days`` as they were."""
    path = tmp_path / "graph.sqlite3"
    store = SqliteGraphStore(path)
    graph = _Graph(store)
    for step in _UPGRADE_STEPS:
        graph.step(step)
    written = _state_rows(store._conn)
    assert len(written[0]) > 20
    store.close()
    _rewrite(path, _STATE_3_RECORDS)
    reopened = SqliteGraphStore(path)
    try:
        assert _state_rows(reopened._conn) == written
    finally:
        reopened.close()


# A file of audience state 4: ``consent_current`` without the deciding record's columns, and no
# trigger writing them (the upgrade replaces every trigger; the state 4 bodies differ only there).
_STATE_4_CURRENT = (
    "DROP TRIGGER consent_current_on_insert",
    "DROP TRIGGER consent_current_on_delete",
    "DROP TRIGGER audience_state_on_move",
    "ALTER TABLE consent_current DROP COLUMN record_id",
    "ALTER TABLE consent_current DROP COLUMN signal",
    "ALTER TABLE consent_current DROP COLUMN recorded_at",
    "UPDATE meta SET value = '4' WHERE key = 'audience_state'",
)


def test_a_file_of_audience_state_4_gets_the_deciding_records_the_triggers_write_when_opened(
    tmp_path: Path, engine: PolicyEngine
) -> None:
    """The upgrade from state 4 fills every ``consent_current`` row's deciding record with what
    the triggers wrote for the same data at state 5 (row for row), keeps the other state as it
    was, and brings back triggers that keep it exact: scans hand grants that decide as the
    records do."""
    path = tmp_path / "graph.sqlite3"
    store = SqliteGraphStore(path)
    graph = _Graph(store)
    for step in _UPGRADE_STEPS:
        graph.step(step)
    written = _state_rows(store._conn)
    assert any(row[6] is not None for row in written[1])  # deciding records were written
    store.close()
    _rewrite(path, _STATE_4_CURRENT)
    old = sqlite3.connect(path)
    columns = {c[1] for c in old.execute("PRAGMA table_info(consent_current)")}
    old.close()
    assert "record_id" not in columns
    reopened = SqliteGraphStore(path)
    try:
        conn = reopened._conn
        assert _state_rows(conn) == written
        (state,) = conn.execute("SELECT value FROM meta WHERE key = 'audience_state'").fetchone()
        assert state == str(sqlite_audience.STATE_VERSION)
        graph.store = reopened
        graph.step(("more", 1, [], [(0, PURPOSE, True, CONSENT_TIMES[0], ConsentSignal.GPC, 5)]))
        graph.step(("merge", 2, 3))
        assert sqlite_audience.consent_state_of(conn) == _recomputed_consent_state(conn)
        for rules in RULE_SETS[:2]:
            assert _actual(reopened, engine, rules, 3) == _expected(reopened, engine, rules)
    finally:
        reopened.close()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    start=st.lists(_person, min_size=2, max_size=5),
    steps=st.lists(_step, min_size=1, max_size=12),
)
def test_the_state_4_upgrade_makes_the_consent_rows_the_triggers_wrote_for_any_graph(
    tmp_path_factory: pytest.TempPathFactory,
    start: list[tuple[Any, ...]],
    steps: list[tuple[Any, ...]],
) -> None:
    """For random graphs (merges, splits, erasures, proof retention between the writes), the
    set-based fill of the upgrade from state 4 makes every ``consent_current`` row, deciding
    record included, as the triggers wrote it record by record, and as the Python definition
    computes it from all records."""
    path = tmp_path_factory.mktemp("up4") / "graph.sqlite3"
    store = SqliteGraphStore(path, synchronous="OFF")
    try:
        graph = _Graph(store)
        for step in (*start, *steps):
            graph.step(step)
        written = _state_rows(store._conn)
    finally:
        store.close()
    _rewrite(path, _STATE_4_CURRENT)
    reopened = SqliteGraphStore(path, synchronous="OFF")
    try:
        conn = reopened._conn
        assert _state_rows(conn) == written
        assert sqlite_audience.consent_state_of(conn) == _recomputed_consent_state(conn)
    finally:
        reopened.close()


def _upgrade_fill_plan(
    tmp_path: Path, downgrade: Sequence[str], fill: str
) -> tuple[sqlite3.Connection, list[str]]:
    """A graph file taken back to an older state by ``downgrade``, upgraded again on open:
    the open connection and the query plan of the upgrade's statement starting with ``fill``."""
    path = tmp_path / "graph.sqlite3"
    store = SqliteGraphStore(path)
    graph = _Graph(store)
    for step in _UPGRADE_STEPS[:3]:
        graph.step(step)
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in downgrade:
        conn.execute(statement)
    run: list[str] = []
    conn.set_trace_callback(run.append)
    conn.execute("BEGIN IMMEDIATE")
    sqlite_audience.install(conn)
    conn.execute("COMMIT")
    conn.set_trace_callback(None)
    (statement,) = (s for s in run if s.lstrip().startswith(fill))
    return conn, [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}")]


def test_the_consent_rows_are_filled_from_the_consents_in_their_order_with_one_pass(
    tmp_path: Path,
) -> None:
    """The upgrade from state 4 makes ``consent_current`` from the consents in their order,
    each joined to its node and person once, with no lookup of a person's nodes or records per
    row (the person-by-person fill took 59.6 s on the 1M bench graph). Checked on the plan of
    the statement the upgrade runs."""
    conn, plan = _upgrade_fill_plan(tmp_path, _STATE_4_CURRENT, "INSERT INTO consent_current")
    try:
        scans = [step for step in plan if step.startswith("SCAN")]
        assert any(step.startswith("SCAN c") for step in scans)  # the consents drive
        assert not any(
            step.startswith(("SCAN i", "SCAN p", "SCAN persons", "SCAN identifiers"))
            for step in scans
        )
        assert not any("identifiers_by_person" in step for step in plan)
        assert not any("CORRELATED" in step for step in plan)
        assert conn.execute("SELECT count(*) FROM consent_current").fetchone()[0] > 0
    finally:
        conn.close()


def test_the_records_are_filled_from_the_consents_in_their_order_not_person_by_person(
    tmp_path: Path,
) -> None:
    """The upgrade's fill reads the consents in node-id order and sorts the rows once: no seek
    per person into its nodes and their records (random pages at a million persons: 22 s of a
    26 s first open, docs/neo4j.md). Checked on the plan of the statement the upgrade runs."""
    conn, plan = _upgrade_fill_plan(tmp_path, _STATE_3_RECORDS, "INSERT INTO consent_records")
    try:
        assert plan[0].startswith("SCAN c ")  # the consents drive
        assert not any("identifiers_by_person" in step for step in plan)
        assert not any(step.startswith("SCAN") for step in plan[1:])
        assert conn.execute("SELECT count(*) FROM consent_records").fetchone() == (9,)
    finally:
        conn.close()


# Run in a child process: opens the store on argv[1] and SIGKILLs itself from inside the
# upgrade's fill of consent_records (the old copy and the triggers dropped already), before
# the transaction commits: what a machine losing power half-way through the first open does.
_KILLED_UPGRADE = """
import os, signal, sys
from pathlib import Path
from identity.store import sqlite_audience
from identity.store.sqlite import SqliteGraphStore

install = sqlite_audience.install

def install_then_die(conn):
    filling = []
    def traced(statement):
        if statement.startswith("INSERT INTO consent_records"):
            filling.append(statement)
    conn.set_trace_callback(traced)
    conn.set_progress_handler(lambda: filling and os.kill(os.getpid(), signal.SIGKILL), 100)
    install(conn)

sqlite_audience.install = install_then_die
SqliteGraphStore(Path(sys.argv[1]))
"""


def test_a_state_3_file_killed_half_way_through_its_upgrade_is_left_at_state_3(
    tmp_path: Path,
) -> None:
    """The upgrade runs in the opening's transaction: a SIGKILL in the middle of the records'
    fill leaves the file of state 3 as it was (its rows, its triggers), and the next open
    upgrades it to the rows the same data written at state 4 holds."""
    path = tmp_path / "graph.sqlite3"
    store = SqliteGraphStore(path)
    graph = _Graph(store)
    for step in _UPGRADE_STEPS:
        graph.step(step)
    written = _state_rows(store._conn)
    store.close()
    old = sqlite3.connect(path)
    with old:
        for statement in _STATE_3_RECORDS:
            old.execute(statement)
    before = [
        old.execute("SELECT * FROM consent_records ORDER BY person_id, purpose").fetchall(),
        old.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall(),
        old.execute("SELECT * FROM meta ORDER BY key").fetchall(),
    ]
    old.close()
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_UPGRADE, str(path)],
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        check=False,
    )
    assert child.returncode == -SIGKILL, child.stderr.decode()
    after = sqlite3.connect(path)
    try:
        assert [
            after.execute("SELECT * FROM consent_records ORDER BY person_id, purpose").fetchall(),
            after.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall(),
            after.execute("SELECT * FROM meta ORDER BY key").fetchall(),
        ] == before
    finally:
        after.close()
    reopened = SqliteGraphStore(path)
    try:
        assert _state_rows(reopened._conn) == written
    finally:
        reopened.close()


def _vm_steps(conn: sqlite3.Connection, write: Any) -> int:
    """SQLite virtual-machine instructions (in tens) a write runs, its triggers included:
    a measure of the work done that does not depend on the machine or its load."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 10)
    try:
        write()
    finally:
        conn.set_progress_handler(None, 0)
    return steps


def test_a_consent_record_costs_what_the_first_did_when_its_person_holds_hundreds_already(
    tmp_path: Path,
) -> None:
    """Writing a consent record reads and writes only what it adds: the 400th record of a
    person and purpose, in a graph of 100 more persons, costs the same as the second (up to
    state 3 each record rewrote the row of all the person's records and recomputed the
    decision from all of them: quadratic)."""
    store = SqliteGraphStore(tmp_path / "graph.sqlite3", synchronous="OFF")
    try:
        graph = _Graph(store)
        graph.step(("person", 2, [], [(0, PURPOSE, True, CONSENT_TIMES[3], ConsentSignal.TCF)]))
        conn: sqlite3.Connection = store._conn
        record = (1, PURPOSE, False, CONSENT_TIMES[2], ConsentSignal.DIRECT)
        (first,) = graph.persons
        second = _vm_steps(conn, lambda: graph.step(("more", 0, [], [record])))
        for _ in range(40):
            graph.step(("more", 0, [], [record] * 10))
        for _ in range(100):  # nor with the persons of the graph (a trigger reading them all)
            graph.step(("person", 1, [], []))
        index = sorted(graph.persons).index(first)
        later = _vm_steps(conn, lambda: graph.step(("more", index, [], [record])))
        known = set(graph.persons)
        assert later <= second * 1.5  # up to state 3: about 80 times as many
        assert sqlite_audience.consent_state_of(conn) == _recomputed_consent_state(conn)
        assert sqlite_audience.consent_records_of(conn) == _recomputed_consent_records(conn)
        # Erasure deletes the records one by one: per record, a long history costs what a
        # short one does (up to state 3: every deletion recomputed from the records left).
        big = first
        graph.step(("person", 2, [], [record] * 10))
        (small,) = set(graph.persons) - known
        erase_small = _vm_steps(conn, lambda: store.write(lambda tx: tx.erase_person(small)))
        erase_big = _vm_steps(conn, lambda: store.write(lambda tx: tx.erase_person(big)))
        assert erase_big / 402 <= 2 * erase_small / 10
        assert sqlite_audience.consent_state_of(conn) == {}
    finally:
        store.close()


def test_consent_current_stays_exact_when_retention_prunes_superseded_records(
    tmp_path: Path,
) -> None:
    """Deleting a record that cannot decide (an older objection, an older grant) adjusts the
    row in place; deleting the deciding one recomputes it; deleting the last ones removes it;
    each as a recomputation from all records finds it."""
    store = SqliteGraphStore(tmp_path / "graph.sqlite3", synchronous="OFF")
    try:
        graph = _Graph(store)
        old, newer, latest = CONSENT_TIMES[3], CONSENT_TIMES[2], CONSENT_TIMES[0]
        graph.step(
            (
                "person",
                1,
                [],
                [
                    (0, PURPOSE, False, old, ConsentSignal.OBJECTION),
                    (0, PURPOSE, False, newer, ConsentSignal.OBJECTION),
                    (0, PURPOSE, True, old, ConsentSignal.DIRECT),
                    (0, PURPOSE, True, latest, ConsentSignal.DIRECT),
                    (0, PURPOSE, False, latest, ConsentSignal.TCF),  # a tie: denied
                    (0, OTHER, True, old, ConsentSignal.DIRECT),
                ],
            )
        )
        conn: sqlite3.Connection = store._conn
        (person,) = graph.persons
        assert sqlite_audience.consent_state_of(conn)[(person, PURPOSE)][3] == 2
        graph.step(("prune_consents", 2))  # the older objection and the older grant go
        assert conn.execute("SELECT count(*) FROM consents").fetchone() == (4,)
        state = sqlite_audience.consent_state_of(conn)
        assert state == _recomputed_consent_state(conn)
        assert state[(person, PURPOSE)][1:4] == (0, 1, 1)  # denied by the tie; one objection
        assert sqlite_audience.consent_records_of(conn) == _recomputed_consent_records(conn)
        # Deciding records deleted (no write path deletes one alone today; the triggers must
        # hold for any delete): the grant of the tie, then the denial left alone at that time.
        for signal, expected in (("direct", (0, 0, 1)), ("tcf", (None, 0, 1))):
            with conn:
                conn.execute(
                    "DELETE FROM consents WHERE purpose = ? AND signal = ?", (PURPOSE, signal)
                )
            state = sqlite_audience.consent_state_of(conn)
            assert state == _recomputed_consent_state(conn)
            assert state[(person, PURPOSE)][1:4] == expected
        graph.step(("erase", 0))
        assert sqlite_audience.consent_state_of(conn) == {}
        assert sqlite_audience.consent_records_of(conn) == {}
    finally:
        store.close()


# What a state 5 file held: no event_latest, and the counters' triggers without it (here: no
# triggers on the events at all, the state 4 layout's way of standing for older bodies).
_STATE_5_EVENTS = (
    "DROP TRIGGER event_days_on_insert",
    "DROP TRIGGER event_days_on_delete",
    "DROP TRIGGER event_days_on_update",
    "DROP TRIGGER audience_state_on_move",
    "DROP TABLE event_latest",
    "UPDATE meta SET value = '5' WHERE key = 'audience_state'",
)


def test_a_file_of_audience_state_5_gets_the_latest_event_times_when_opened(
    tmp_path: Path, engine: PolicyEngine
) -> None:
    """The upgrade from state 5 fills ``event_latest`` from the events (every row exact, the
    latest times of each person's events of a name), keeps the rest of the state as it was and
    brings back triggers that keep it: later writes, merges and erasures, and scans give the
    members the evaluator without the state gives."""
    path = tmp_path / "graph.sqlite3"
    store = SqliteGraphStore(path)
    graph = _Graph(store)
    for step in _UPGRADE_STEPS:
        graph.step(step)
    graph.step(("more", 1, [(k % 3, "purchase", -30 * k, True) for k in range(4)], []))
    written = _state_rows(store._conn)
    counters = sqlite_audience.counters_of(store._conn)
    store.close()
    _rewrite(path, _STATE_5_EVENTS)
    reopened = SqliteGraphStore(path)
    try:
        conn = reopened._conn
        (state,) = conn.execute("SELECT value FROM meta WHERE key = 'audience_state'").fetchone()
        assert state == str(sqlite_audience.STATE_VERSION)
        latest = sqlite_audience.latest_of(conn)
        assert any(len(times) == sqlite_audience.LATEST_SLOTS for _, times in latest.values())
        assert all(exact for exact, _ in latest.values())
        _assert_latest_holds(conn)
        assert _state_rows(conn) == written
        assert sqlite_audience.counters_of(conn) == counters
        graph.store = reopened
        for step in (
            ("more", 2, [(0, "purchase", -5, True), (1, "visit", -7, True)], []),
            ("merge", 2, 3),
            ("split", 2, 1),
            ("delete_event", 4),
            ("erase", 0),
        ):
            graph.step(step)
            _assert_latest_holds(conn)
        for rules in RULE_SETS:
            assert _actual(reopened, engine, rules, 3) == _expected(reopened, engine, rules)
    finally:
        reopened.close()


def _scan_steps(store: SqliteGraphStore, scan: MemberScan) -> tuple[int, int]:
    """(members, VM instructions in tens) of a whole member scan, pages of 50."""
    conn: sqlite3.Connection = store._reader  # reads run on the read connection
    found: list[MemberRow] = []
    steps = _vm_steps(conn, lambda: found.extend(_scan(store, scan, 50)))
    return len(found), steps


def test_an_event_rule_reads_a_row_per_person_whatever_the_length_of_their_history(
    tmp_path: Path,
) -> None:
    """A scan of "at least 2 purchases in 7 days" costs the same whether the persons bought on
    2 earlier days or on 60 (state 6: their ``event_latest`` row, one per person; the counters
    are a row per person and day, and up to state 5 a scan read every one of them, two thirds
    of them before a 30-day window in the 1M bench audience)."""
    scan = MemberScan(event_rules=(EventCountRule("purchase", NOW - timedelta(days=7), 2),))
    steps: list[int] = []
    for old_days in (2, 60):
        store = SqliteGraphStore(tmp_path / f"graph-{old_days}.sqlite3", synchronous="OFF")
        try:
            changes: list[tuple[Any, ...]] = []
            for k in range(60):
                recent = [(0, "purchase", -60 * (1 + k % 3), True)] * (1 + k % 2)
                history = [(0, "purchase", -1440 * (10 + d), True) for d in range(old_days)]
                changes.append(("person", 1, [*recent, *history], []))
            graph = _Graph(store)
            for step in changes:
                graph.step(step)
            members, cost = _scan_steps(store, scan)
            assert members == 30  # every other person bought twice this week
            steps.append(cost)
        finally:
            store.close()
    short, long = steps
    assert long <= short * 1.2  # up to state 5: 4.1 times as many
