"""Where bulk ingest's SQLite time goes: CPU seconds per SQL statement, same-work floor beside real.

``bench/ingest.py`` says how far the real path is from its floors; this says whether the
difference is in the database work or around it. It runs the same-work floor and the real
``idgraph ingest`` path of ``bench/ingest.py`` on one generated file, each in its own process,
with every ``execute``/``executemany`` of every SQLite connection timed by the CPU time of the
calling thread (``time.thread_time``: a statement's CPU, not its neighbours' nor the fsync wait),
grouped by statement text. It prints microseconds of CPU per identifier value for each statement
and mode, the SQLite total, the process's whole CPU and the rest (Python around the statements).

Run it at two sizes in one session to see what grows with the graph::

    python bench/sql_cost.py --identifiers 100000 1000000 --json out.json

How to read it: a statement the two modes share should cost the same per identifier in both at
every size (same schema, pragmas, page cache, batch size). Measured on stop 29 (load 8-10):
SQLite CPU per identifier 29.1 -> 43.3 us (same-work) and 31.2 -> 45.8 us (real) from 100k to
1M; the growth is the same statements' (identifiers and facts inserts, COMMIT), shared.

The timing wrapper adds a few microseconds per call (executemany calls are few; per-row
``execute`` calls are rare in bulk): compare modes of one run, not this run with ingest.py's.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODES = ("same-work", "real")
_PLACEHOLDERS = re.compile(r"\(\?(?:\s*,\s*\?)*\)")
_ROW_LISTS = re.compile(r"\(\?\.\.\)(?:\s*,\s*\(\?\.\.\))+")


def statement_key(sql: str) -> str:
    """A statement's text with whitespace folded, ``(?, ?, ...)`` lists as ``(?..)`` and the rows
    of a multi-row ``VALUES (...), (...)`` as one ``(?..)``, so an ``IN`` list of 500 and one of
    37, or an insert of 2,048 rows and one of 1, are the same statement."""
    return _ROW_LISTS.sub("(?..)", _PLACEHOLDERS.sub("(?..)", " ".join(sql.split())))[:120]


class _Costs:
    """statement -> [rows or calls, CPU seconds, wall seconds], inside the measured span only
    (opening, migrating and counting the store are outside ``cpu_seconds`` too)."""

    def __init__(self) -> None:
        self.by_statement: dict[str, list[float]] = {}
        self.active = False

    def add(self, sql: str, count: int, cpu: float, wall: float) -> None:
        if not self.active:
            return
        entry = self.by_statement.setdefault(statement_key(sql), [0, 0.0, 0.0])
        entry[0] += count
        entry[1] += cpu
        entry[2] += wall


COSTS = _Costs()


class TimedConnection(sqlite3.Connection):
    """A connection whose ``execute`` and ``executemany`` record their CPU and wall time."""

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return super().execute(sql, parameters)
        finally:
            COSTS.add(sql, 1, time.thread_time() - cpu, time.perf_counter() - wall)

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> sqlite3.Cursor:
        rows = list(seq_of_parameters)
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return super().executemany(sql, rows)
        finally:
            COSTS.add(sql, len(rows), time.thread_time() - cpu, time.perf_counter() - wall)


def run_child(mode: str, work: Path, batch_size: int) -> dict[str, Any]:
    """Run one mode of ``bench/ingest.py`` in this process with every connection timed."""
    connect = sqlite3.connect

    def timed_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs.setdefault("factory", TimedConnection)
        conn: sqlite3.Connection = connect(*args, **kwargs)
        return conn

    sqlite3.connect = timed_connect  # type: ignore[assignment]
    from bench import ingest  # after the patch: its connections are timed

    # bench.ingest's own name for bench.measure.measured, patched below (not a re-export).
    measured = ingest.measured  # type: ignore[attr-defined]

    @contextmanager
    def counted(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with measured(*args, **kwargs) as span:
            COSTS.active = True
            try:
                yield span
            finally:
                COSTS.active = False

    ingest.measured = counted  # type: ignore[attr-defined]  # the statements of the timed span, as cpu_seconds
    data = work / ingest.DATA_FILE
    if mode == "same-work":
        result = ingest.run_same_work(data, work, batch_size, "FULL")
    else:
        result = ingest.run_real(data, work, batch_size, "FULL")
    return {**result, "statements": COSTS.by_statement}


def _child(mode: str, work: Path, batch_size: int) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        mode,
        "--work-dir",
        str(work),
        "--batch-size",
        str(batch_size),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"sql_cost: {mode} failed with exit code {done.returncode}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(identifiers: int, batch_size: int, tmp_dir: str | None) -> dict[str, Any]:
    """Generate ``identifiers`` and run both modes on them; the figures of one size."""
    from bench import ingest  # the orchestrating process times nothing

    with tempfile.TemporaryDirectory(prefix="idgraph-sqlcost-", dir=tmp_dir) as tmp:
        work = Path(tmp)
        ingest.write_data(work / ingest.DATA_FILE, max(1, identifiers // 4), 20261123)
        ingest.create_key(work)
        return {mode: _child(mode, work, batch_size) for mode in MODES}


def per_identifier(mode: dict[str, Any]) -> dict[str, float]:
    """CPU microseconds per identifier value of each statement, plus ``sqlite``, ``process``
    and ``rest`` (process CPU not spent in a statement)."""
    count = max(1, int(mode["identifiers"]))
    costs = {sql: cpu / count * 1e6 for sql, (_, cpu, _) in mode["statements"].items()}
    sqlite_total = sum(costs.values())
    process = float(mode["cpu_seconds"]) / count * 1e6
    return {**costs, "sqlite": sqlite_total, "process": process, "rest": process - sqlite_total}


def render(sizes: dict[int, dict[str, Any]], top: int = 15) -> str:
    """The side-by-side table: one column per (size, mode)."""
    columns = [
        (f"{size:,} {mode}", per_identifier(figures[mode]))
        for size, figures in sizes.items()
        for mode in MODES
    ]
    totals = ("process", "sqlite", "rest")
    statements = {k for _, costs in columns for k in costs if k not in totals}
    ranked = sorted(statements, key=lambda k: -max(c.get(k, 0.0) for _, c in columns))[:top]
    width = max(len(label) for label, _ in columns) + 2
    lines = [
        "CPU microseconds per identifier value (thread CPU of each statement)",
        "".join(f"{label:>{width}}" for label, _ in columns) + "  statement",
    ]
    for key in (*totals, *ranked):
        cells = "".join(f"{c.get(key, 0.0):>{width}.2f}" for _, c in columns)
        lines.append(f"{cells}  {key if key not in totals else '== ' + key}")
    loads = ", ".join(
        f"{size:,} {mode}: {figures[mode]['load_before']}-{figures[mode]['load_after']}"
        for size, figures in sizes.items()
        for mode in MODES
    )
    lines.append(f"load average before-after: {loads}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identifiers", type=int, nargs="+", default=[20_000])
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--tmp-dir")
    parser.add_argument("--json", metavar="OUT")
    parser.add_argument("--child", choices=MODES, help="internal: run one mode, timed")
    parser.add_argument("--work-dir", help="internal: the data of --child")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args.child, Path(args.work_dir), args.batch_size)))
        return 0
    if any(n < 1 for n in args.identifiers) or args.batch_size < 1:
        parser.error("--identifiers and --batch-size must be positive")
    sizes = {n: measure(n, args.batch_size, args.tmp_dir) for n in args.identifiers}
    print(render(sizes))
    if args.json:
        doc = {
            str(size): {mode: per_identifier(figures[mode]) for mode in MODES}
            for size, figures in sizes.items()
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    if str(ROOT) not in sys.path:  # run as a script: make the repository importable
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
