"""What every idgraph SQLite file does the same way: one transaction, rolled back safely, and a
schema-version check. Used by the graph store, the vault key store, the audit log and the webhook
replay guard, which each keep their own connection, lock and error class.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from identity.errors import ConfigurationError

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


GRAPH_CACHE_MIB = 64  # the graph store's page cache (SQLite's default is 2 MiB)


def configure_graph_connection(
    conn: sqlite3.Connection,
    synchronous: str,
    busy_timeout_ms: int,
    cache_mib: int,
    unavailable: ErrorFactory,
) -> None:
    """The pragmas of a graph-store connection (the benchmarks' floors use them too, so a floor
    runs on the same page cache and durability as the store it is compared with).

    * WAL and ``synchronous`` (FULL by default): an acknowledged commit is on disk.
    * ``foreign_keys``: identifiers, facts and consents cannot point at nothing.
    * ``secure_delete``: deleted content is overwritten with zeros instead of lingering in free
      space and freelist pages: an erasure (GDPR Art. 17) must not leave the person's hashes, ids
      or ciphertexts readable in the file. It has to be on for every write, not only erasures: an
      update or a merge moves cells and would otherwise leave stale copies that a later erasure
      cannot find. Per connection, so every writer of the file must be configured here.
    * ``cache_size``: the indexes on random digests and person ids outgrow SQLite's default
      2 MiB early, and every miss is a read from disk inside the write lock.
    """
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA secure_delete=ON")
    if conn.execute("PRAGMA secure_delete").fetchone()[0] != 1:
        raise unavailable("this SQLite build cannot turn secure_delete on")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    conn.execute(f"PRAGMA cache_size=-{int(cache_mib) * 1024}")


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


def connect_private(
    path: Path,
    busy_timeout_ms: int,
    unavailable: ErrorFactory,
    what: str,
    *,
    secure_delete: bool = False,
) -> sqlite3.Connection:
    """Open a service-state file: owner-only (0600), WAL, ``synchronous=FULL``.

    Used by the audit log, the webhook replay guard, the DSR store and the control database (API
    keys, audiences). Why each setting:

    * **0600, refused if group/other can read it**: these files name persons (opaque references)
      and what was done to them; like the vault, only the service account may read them. A
      looser mode is a configuration error (``chmod 600``), not silently fixed.
    * **WAL**: readers do not block the writer; required (a file that cannot switch is refused).
    * **synchronous=FULL**: what these files record (an audit entry, an accepted webhook id, an
      accepted request whose legal deadline is running) must be on disk before it is reported.
    * ``secure_delete``: deleted content is zeroed instead of left in free pages (for files
      from which personal data is deleted, e.g. DSR subject hashes).

    Failures raise ``unavailable(message)``; ``what`` names the file in messages.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    except OSError as exc:
        raise unavailable(f"{what} {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise ConfigurationError(f"{what} {path} has mode {mode:o}; run `chmod 600 {path}`")
    try:
        # Owner-only; SQLite creates the -wal and -shm files with the main file's mode.
        path.touch(mode=0o600, exist_ok=True)
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
        )
    except (OSError, sqlite3.Error) as exc:
        raise unavailable(f"cannot open {what} {path}: {exc}") from exc
    try:
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        wal = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() == "wal"
        conn.execute("PRAGMA synchronous=FULL")
        if secure_delete:
            conn.execute("PRAGMA secure_delete=ON")
    except sqlite3.Error as exc:
        conn.close()
        raise unavailable(f"cannot open {what} {path}: {exc}") from exc
    if not wal:
        conn.close()
        raise unavailable(f"{what} {path}: WAL mode is unavailable")
    return conn
