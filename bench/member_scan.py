"""Member-scan benchmark: ``GraphTransaction.member_page`` over a whole SQLite graph.

Usage (from the repository root)::

    .venv/bin/python bench/member_scan.py                        # 100,000 persons
    .venv/bin/python bench/member_scan.py --persons 1000000 --db /tmp/scan-1m.sqlite3

Builds a synthetic graph (not timed; kept and reused when ``--db`` names an existing file built
with the same ``--persons``): every person has 1-3 identifier nodes, a ``city`` attribute, an
``age_band`` on half of them, ``purchase`` events on about 30 % (1-4 each, spread over 90 days),
``page_view`` events on about half, a ``marketing`` consent history on 80 % (1-2 records), an
``analytics`` record on half and a restriction (purpose ``*``) on 0.5 %. Facts and consents hang
off random nodes of their person, as the engine anchors them to an event's hub.

Then it scans every person page by page, in one read transaction per page, and prints for each
mode the wall time, the persons returned and the pages:

* ``baseline-*``: the store's own page-selection SQL alone (the persons of each page, with the
  same event-rule conditions), no consents, no attributes, no Python objects beyond the rows.
* ``member_page-*``: ``member_page`` as the API calls it (consents for ``marketing`` plus
  restrictions, the ``city`` and ``age_band`` attributes, sealed).
* ``member_page+policy-*``: the same, plus a stand-in consent decision per person in Python
  (latest ``marketing`` decision wins, a tie denies, a restriction denies) and keeping only the
  persons it allows: what an audience export does before it decrypts anything.

``*`` is ``all`` (no event rule) or ``rule`` (at least one purchase in the last 30 days AND at
least one page view in the last 60). Also prints ``EXPLAIN QUERY PLAN`` of each statement.
Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from operator import methodcaller
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from identity.hashing import HashedIdentifier  # noqa: E402
from identity.model import (  # noqa: E402
    RESTRICTION_PURPOSE,
    ChangeSet,
    ConsentRecord,
    ConsentSignal,
    EventCountRule,
    Fact,
    FactKind,
    FactStatus,
    IdentifierNode,
    MemberRow,
    MemberScan,
    PersonRecord,
    new_node_id,
)
from identity.store import sqlite as sqlite_store  # noqa: E402
from identity.store import sqlite_audience  # noqa: E402
from identity.store.sqlite import SqliteGraphStore  # noqa: E402

NOW = datetime(2026, 6, 1, tzinfo=UTC)
BUILD_BATCH = 20_000
TYPES = ("email", "phone", "cookie_id")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _person_changes(rng: random.Random, count: int) -> ChangeSet:
    persons: list[PersonRecord] = []
    nodes: list[IdentifierNode] = []
    facts: list[Fact] = []
    consents: list[ConsentRecord] = []

    def fact(node: str, kind: FactKind, name: str, at: datetime) -> Fact:
        return Fact(
            "f_" + secrets.token_hex(12),
            node,
            kind,
            name,
            "behavioural" if kind is FactKind.EVENT else "location",
            at,
            "bench",
            FactStatus.ACTIVE,
            secrets.token_bytes(40),  # about the size of a sealed short value
        )

    def consent(node: str, purpose: str, granted: bool, at: datetime) -> ConsentRecord:
        return ConsentRecord(
            "c_" + secrets.token_hex(12),
            node,
            purpose,
            granted,
            at,
            at + timedelta(seconds=1),
            "cmp:bench",
            ConsentSignal.TCF,
            "consent",
            secrets.token_hex(32),
        )

    for _ in range(count):
        person = "p_" + secrets.token_hex(12)
        created = NOW - timedelta(days=rng.randint(1, 365), seconds=rng.randint(0, 86_399))
        persons.append(PersonRecord(person, created, NOW))
        own = [new_node_id() for _ in range(rng.choice((1, 2, 2, 3)))]
        nodes += [
            IdentifierNode(
                n, HashedIdentifier(TYPES[k], "k1", secrets.token_bytes(32)), person, created, NOW
            )
            for k, n in enumerate(own)
        ]

        def ago(days: int) -> datetime:
            return NOW - timedelta(days=rng.uniform(0, days))

        facts.append(fact(own[0], FactKind.ATTRIBUTE, "city", created))
        if rng.random() < 0.5:
            facts.append(fact(rng.choice(own), FactKind.ATTRIBUTE, "age_band", created))
        if rng.random() < 0.3:
            facts += [
                fact(rng.choice(own), FactKind.EVENT, "purchase", ago(90))
                for _ in range(rng.randint(1, 4))
            ]
        if rng.random() < 0.5:
            facts += [
                fact(rng.choice(own), FactKind.EVENT, "page_view", ago(90))
                for _ in range(rng.randint(1, 3))
            ]
        if rng.random() < 0.8:
            consents += [
                consent(rng.choice(own), "marketing", rng.random() < 0.7, ago(300))
                for _ in range(rng.randint(1, 2))
            ]
        if rng.random() < 0.5:
            consents.append(consent(rng.choice(own), "analytics", True, ago(300)))
        if rng.random() < 0.005:
            consents.append(consent(own[0], RESTRICTION_PURPOSE, False, ago(30)))
    return ChangeSet(
        new_persons=tuple(persons),
        new_nodes=tuple(nodes),
        facts=tuple(facts),
        consents=tuple(consents),
    )


def build(path: Path, persons: int, seed: int) -> None:
    """Write the synthetic graph (``persons`` persons) into a new store at ``path``."""
    rng = random.Random(seed)
    store = SqliteGraphStore(path, synchronous="OFF")
    try:
        started = time.perf_counter()
        for done in range(0, persons, BUILD_BATCH):
            changes = _person_changes(rng, min(BUILD_BATCH, persons - done))
            store.write(methodcaller("apply", changes))
            print(f"  built {done + len(changes.new_persons):>9,} persons", end="\r", flush=True)
        store.write(lambda tx: tx._conn.execute("ANALYZE"))
        print(f"  built {persons:,} persons in {time.perf_counter() - started:.1f} s")
        print(f"  {store.stats()}")
    finally:
        store.close()


def _allowed(row: MemberRow) -> bool:
    """Stand-in policy: latest marketing decision wins, a tie denies, a restriction denies."""
    latest: tuple[datetime, bool] | None = None
    for record in row.consents:  # ordered by (at, recorded_at, record_id)
        if record.purpose == RESTRICTION_PURPOSE:
            return False
        if latest is None or record.at > latest[0]:
            latest = (record.at, record.granted)
        elif record.at == latest[0]:
            latest = (record.at, latest[1] and record.granted)
    return latest is not None and latest[1]


def _pages(
    fetch: Callable[[str], Sequence[Any]], key: Callable[[Any], str]
) -> Iterator[Sequence[Any]]:
    after = ""
    while page := fetch(after):
        yield page
        after = key(page[-1])


def _timed(label: str, run: Callable[[], tuple[int, int]]) -> dict[str, Any]:
    # CPU time beside wall time: on a shared machine the wall clock also counts other processes.
    started, cpu = time.perf_counter(), time.process_time()
    returned, pages = run()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    print(
        f"  {label:<26} {seconds:8.3f} s wall {cpu_seconds:8.3f} s cpu "
        f"{returned:>10,} persons {pages:>5} pages"
    )
    return {
        "mode": label,
        "seconds": round(seconds, 4),
        "cpu_seconds": round(cpu_seconds, 4),
        "persons": returned,
        "pages": pages,
    }


def scan(path: Path, page_size: int) -> list[dict[str, Any]]:
    """Time every mode over the store at ``path``; print and return the figures."""
    store = SqliteGraphStore(path)
    rules = (
        EventCountRule("purchase", NOW - timedelta(days=30), 1),
        EventCountRule("page_view", NOW - timedelta(days=60), 1),
    )
    scans = {
        "all": MemberScan((), ("city", "age_band"), ("marketing",)),
        "rule": MemberScan(rules, ("city", "age_band"), ("marketing",)),
    }
    # The baseline runs the store's own SQL on the connection member_page runs on: the store's
    # read connection (memory-mapped, storage.sqlite.GRAPH_READ_MMAP_BYTES).
    conn = store._reader

    def baseline(scan_: MemberScan) -> Callable[[], tuple[int, int]]:
        rules_ = scan_.event_rules

        def run() -> tuple[int, int]:
            def fetch(after: str) -> list[Any]:
                # The first rule drives (member_page picks the one selecting fewest events).
                sql, params = sqlite_audience.page_query(rules_, 0, None, None, after, page_size)
                with store._lock:
                    conn.execute("BEGIN")
                    try:
                        return conn.execute(sql, params).fetchall()
                    finally:
                        conn.execute("COMMIT")

            pages = list(_pages(fetch, lambda row: str(row[0])))
            return sum(map(len, pages)), len(pages)

        return run

    def member(scan_: MemberScan, policy: bool) -> Callable[[], tuple[int, int]]:
        def run() -> tuple[int, int]:
            def fetch(after: str) -> tuple[MemberRow, ...]:
                # No consent filter in these scans: every selected person is a row.
                return store.read(lambda tx: tx.member_page(scan_, after, page_size)).rows

            kept = pages = 0
            for page in _pages(fetch, lambda row: row.person_id):
                pages += 1
                kept += sum(map(_allowed, page)) if policy else len(page)
            return kept, pages

        return run

    try:
        print("\nquery plans:")
        rule = EventCountRule("purchase", NOW - timedelta(days=30), 1)
        # The page statement of member_page: the selection with the consent records.
        page_sql, page_params = sqlite_audience.page_query((rule,), 0, None, (), "", 10)
        all_sql, all_params = sqlite_audience.page_query((), 0, None, (), "", 10)
        list_, range_ = sqlite_store._PAGE_LIST, sqlite_store._PAGE_RANGE
        for name, sql, params in (
            ("page with consents (one rule)", page_sql, tuple(page_params)),
            ("page with consents (no rule)", all_sql, tuple(all_params)),
            (
                "attributes (range)",
                sqlite_store._MEMBER_ATTRIBUTES.format(persons=range_),
                ("", "", "[]"),
            ),
            (
                "attributes (list)",
                sqlite_store._MEMBER_ATTRIBUTES.format(persons=list_),
                ("[]", "[]"),
            ),
        ):
            print(f"  {name}:")
            for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params):
                print(f"    {row[3]}")
        print(f"\nfull scans, page size {page_size:,} (each mode run twice, second run shown):")
        results = []
        for which, scan_ in scans.items():
            for label, run in (
                (f"baseline-{which}", baseline(scan_)),
                (f"member_page-{which}", member(scan_, policy=False)),
                (f"member_page+policy-{which}", member(scan_, policy=True)),
            ):
                run()  # warm the page cache
                results.append(_timed(label, run))
        return results
    finally:
        store.close()


def main() -> None:
    """Parse arguments, build (or reuse) the graph, run the scans."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--persons", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--db", type=Path, default=None, help="keep/reuse the graph here")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    path = args.db or Path(f"/tmp/idgraph-member-scan-{args.persons}.sqlite3")  # noqa: S108
    marker = path.with_suffix(".built")
    if not (path.exists() and marker.exists() and marker.read_text() == str(args.persons)):
        for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            stale.unlink(missing_ok=True)
        print(f"building {args.persons:,} persons in {path} (not timed)")
        build(path, args.persons, args.seed)
        marker.write_text(str(args.persons))
    else:
        print(f"reusing {path} ({args.persons:,} persons)")
    results = scan(path, args.page_size)
    if args.json:
        args.json.write_text(json.dumps({"persons": args.persons, "results": results}, indent=2))


if __name__ == "__main__":
    main()
