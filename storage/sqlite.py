"""The one way idgraph opens an SQLite file, runs a transaction and migrates a schema.

Every SQLite file of the service goes through :func:`connect_private`: the graph store, the vault
key store, the audit log, the DSR store, the control database (API keys, audiences), the webhook
replay guard and the console's operator database. Each keeps its own connection, lock and error
class; what they share is here, so a setting (a mode check, the busy timeout) cannot drift
between them again.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

from identity.errors import ConfigurationError

ErrorFactory = Callable[[str], Exception]
T = TypeVar("T")
Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
_SYNCHRONOUS: frozenset[str] = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})

# Why: CPython's sqlite3 (3.11) binds int, float, str and bytearray parameters directly, but sends
# every ``bytes`` parameter (each digest, sealed value, wrapped key, audit hash) through its
# adaptation protocol first: an adapter-table miss, then a lookup of ``PrepareProtocol.__adapt__``
# whose AttributeError is formatted and thrown away, about 3,000 instructions per value (stop 38:
# 2.3 % of a bulk event's instructions, cachegrind at 20k). With ``bytes`` registered as adapter of
# ``bytes`` the table hits, and ``bytes(value)`` returns the same object: what is bound is the
# identical value, as before. Registering ``bytes`` (unlike int, float, str or bytearray) does
# not switch the module to adapting every parameter. The table is process-wide, which is what is
# wanted: every SQLite file of the service binds bytes.
sqlite3.register_adapter(bytes, bytes)


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


def statements(script: str) -> Iterator[str]:
    """Split an SQL script into single statements (``sqlite3.complete_statement`` decides where
    one ends, so a ``;`` inside a string, a comment or a trigger body does not split it).

    ``executescript`` cannot be used inside a transaction: it commits any open one first.
    """
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                yield pending
            pending = ""
    if pending.strip(" \t\r\n;"):
        yield pending  # incomplete: let SQLite name the syntax error


def migrate_schema(
    conn: sqlite3.Connection,
    schema: str,
    version: int | None,
    newer: ErrorFactory,
    what: str,
    *,
    unavailable: ErrorFactory | None = None,
    before: Callable[[sqlite3.Connection], None] | None = None,
    after: Callable[[sqlite3.Connection], None] | None = None,
) -> None:
    """Create tables (idempotent DDL) and record ``version`` in the ``meta`` table, in **one**
    ``BEGIN IMMEDIATE`` transaction.

    Why one write transaction: two processes that open a brand-new file at the same moment (an
    API replica and ``idgraph`` on the same data directory) would otherwise both find no
    ``schema_version`` row and both insert it, and the second fails on ``meta``'s key. Under the
    write lock the second one waits (busy timeout), then sees the first one's schema. A crash
    half-way leaves nothing half-created.

    A file written by a newer idgraph is refused rather than misread. A file of an older version
    is migrated forward: ``schema`` is idempotent DDL (``IF NOT EXISTS``), so running it adds what
    the newer version has (new tables and indexes), and then the file is marked ``version``, so
    an older idgraph refuses it from now on instead of ignoring what it does not know (it would
    otherwise copy or serve the graph without, say, its consent records). ``version=None``: a
    file without a version row (the control database), DDL only.

    ``before`` runs first (e.g. add a column an index of ``schema`` needs), ``after`` runs last
    (data migrations), both inside the same transaction. ``unavailable`` (default ``newer``) is
    raised when the write lock cannot be had or the commit fails.
    """
    with transaction(conn, "BEGIN IMMEDIATE", unavailable or newer, what):
        if before is not None:
            before(conn)
        for statement in statements(schema):
            conn.execute(statement)
        if version is not None:
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(version),)
                )
            elif int(row[0]) > version:
                raise newer(f"{what} schema {row[0]} is newer than this idgraph ({version})")
            elif int(row[0]) < version:
                conn.execute(
                    "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),)
                )
        if after is not None:
            after(conn)


def connect_private(
    path: Path,
    busy_timeout_ms: int,
    unavailable: ErrorFactory,
    what: str,
    *,
    secure_delete: bool = False,
    synchronous: Synchronous = "FULL",
    foreign_keys: bool = False,
    cache_mib: int | None = None,
    tighten_mode: bool = False,
) -> sqlite3.Connection:
    """Open an idgraph SQLite file: owner-only (0600), WAL, a busy timeout, ``synchronous=FULL``.

    Why each setting:

    * **0600, refused if group/other can read it**: every file names persons (keyed hashes or
      opaque references) or holds key material; only the service account may read it. A looser
      mode is a configuration error (``chmod 600``), never silently fixed: a file someone else
      could read may already have been read, which an operator must know about.
    * **WAL**: readers do not block the writer; required (a file that cannot switch is refused).
      The vault's and the graph store's erasure reasoning (checkpoint, truncate) is about WAL.
    * **busy timeout**: another process holding the write lock (a second replica, the CLI) is
      waited for, not reported as an error.
    * **synchronous=FULL** (the graph store may lower it by setting): what these files record (an
      audit entry, an accepted webhook id, a created data key, an accepted request whose legal
      deadline is running) must be on disk before it is reported.
    * ``secure_delete``: deleted content is zeroed instead of left in free pages (files from
      which personal data or key material is deleted: the graph, vault keys, DSR subjects,
      sessions). A build that cannot turn it on is refused, as an erasure would leave copies.
    * ``foreign_keys`` and ``cache_mib``: the graph store's schema and its large indexes.
    * ``tighten_mode``: the graph store's behaviour since its first version: a looser file
      (a copied backup, a restored snapshot) is set to 0600 on open instead of refused.

    One connection per file and object, ``isolation_level=None`` (explicit ``BEGIN``), usable from
    the thread pool (callers serialize with their own lock). Failures raise
    ``unavailable(message)``; ``what`` names the file in messages.
    """
    if synchronous not in _SYNCHRONOUS:
        raise ConfigurationError(f"{what}: synchronous must be one of {sorted(_SYNCHRONOUS)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise unavailable(f"{what} {path}: {exc.strerror}") from exc
    if tighten_mode and path.exists():
        path.chmod(0o600)  # see tighten_mode above
    _check_mode(path, unavailable, what)
    try:
        # Owner-only; SQLite creates the -wal and -shm files with the main file's mode.
        path.touch(mode=0o600, exist_ok=True)
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
        )
    except (OSError, sqlite3.Error) as exc:
        raise unavailable(f"cannot open {what} {path}: {exc}") from exc
    with _closed_on_failure(conn, unavailable, what, path):
        _configure(
            conn,
            busy_timeout_ms,
            unavailable,
            what,
            path,
            secure_delete=secure_delete,
            synchronous=synchronous,
            foreign_keys=foreign_keys,
            cache_mib=cache_mib,
        )
    return conn


@contextmanager
def _closed_on_failure(
    conn: sqlite3.Connection, unavailable: ErrorFactory, what: str, path: Path
) -> Iterator[None]:
    """Close ``conn`` if the block fails; an SQLite error becomes ``unavailable``."""
    try:
        yield
    except sqlite3.Error as exc:
        conn.close()
        raise unavailable(f"cannot open {what} {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise


def open_migrated(
    path: Path,
    busy_timeout_ms: int,
    unavailable: ErrorFactory,
    what: str,
    schema: str,
    version: int | None,
    *,
    newer: ErrorFactory | None = None,
    before: Callable[[sqlite3.Connection], None] | None = None,
    after: Callable[[sqlite3.Connection], None] | None = None,
    secure_delete: bool = False,
    synchronous: Synchronous = "FULL",
    foreign_keys: bool = False,
    cache_mib: int | None = None,
    tighten_mode: bool = False,
) -> sqlite3.Connection:
    """:func:`connect_private`, then :func:`migrate_schema` in one write transaction; the
    connection is closed again if the migration fails. What every idgraph SQLite file does on
    open. ``newer`` (default ``unavailable``) is raised for a file of a newer idgraph."""
    conn = connect_private(
        path,
        busy_timeout_ms,
        unavailable,
        what,
        secure_delete=secure_delete,
        synchronous=synchronous,
        foreign_keys=foreign_keys,
        cache_mib=cache_mib,
        tighten_mode=tighten_mode,
    )
    with _closed_on_failure(conn, unavailable, what, path):
        migrate_schema(
            conn,
            schema,
            version,
            newer or unavailable,
            what,
            unavailable=unavailable,
            before=before,
            after=after,
        )
    return conn


def connect_read_only(
    path: Path, busy_timeout_ms: int, unavailable: ErrorFactory, what: str
) -> sqlite3.Connection:
    """Open an existing idgraph SQLite file read-only (``mode=ro``: never modified or created,
    e.g. the source of ``idgraph store copy``), with the same mode check and busy timeout."""
    if not path.is_file():
        raise unavailable(f"{what} {path} does not exist")
    _check_mode(path, unavailable, what)
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=busy_timeout_ms / 1000,
        )
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    except sqlite3.Error as exc:
        raise unavailable(f"cannot read {what} {path}: {exc}") from exc
    return conn


def _check_mode(path: Path, unavailable: ErrorFactory, what: str) -> None:
    try:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    except OSError as exc:
        raise unavailable(f"{what} {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise ConfigurationError(
            f"{what} {path} has mode {mode:o}; run `chmod 600 {path}` (it must not be readable "
            "or writable by other users)"
        )


GRAPH_CACHE_MIB = 64  # the graph store's page cache (SQLite's default is 2 MiB)
# The graph store's automatic checkpoint threshold, in WAL pages (SQLite's default is 1,000, about
# 4 MiB). A bulk transaction of 10,000 events writes tens of MiB of WAL; at the default every
# such commit is followed by a checkpoint that copies its pages into the database file and
# fsyncs it, so an index page changed by every batch is written twice per batch. At 16,384 pages
# (64 MiB) the pages of several batches are checkpointed together, each once. Durability is
# unchanged: a commit is durable in the WAL (synchronous=FULL), and a crash before a checkpoint
# is recovered from the WAL on open. Erasure does not rely on it either: it checkpoints and
# truncates the WAL itself (privacy/dsr/erasure.py). The WAL file can grow to about this size
# between checkpoints; the last connection to close checkpoints and removes it.
GRAPH_WAL_AUTOCHECKPOINT_PAGES = 16_384


# The graph store's read transactions run on a second connection that reads the file through a
# memory map of up to this many bytes (SQLite clamps it to its compile-time limit, 2 GiB less
# 64 KiB by default; past it, pages are read as before). A member scan of a million persons
# touches hundreds of MiB of index and table pages in random order (person ids are random), far
# more than the 64 MiB page cache: through read() every miss was a system call and a copy into
# the cache, about 400 MiB per audience scan, and a first scan after open paid for all of it
# again. Mapped, a page is read in place from the OS page cache. Writes keep the connection
# without a map (their reads stay in the page cache, so a bulk ingest's resident set does not
# grow by the mapped pages it touches: peak RSS is one of its goals). Nothing else changes: the
# map is read-only (SQLite writes through write() unless built with SQLITE_MMAP_READWRITE), the
# WAL is read as before. The one thing given up (SQLite's mmap page names it): a disk I/O error
# on a mapped page arrives as SIGBUS and stops the process, where read() would have returned an
# error for this request alone. Nothing acknowledged is lost by that (every write is committed to
# the WAL first, and the crash suite kills the service at random points), and a disk that fails
# reads would fail the next write too.
GRAPH_READ_MMAP_BYTES = 1 << 31


def max_bound_values() -> int:
    """The most values one statement may bind in this SQLite build (999 before 3.32, 32,766
    since, more in some builds): the widest bulk statements are sized from it."""
    probe = sqlite3.connect(":memory:")
    try:
        return probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    finally:
        probe.close()


# Bulk writes and lookups bind up to this many parameters per statement: the widest power of
# two this SQLite allows, at most 16,384 (SQLite 3.32+ allows 32,766; builds before 3.32 999).
# Why statements this wide: the sqlite3 module releases the GIL for every step and reset of a
# statement, and a thread that wants it back while another thread runs Python waits up to the
# switch interval each time. Bulk ingest's writer thread runs beside the reader thread (and the
# reader writes the vault key file's keys made ahead): with one statement per row (executemany)
# or per 500 digests, their SQL crawled whenever the other thread was busy, so the two never
# overlapped. A few wide statements per batch give the GIL back a few dozen times, and SQLite
# does the rows of each without it (the same B-tree work: the per-row CPU is the same or lower).
WIDE_PARAMS = 1 << (min(16_384, max_bound_values()).bit_length() - 1)


def insert_rows(
    conn: sqlite3.Connection, insert: str, rows: Sequence[tuple[Any, ...]], tail: str = ""
) -> None:
    """``conn.executemany(insert + " VALUES (?, ...) " + tail, rows)`` as a few multi-row
    statements (``INSERT ... VALUES (...), (...), ...``: SQLite applies the rows one by one, in
    order, as executemany does, an upsert ``tail`` included; ``total_changes`` counts the same).
    See :func:`run_with_rows`."""
    run_with_rows(conn, f"{insert} VALUES {ROWS} {tail}", rows)


# Where run_with_rows puts the rows' placeholders: "(?, ?), (?, ?), ...".
ROWS = "{rows}"


def run_with_rows(
    conn: sqlite3.Connection, statement: str, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Run ``statement`` once per chunk of ``rows``, its :data:`ROWS` (the text ``{rows}``)
    replaced by the chunk's placeholders (``(?, ?), (?, ?), ...``): a multi-row
    ``INSERT ... VALUES``, or an ``UPDATE ... FROM (VALUES {rows}) AS v`` that applies many
    rows' changes at once (``v.column1``, ``v.column2``, ... name a row's values). See
    :data:`WIDE_PARAMS` for why. Row counts per statement are powers of two (the last rows of a
    write in smaller ones), so the statement cache holds a handful of texts per statement
    instead of one per write."""
    if not rows:
        return
    width = len(rows[0])
    row_marks = "(" + ",".join("?" * width) + ")"
    widest = 1 << ((WIDE_PARAMS // width).bit_length() - 1)
    start, total = 0, len(rows)
    while start < total:
        count = widest
        while count > total - start:
            count >>= 1
        chunk = rows[start : start + count]
        conn.execute(
            statement.replace(ROWS, ",".join([row_marks] * count)),
            list(itertools.chain.from_iterable(chunk)),
        )
        start += count


def map_graph_reads(conn: sqlite3.Connection) -> None:
    """Read ``conn``'s graph file through a memory map (:data:`GRAPH_READ_MMAP_BYTES`): the
    store's read connection, and the benchmark floors that are compared with its reads."""
    conn.execute(f"PRAGMA mmap_size={GRAPH_READ_MMAP_BYTES}")


def configure_graph_connection(
    conn: sqlite3.Connection,
    synchronous: Synchronous,
    busy_timeout_ms: int,
    cache_mib: int,
    unavailable: ErrorFactory,
) -> None:
    """The pragmas of a graph-store connection on an already open ``conn`` (WAL, ``synchronous``,
    foreign keys, secure_delete, page cache): the benchmarks' floors use it so that a floor runs
    on the same page cache and durability as the store it is compared with."""
    _configure(
        conn,
        busy_timeout_ms,
        unavailable,
        "graph connection",
        Path("<bench>"),
        secure_delete=True,
        synchronous=synchronous,
        foreign_keys=True,
        cache_mib=cache_mib,
    )
    conn.execute(f"PRAGMA wal_autocheckpoint={GRAPH_WAL_AUTOCHECKPOINT_PAGES}")


_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def _when_unlocked(action: Callable[[], T], busy_timeout_ms: int) -> T:
    """Run ``action``, retrying while the file is locked, up to the busy timeout.

    Switching a brand-new file to WAL needs an exclusive lock, and SQLite returns "database is
    locked" at once, without calling the busy handler, when another process is switching the
    same file at that moment (waiting could deadlock the two). Retrying with a short back-off is
    what the busy handler would have done.
    """
    deadline = time.monotonic() + busy_timeout_ms / 1000
    delay = 0.001
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode not in _BUSY_CODES or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _configure(
    conn: sqlite3.Connection,
    busy_timeout_ms: int,
    unavailable: ErrorFactory,
    what: str,
    path: Path,
    *,
    secure_delete: bool,
    synchronous: Synchronous,
    foreign_keys: bool,
    cache_mib: int | None,
) -> None:
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    mode = _when_unlocked(
        lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone()[0], busy_timeout_ms
    )
    if str(mode).lower() != "wal":
        raise unavailable(f"{what} {path}: WAL mode is unavailable")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    if foreign_keys:
        conn.execute("PRAGMA foreign_keys=ON")
    if secure_delete:
        conn.execute("PRAGMA secure_delete=ON")
        if conn.execute("PRAGMA secure_delete").fetchone()[0] != 1:
            raise unavailable("this SQLite build cannot turn secure_delete on")
    if cache_mib is not None:
        conn.execute(f"PRAGMA cache_size=-{int(cache_mib) * 1024}")
