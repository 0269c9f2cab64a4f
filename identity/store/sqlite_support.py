"""What every idgraph SQLite file does the same way: one transaction, rolled back safely, and a
schema-version check. Used by the graph store, the vault key store, the audit log and the webhook
replay guard, which each keep their own connection, lock and error class.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ErrorFactory = Callable[[str], Exception]


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is open.

    SQLite may already have rolled back on its own (SQLITE_FULL, SQLITE_IOERR); a second
    ROLLBACK would raise and hide the error that matters.
    """
    if conn.in_transaction:
        conn.execute("ROLLBACK")


@contextmanager
def transaction(
    conn: sqlite3.Connection, begin: str, unavailable: ErrorFactory, what: str
) -> Iterator[sqlite3.Connection]:
    """Run the body in one transaction: commit if it returns, roll back if it raises.

    ``begin`` is ``BEGIN IMMEDIATE`` for writes (take the write lock before reading, so a
    read-decide-write cannot interleave with another writer) or ``BEGIN`` for a read snapshot.
    Failing to begin or to commit raises ``unavailable(message)``; ``what`` names the file.
    The caller holds its own lock around this.
    """
    try:
        conn.execute(begin)
    except sqlite3.Error as exc:
        raise unavailable(f"{what} busy or unavailable: {exc}") from exc
    try:
        yield conn
    except BaseException:
        rollback(conn)
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        rollback(conn)
        raise unavailable(f"{what} commit failed: {exc}") from exc


def migrate_schema(
    conn: sqlite3.Connection, schema: str, version: int, newer: ErrorFactory, what: str
) -> None:
    """Create tables (idempotent DDL) and record ``version`` in the ``meta`` table.

    A file written by a newer idgraph is refused rather than misread. A file of an older version
    is migrated forward: ``schema`` is idempotent DDL (``IF NOT EXISTS``), so running it adds what
    the newer version has (new tables and indexes), and then the file is marked ``version``, so
    an older idgraph refuses it from now on instead of ignoring what it does not know (it would
    otherwise copy or serve the graph without, say, its consent records).
    """
    conn.executescript(schema)
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(version),))
    elif int(row[0]) > version:
        raise newer(f"{what} schema {row[0]} is newer than this idgraph ({version})")
    elif int(row[0]) < version:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
