"""Audience state upgrades of the SQLite graph store: what the first open of an older file costs.

Usage (from the repository root)::

    .venv/bin/python bench/upgrade.py                                  # 20,000 persons
    .venv/bin/python bench/upgrade.py --db /tmp/aud-1m.sqlite3 --rounds 2 --json out.json

A file written by an older idgraph holds an older audience state
(``identity/store/sqlite_audience.py``, meta ``audience_state``); the first open by this version
fills what it lacks, inside the opening's write transaction. This times that open, on copies of
one graph given five layouts (made with SQL on the copy, not timed):

* ``state 6`` (the current layout): the open alone, the same-run baseline.
* ``state 5``: no ``event_latest`` (the latest event times per name and person), as up to stop
  42. The open fills it in one grouped pass over the events (``_FILL_LATEST``).
* ``state 4``: ``consent_current`` without its rows' deciding records (``record_id``,
  ``signal``, ``recorded_at``), as up to stop 37. The open adds the columns and makes every row
  again from the records (``_FILL_CURRENT``: one grouped pass over the consents; person by person
  until stop 39).
* ``state 3``: also ``consent_records`` holds a row of all records per (person, purpose), as up to
  stop 32. The open makes the table again, one row per record (``_FILL_RECORDS``: one pass over
  the consents, sorted once by the table's key), then does the state 4 -> 5 fill (each older
  layout also lacks ``event_latest``: every open but the baseline's fills it).
* ``state 2``: also ``event_days`` without the time bounds ``lo``/``hi``, as up to stop 30. The
  open adds the columns, empties the counters and fills them again with their bounds
  (``_BACKFILL_EVENTS``: one grouped pass over the events), then does the state 3 -> 4 fill.

Each mode opens and closes the store (the close checkpoints the upgrade's WAL into the file:
part of its cost) in this process, first thing after the copy was made; every mode has a copy
of its own, and the modes alternate in each of ``--rounds`` rounds (the order turned around
every other round), so they see the same drift of the machine's load. Prints wall and CPU
seconds and bytes written per mode and the upgrades over the baseline: ``5 -> 6`` is
``state 5`` minus ``state 6``, ``4 -> 5`` is ``state 4`` minus ``state 5``, ``3 -> 4`` is
``state 3`` minus ``state 4``, ``2 -> 3`` is ``state 2`` minus ``state 3`` (the counters' refill
alone). Figures only; nothing is asserted.

``--db`` names an existing graph (any idgraph SQLite graph file, e.g. one ``bench/audience.py
--db`` built): it is only read (copied). Without it a graph of ``--persons`` persons is built in
the work directory with ``bench/member_scan.py``'s builder (events and consent records of several
purposes on most persons).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import load_average, measured  # noqa: E402
from bench.member_scan import build  # noqa: E402
from identity.store import sqlite_audience  # noqa: E402
from identity.store.sqlite import SqliteGraphStore  # noqa: E402

MODES = ("state 6", "state 5", "state 4", "state 3", "state 2")

# A state 5 file: no event_latest. The state's triggers go: the open being timed replaces every
# one of them anyway (and they write that table and the columns the older layouts lack).
_STATE_5 = (
    *(f"DROP TRIGGER IF EXISTS {name}" for name in sqlite_audience.TRIGGERS),
    "DROP TABLE event_latest",
    "UPDATE meta SET value = '5' WHERE key = 'audience_state'",
)
# A state 4 file: also consent_current without the deciding record's columns.
_STATE_4 = (
    *_STATE_5,
    "ALTER TABLE consent_current DROP COLUMN record_id",
    "ALTER TABLE consent_current DROP COLUMN signal",
    "ALTER TABLE consent_current DROP COLUMN recorded_at",
    "UPDATE meta SET value = '4' WHERE key = 'audience_state'",
)

# A state 3 file's consent_records: a row of all records per (person, purpose), the records as
# JSON arrays joined by commas (what a state 4 file's rows of a (person, purpose) read as when
# joined), and the state 4 layout.
_STATE_3 = (
    *_STATE_4,
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
    "UPDATE meta SET value = '3' WHERE key = 'audience_state'",
)
# A state 2 file: the state 3 layout, and counters without their time bounds.
_STATE_2 = (
    *_STATE_3,
    "ALTER TABLE event_days DROP COLUMN lo",
    "ALTER TABLE event_days DROP COLUMN hi",
    "UPDATE meta SET value = '2' WHERE key = 'audience_state'",
)
_LAYOUTS: dict[str, tuple[str, ...]] = {
    "state 6": (),
    "state 5": _STATE_5,
    "state 4": _STATE_4,
    "state 3": _STATE_3,
    "state 2": _STATE_2,
}


def _copy(source: Path, target: Path) -> None:
    """``source`` (with its WAL folded in) copied to ``target``, owner-only as the store asks."""
    conn = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    try:
        copy = sqlite3.connect(target)
        with copy:
            conn.backup(copy)
        copy.close()
    finally:
        conn.close()
    target.chmod(0o600)


def _layout(path: Path, mode: str) -> None:
    """Give the closed graph file at ``path`` the audience-state layout of ``mode``."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for statement in _LAYOUTS[mode]:
            conn.execute(statement)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _state(path: Path) -> tuple[str, int, int]:
    """The file's audience state, its consent_records rows and its consents."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        (state,) = conn.execute("SELECT value FROM meta WHERE key = 'audience_state'").fetchone()
        (rows,) = conn.execute("SELECT count(*) FROM consent_records").fetchone()
        (consents,) = conn.execute("SELECT count(*) FROM consents").fetchone()
    finally:
        conn.close()
    return str(state), int(rows), int(consents)


def _open_timed(path: Path, mode: str) -> dict[str, Any]:
    """Open and close the store on ``path`` (of ``mode``'s layout), measured."""
    with measured() as span:
        SqliteGraphStore(path).close()
    state, rows, consents = _state(path)
    if state != str(sqlite_audience.STATE_VERSION) or rows != consents:
        raise SystemExit(f"bench: {mode}: the open left state {state}, {rows} of {consents} rows")
    print(f"  {mode:<8} open + close: {span.describe()}")
    return {"mode": mode, **span.as_json()}


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


def main(argv: list[str] | None = None) -> int:
    """Copy the graph once per mode and round, give each copy its layout, time the opens."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, help="an existing graph file to copy (only read)")
    parser.add_argument("--persons", type=int, default=20_000, help="persons built without --db")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the modes")
    parser.add_argument("--tmp-dir", type=Path, help="where the work directory goes")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.persons < 1:
        parser.error("--rounds and --persons must be >= 1")
    if args.db is not None and not args.db.is_file():
        parser.error(f"--db {args.db}: no such file")
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="idgraph-upgrade-", dir=args.tmp_dir) as tmp:
        work = Path(tmp)
        source = args.db
        if source is None:
            source = work / "source.sqlite3"
            print(f"building {args.persons:,} persons (not timed)")
            build(source, args.persons, args.seed)
        _, records, consents = _state(source)
        print(f"graph {source}: {consents:,} consent records; {args.rounds} round(s)")
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        for round_ in range(args.rounds):
            for mode in MODES if round_ % 2 == 0 else MODES[::-1]:
                copy = work / "graph.sqlite3"
                _copy(source, copy)
                _layout(copy, mode)
                runs[mode].append(_open_timed(copy, mode))
                for path in (copy, copy.with_name(copy.name + "-wal")):
                    path.unlink(missing_ok=True)
                copy.with_name(copy.name + "-shm").unlink(missing_ok=True)
    figures: dict[str, Any] = {
        "graph": str(args.db) if args.db else f"built: {args.persons} persons",
        "consent_records": consents,
        "rounds": args.rounds,
        "runs": runs,
        "load_before": load_before,
        "load_after": load_average(),
    }
    medians = {
        mode: {key: _median(runs[mode], key) for key in ("seconds", "cpu_seconds", "bytes_written")}
        for mode in MODES
    }
    upgrades = {
        "5_to_6": ("state 5", "state 6", "event_latest filled"),
        "4_to_5": ("state 4", "state 5", "consent_current made again with deciding records"),
        "3_to_4": ("state 3", "state 4", "consent_records made again, a row per record"),
        "2_to_3": ("state 2", "state 3", "the counters filled again with their bounds"),
    }
    figures["upgrades"] = {}
    for name, (older, newer, what) in upgrades.items():
        cost = {key: medians[older][key] - medians[newer][key] for key in medians[older]}
        figures["upgrades"][name] = {key: round(value, 4) for key, value in cost.items()}
        print(
            f"  upgrade {name.replace('_to_', ' -> ')} ({what}): {older} minus {newer}, medians: "
            f"{cost['seconds']:.2f} s wall, {cost['cpu_seconds']:.2f} s CPU, "
            f"{cost['bytes_written'] / 2**20:.0f} MiB written"
        )
    figures["medians"] = medians
    print(f"  load average {load_before:.2f} -> {figures['load_after']:.2f}")
    if records != consents:
        print(f"  (the source graph held {records:,} consent_records rows)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
