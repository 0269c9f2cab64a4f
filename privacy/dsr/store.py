"""The DSR store: requests, their sealed subjects, access exports and the webhook outbox.

One SQLite file (``dsr.sqlite3`` in the data dir), owner-only (0600), WAL, ``synchronous=FULL``
(an accepted request must survive a crash: the legal clock is running), one connection serialized
by a lock, ``BEGIN IMMEDIATE`` for writes: the same pattern as the vault key store and the audit
log (:mod:`storage.sqlite`).

What the file holds about a subject, and why that is enough:

* ``requests``: identifier types and keyed hashes (HMAC, see :mod:`identity.hashing`), never a raw
  value. The hashes are cleared when the request is terminal: a completed erasure must leave no
  trace of the subject but the suppression list, and no other request needs them afterwards.
* ``subjects``: the normalized identities, sealed by the vault under a data key of the request's
  own, only while the request is open (erasure needs the values to hash and suppress them; a
  queued request cannot keep them in memory). The row is deleted and the key shredded at the
  terminal state, so every copy of this file taken earlier is unreadable from then on.
* ``exports``: the access export, sealed the same way (its own key), destroyed on expiry.
* ``deliveries``: outbound webhooks; payloads hold the request id, status and counts only, except
  recipient notices (:mod:`privacy.dsr.recipients`), which are sealed by the vault under a key of
  their own and cleared (key shredded) once delivered or given up. An erasure's recipient notices
  are written *held* (named by the erasure id) before its graph transaction and released by the
  erasure's completion (:meth:`privacy.dsr.erasure.ErasureService.recover` included), so they
  are sent at least once, and never for an erasure that rolled back.

``PRAGMA secure_delete=ON`` zeroes deleted cells (cleared hashes, deleted sealed blobs), and
:meth:`SqliteDsrStore.checkpoint` folds the WAL back and truncates it after such deletions.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from identity.errors import StoreUnavailableError
from privacy.dsr.model import (
    Delivery,
    DeliveryState,
    DsrAction,
    DsrRequest,
    DsrStatus,
    DsrType,
    ExportInfo,
    NewRequest,
    SubjectHash,
)
from storage.sqlite import open_migrated, transaction

SCHEMA_VERSION: Final = 4  # 3: requests.rectified (issue 20); 4: deliveries.erasure_id
_AT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"
MAX_LIST_LIMIT: Final = 1_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS requests (
    request_id      TEXT PRIMARY KEY,
    type            TEXT NOT NULL,
    action          TEXT NOT NULL,
    purposes        TEXT NOT NULL,
    regulation      TEXT NOT NULL,
    status          TEXT NOT NULL,
    submitted_at    TEXT NOT NULL,
    received_at     TEXT NOT NULL,
    due_at          TEXT NOT NULL,
    extended        INTEGER NOT NULL DEFAULT 0,
    subject_types   TEXT NOT NULL,
    subject_hashes  TEXT NOT NULL,
    requester       TEXT NOT NULL,
    callback_urls   TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    fingerprint_key TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    claimed_at      TEXT,
    started_at      TEXT,
    finished_at     TEXT,
    result          TEXT NOT NULL DEFAULT '{}',
    error           TEXT,
    owner           TEXT NOT NULL DEFAULT '',
    rectified       TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS requests_status ON requests (status, received_at);

CREATE TABLE IF NOT EXISTS subjects (
    request_id TEXT PRIMARY KEY,
    sealed     BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS exports (
    request_id   TEXT PRIMARY KEY,
    sealed       BLOB,
    size_bytes   INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    destroyed_at TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS exports_expiry ON exports (destroyed_at, expires_at);

-- Whose data an export holds, as the audit log's keyed person references (never a person id):
-- an erasure of the person destroys the export with the rest of them.
CREATE TABLE IF NOT EXISTS export_persons (
    person_ref TEXT NOT NULL,
    request_id TEXT NOT NULL,
    PRIMARY KEY (person_ref, request_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS deliveries (
    delivery_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id      TEXT NOT NULL,
    destination     TEXT NOT NULL,
    url             TEXT NOT NULL,
    webhook_id      TEXT NOT NULL UNIQUE,
    event           TEXT NOT NULL,
    payload         BLOB NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    delivered_at    TEXT,
    -- Recipient notices of an erasure wait ("held") until that erasure completes.
    erasure_id      TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS deliveries_request ON deliveries (request_id, delivery_id);
CREATE INDEX IF NOT EXISTS deliveries_erasure ON deliveries (erasure_id)
    WHERE erasure_id IS NOT NULL;
"""

_REQUEST_COLUMNS: Final = (
    "request_id, type, action, purposes, regulation, status, submitted_at, received_at, due_at, "
    "extended, subject_types, subject_hashes, requester, callback_urls, attempts, started_at, "
    "finished_at, result, error, owner, rectified"
)
_DELIVERY_COLUMNS: Final = (
    "delivery_id, request_id, destination, webhook_id, event, state, attempts, next_attempt_at, "
    "last_status, last_error, created_at, delivered_at"
)


class DsrStoreUnavailableError(StoreUnavailableError):
    """The DSR file cannot be opened or refused an operation (503)."""

    code = "dsr-store-unavailable"


def fmt(at: datetime) -> str:
    """A UTC timestamp as stored (sorts as text)."""
    if at.tzinfo is None:
        raise ValueError("DSR timestamps must be timezone-aware")
    utc = at.astimezone(UTC)
    # strftime's %Y does not zero-pad years before 1000 on glibc: pad explicitly, so every
    # stored time reads back and sorts as text.
    return f"{utc.year:04d}" + utc.strftime(_AT[2:])


def parse(text: str | None) -> datetime | None:
    """The stored text back as an aware datetime (``None`` stays ``None``)."""
    return None if text is None else datetime.strptime(text, _AT).replace(tzinfo=UTC)


def _must(text: str) -> datetime:
    value = parse(text)
    assert value is not None  # noqa: S101 - NOT NULL columns
    return value


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """A request row plus what only the service needs: the fingerprint for replays."""

    request: DsrRequest
    fingerprint: str
    fingerprint_key: str


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """An outbox row due for an attempt, with what is needed to send it."""

    delivery_id: int
    request_id: str
    destination: str
    url: str
    webhook_id: str
    payload: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class HeldNotice:
    """A recipient notice held for an erasure: where it goes (``url`` empty when the recipient
    had no configured endpoint)."""

    request_id: str
    destination: str
    url: str


@dataclass(frozen=True, slots=True)
class Claimed:
    """A request claimed by a worker, with its sealed subjects (``None`` if already shredded)."""

    request: DsrRequest
    sealed_subjects: bytes | None


class DsrStore(Protocol):
    """Data-subject requests, their deliveries and exports (adapter: :class:`SqliteDsrStore`)."""

    def insert(
        self,
        new: NewRequest,
        *,
        received_at: datetime,
        due_at: datetime,
        subject_types: Sequence[str],
        subject_hashes: Sequence[SubjectHash],
        requester: str,
        owner: str,
        fingerprint: str,
        fingerprint_key: str,
        sealed_subjects: bytes,
    ) -> StoredRequest | None:
        """Store a new pending request; ``None`` (storing nothing) if the id exists already."""
        ...

    def get(self, request_id: str) -> StoredRequest | None:
        """The request with its export and deliveries, or ``None``."""
        ...

    def list_requests(
        self,
        status: DsrStatus | None,
        after_request_id: str = "",
        limit: int = 100,
        owner: str | None = None,
    ) -> list[DsrRequest]:
        """Requests (optionally of one status, of one ``owner``) by request id after
        ``after_request_id``."""
        ...

    def queue(self) -> tuple[int, datetime | None]:
        """How many requests are pending or in progress, and when the oldest was received."""
        ...

    def overdue(self, now: datetime) -> int:
        """How many pending or in-progress requests are due at or before ``now``."""
        ...

    def claim(self, now: datetime, stale_before: datetime) -> Claimed | None:
        """Take the oldest pending request (or one whose worker vanished before
        ``stale_before``), mark it in progress and count the attempt; ``None`` if none.
        """
        ...

    def requeue(self, request_id: str) -> None:
        """Put an in-progress request back to pending (a transient failure; retried later)."""
        ...

    def finish(
        self,
        request_id: str,
        status: DsrStatus,
        now: datetime,
        *,
        from_statuses: Sequence[DsrStatus],
        result: Mapping[str, int] | None = None,
        error: str | None = None,
        export: tuple[bytes, datetime] | None = None,
        export_persons: Sequence[str] = (),
        deliveries: Sequence[tuple[str, str, str, str, bytes]] = (),
    ) -> bool:
        """Move a request to the terminal ``status`` if it is in one of ``from_statuses``."""
        ...

    def extend(
        self,
        request_id: str,
        due_at: datetime,
        *,
        now: datetime,
        deliveries: Sequence[tuple[str, str, str, str, bytes]] = (),
    ) -> bool:
        """Set the extended due date once, while the request is open and not yet due, and
        enqueue ``deliveries`` (the subject's notice) with it; ``False`` otherwise."""
        ...

    def hold(
        self,
        request_id: str,
        erasure_id: str,
        now: datetime,
        deliveries: Sequence[tuple[str, str, str, str, bytes]],
    ) -> None:
        """Write an erasure's recipient notices *held*: not sent until :meth:`release`."""
        ...

    def held_notices(self, erasure_id: str) -> list[HeldNotice]:
        """The notices still held for ``erasure_id`` (none once released or dropped)."""
        ...

    def release(self, erasure_id: str, now: datetime) -> int:
        """Make the held notices of ``erasure_id`` due now; how many (0 when already done)."""
        ...

    def drop_held(self, erasure_id: str) -> list[str]:
        """Delete the held notices of ``erasure_id`` (its erasure rolled back); their webhook
        ids, whose sealing keys the caller shreds."""
        ...

    def held_erasures(self, created_before: datetime) -> list[str]:
        """Erasure ids with notices held since before ``created_before``."""
        ...

    def export_blob(self, request_id: str) -> tuple[bytes | None, ExportInfo] | None:
        """The sealed export and its metadata (blob ``None`` once destroyed), or ``None``."""
        ...

    def exports_of(self, person_refs: Sequence[str]) -> list[str]:
        """Request ids of the undestroyed exports that hold any of ``person_refs``."""
        ...

    def expired_exports(self, now: datetime, limit: int = 100) -> list[str]:
        """Request ids of exports past their expiry that still hold their blob."""
        ...

    def destroy_exports(self, request_ids: Sequence[str], now: datetime) -> int:
        """Drop the sealed blobs of ``request_ids`` (metadata stays, for the 410 answer)."""
        ...

    def due_deliveries(self, now: datetime, limit: int = 100) -> list[DueDelivery]:
        """Pending deliveries whose next attempt is due, oldest first."""
        ...

    def record_attempt(
        self,
        delivery_id: int,
        *,
        state: DeliveryState,
        status: int | None,
        error: str | None,
        next_attempt_at: datetime | None,
        now: datetime,
    ) -> None:
        """Record one delivery attempt and what comes next."""
        ...

    def clear_payload(self, delivery_id: int) -> None:
        """Drop a finished delivery's payload (a sealed recipient notice, its key shredded)."""
        ...

    def purge(self, requests_before: datetime, deliveries_before: datetime) -> tuple[int, int]:
        """Retention: delete requests that ended before ``requests_before`` (with their export
        metadata and delivery log), and finished deliveries created before
        ``deliveries_before``; returns ``(requests, deliveries)`` deleted."""
        ...

    def checkpoint(self) -> bool:
        """Fold the WAL into the file and truncate it (after deletions of sealed data)."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


class SqliteDsrStore:
    """Requests, sealed subjects, exports and the webhook outbox in one SQLite file."""

    def __init__(self, path: Path, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        # Owner-only, WAL, synchronous=FULL (an accepted request is on disk before the 202: its
        # legal deadline is running), secure_delete=ON (cleared subject hashes and deleted
        # sealed blobs are zeroed, not left in free pages).
        self._conn = open_migrated(
            path,
            busy_timeout_ms,
            DsrStoreUnavailableError,
            "DSR store",
            _SCHEMA,
            SCHEMA_VERSION,
            before=_migrate,
            secure_delete=True,
        )
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def _tx(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise DsrStoreUnavailableError("the DSR store is closed")
            try:
                with transaction(self._conn, begin, DsrStoreUnavailableError, "DSR store") as conn:
                    yield conn
            except sqlite3.Error as exc:
                raise DsrStoreUnavailableError(f"DSR store error: {exc}") from exc

    # -- requests --------------------------------------------------------------------------

    def insert(
        self,
        new: NewRequest,
        *,
        received_at: datetime,
        due_at: datetime,
        subject_types: Sequence[str],
        subject_hashes: Sequence[SubjectHash],
        requester: str,
        owner: str,
        fingerprint: str,
        fingerprint_key: str,
        sealed_subjects: bytes,
    ) -> StoredRequest | None:
        """Store a new pending request; ``None`` (storing nothing) if the id exists already."""
        with self._tx() as conn:
            cursor = conn.execute(
                "INSERT INTO requests (request_id, type, action, purposes, regulation, status, "
                "submitted_at, received_at, due_at, subject_types, subject_hashes, requester, "
                "callback_urls, fingerprint, fingerprint_key, owner, rectified) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (request_id) DO NOTHING",
                (
                    new.request_id,
                    new.type.value,
                    new.action.value,
                    json.dumps(list(new.purposes)),
                    new.regulation,
                    DsrStatus.PENDING.value,
                    fmt(new.submitted_at),
                    fmt(received_at),
                    fmt(due_at),
                    json.dumps(list(subject_types)),
                    json.dumps([[h.type, h.key_id, h.digest] for h in subject_hashes]),
                    requester,
                    json.dumps(list(new.callback_urls)),
                    fingerprint,
                    fingerprint_key,
                    owner,
                    json.dumps(list(new.rectified)),
                ),
            )
            if cursor.rowcount != 1:
                return None
            conn.execute(
                "INSERT INTO subjects (request_id, sealed) VALUES (?, ?)",
                (new.request_id, sealed_subjects),
            )
            return self._stored(conn, new.request_id)

    def get(self, request_id: str) -> StoredRequest | None:
        """The request with its export and deliveries, or ``None``."""
        with self._tx("BEGIN") as conn:
            return self._stored(conn, request_id)

    def list_requests(
        self,
        status: DsrStatus | None,
        after_request_id: str = "",
        limit: int = 100,
        owner: str | None = None,
    ) -> list[DsrRequest]:
        """Requests (optionally of one status, of one ``owner``) by request id after
        ``after_request_id``."""
        limit = max(1, min(limit, MAX_LIST_LIMIT))
        where = ["request_id > ?"]
        params: list[object] = [after_request_id]
        if status is not None:
            where.append("status = ?")
            params.append(status.value)
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        with self._tx("BEGIN") as conn:
            rows = conn.execute(
                f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE {' AND '.join(where)} "  # noqa: S608 - constant columns and conditions
                "ORDER BY request_id LIMIT ?",
                (*params, limit),
            ).fetchall()
            return [self._with_details(conn, _request(row)) for row in rows]

    def queue(self) -> tuple[int, datetime | None]:
        """How many requests are pending or in progress, and when the oldest was received."""
        with self._tx("BEGIN") as conn:
            count, oldest = conn.execute(
                "SELECT count(*), min(received_at) FROM requests WHERE status IN (?, ?)",
                (DsrStatus.PENDING.value, DsrStatus.IN_PROGRESS.value),
            ).fetchone()
        return int(count), parse(oldest)

    def overdue(self, now: datetime) -> int:
        """How many pending or in-progress requests are due at or before ``now``."""
        with self._tx("BEGIN") as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM requests WHERE status IN (?, ?) AND due_at <= ?",
                (DsrStatus.PENDING.value, DsrStatus.IN_PROGRESS.value, fmt(now)),
            ).fetchone()
        return int(count)

    def claim(self, now: datetime, stale_before: datetime) -> Claimed | None:
        """Take the oldest pending request (or one whose worker vanished before
        ``stale_before``), mark it in progress and count the attempt; ``None`` if none."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT request_id FROM requests WHERE status = ? "
                "OR (status = ? AND claimed_at < ?) ORDER BY received_at, request_id LIMIT 1",
                (DsrStatus.PENDING.value, DsrStatus.IN_PROGRESS.value, fmt(stale_before)),
            ).fetchone()
            if row is None:
                return None
            request_id = str(row[0])
            conn.execute(
                "UPDATE requests SET status = ?, claimed_at = ?, attempts = attempts + 1, "
                "started_at = coalesce(started_at, ?) WHERE request_id = ?",
                (DsrStatus.IN_PROGRESS.value, fmt(now), fmt(now), request_id),
            )
            sealed = conn.execute(
                "SELECT sealed FROM subjects WHERE request_id = ?", (request_id,)
            ).fetchone()
            stored = self._stored(conn, request_id)
            assert stored is not None  # noqa: S101 - selected above in the same transaction
            return Claimed(stored.request, None if sealed is None else bytes(sealed[0]))

    def requeue(self, request_id: str) -> None:
        """Put an in-progress request back to pending (a transient failure; retried later)."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE requests SET status = ?, claimed_at = NULL "
                "WHERE request_id = ? AND status = ?",
                (DsrStatus.PENDING.value, request_id, DsrStatus.IN_PROGRESS.value),
            )

    def finish(
        self,
        request_id: str,
        status: DsrStatus,
        now: datetime,
        *,
        from_statuses: Sequence[DsrStatus],
        result: Mapping[str, int] | None = None,
        error: str | None = None,
        export: tuple[bytes, datetime] | None = None,
        export_persons: Sequence[str] = (),
        deliveries: Sequence[tuple[str, str, str, str, bytes]] = (),
    ) -> bool:
        """Move a request to the terminal ``status`` if it is in one of ``from_statuses``.

        In the same transaction: clear the subject hashes, delete the sealed subjects, store the
        export (``(sealed, expires_at)``) and enqueue the webhooks (``(destination, url,
        webhook_id, event, payload)``). ``False`` (changing nothing) if the state did not allow it.
        """
        if not status.terminal:
            raise ValueError("finish needs a terminal status")
        marks = ",".join("?" * len(from_statuses))
        with self._tx() as conn:
            cursor = conn.execute(
                "UPDATE requests SET status = ?, finished_at = ?, claimed_at = NULL, "  # noqa: S608 - placeholders only
                f"subject_hashes = '[]', result = ?, error = ? "
                f"WHERE request_id = ? AND status IN ({marks})",
                (
                    status.value,
                    fmt(now),
                    json.dumps(dict(result or {}), sort_keys=True),
                    error,
                    request_id,
                    *(s.value for s in from_statuses),
                ),
            )
            if cursor.rowcount != 1:
                return False
            conn.execute("DELETE FROM subjects WHERE request_id = ?", (request_id,))
            if export is not None:
                sealed, expires_at = export
                conn.execute(
                    "INSERT INTO exports (request_id, sealed, size_bytes, created_at, expires_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (request_id) DO UPDATE SET "
                    "sealed = excluded.sealed, size_bytes = excluded.size_bytes, "
                    "created_at = excluded.created_at, expires_at = excluded.expires_at, "
                    "destroyed_at = NULL",
                    (request_id, sealed, len(sealed), fmt(now), fmt(expires_at)),
                )
                conn.executemany(
                    "INSERT OR IGNORE INTO export_persons (person_ref, request_id) VALUES (?, ?)",
                    [(ref, request_id) for ref in export_persons],
                )
            self._enqueue(conn, request_id, now, deliveries)
            return True

    @staticmethod
    def _enqueue(
        conn: sqlite3.Connection,
        request_id: str,
        now: datetime,
        deliveries: Sequence[tuple[str, str, str, str, bytes]],
        erasure_id: str | None = None,
    ) -> None:
        state = DeliveryState.PENDING if erasure_id is None else DeliveryState.HELD
        conn.executemany(
            "INSERT INTO deliveries (request_id, destination, url, webhook_id, event, "
            "payload, state, next_attempt_at, created_at, erasure_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    request_id,
                    destination,
                    url,
                    webhook_id,
                    event,
                    payload,
                    state.value,
                    fmt(now) if erasure_id is None else None,
                    fmt(now),
                    erasure_id,
                )
                for destination, url, webhook_id, event, payload in deliveries
            ],
        )

    def hold(
        self,
        request_id: str,
        erasure_id: str,
        now: datetime,
        deliveries: Sequence[tuple[str, str, str, str, bytes]],
    ) -> None:
        """Write an erasure's recipient notices *held*: not sent until :meth:`release`."""
        with self._tx() as conn:
            self._enqueue(conn, request_id, now, deliveries, erasure_id)

    def held_notices(self, erasure_id: str) -> list[HeldNotice]:
        """The notices still held for ``erasure_id`` (none once released or dropped)."""
        with self._tx("BEGIN") as conn:
            rows = conn.execute(
                "SELECT request_id, destination, url FROM deliveries "
                "WHERE erasure_id = ? AND state = ? ORDER BY delivery_id",
                (erasure_id, DeliveryState.HELD.value),
            ).fetchall()
        return [HeldNotice(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def release(self, erasure_id: str, now: datetime) -> int:
        """Make the held notices of ``erasure_id`` due now; how many (0 when already done)."""
        with self._tx() as conn:
            return conn.execute(
                "UPDATE deliveries SET state = ?, next_attempt_at = ? "
                "WHERE erasure_id = ? AND state = ?",
                (DeliveryState.PENDING.value, fmt(now), erasure_id, DeliveryState.HELD.value),
            ).rowcount

    def drop_held(self, erasure_id: str) -> list[str]:
        """Delete the held notices of ``erasure_id`` (its erasure rolled back); their webhook
        ids, whose sealing keys the caller shreds."""
        with self._tx() as conn:
            rows = conn.execute(
                "DELETE FROM deliveries WHERE erasure_id = ? AND state = ? RETURNING webhook_id",
                (erasure_id, DeliveryState.HELD.value),
            ).fetchall()
        return sorted(str(r[0]) for r in rows)

    def held_erasures(self, created_before: datetime) -> list[str]:
        """Erasure ids with notices held since before ``created_before``."""
        with self._tx("BEGIN") as conn:
            rows = conn.execute(
                "SELECT DISTINCT erasure_id FROM deliveries "
                "WHERE erasure_id IS NOT NULL AND state = ? AND created_at < ?",
                (DeliveryState.HELD.value, fmt(created_before)),
            ).fetchall()
        return sorted(str(r[0]) for r in rows)

    def extend(
        self,
        request_id: str,
        due_at: datetime,
        *,
        now: datetime,
        deliveries: Sequence[tuple[str, str, str, str, bytes]] = (),
    ) -> bool:
        """Set the extended due date once, while the request is open and not yet due, and
        enqueue ``deliveries`` (the subject's notice) with it; ``False`` otherwise."""
        with self._tx() as conn:
            cursor = conn.execute(
                "UPDATE requests SET due_at = ?, extended = 1 "
                "WHERE request_id = ? AND extended = 0 AND status IN (?, ?) AND due_at > ?",
                (
                    fmt(due_at),
                    request_id,
                    DsrStatus.PENDING.value,
                    DsrStatus.IN_PROGRESS.value,
                    fmt(now),
                ),
            )
            if cursor.rowcount != 1:
                return False
            self._enqueue(conn, request_id, now, deliveries)
            return True

    # -- exports ---------------------------------------------------------------------------

    def export_blob(self, request_id: str) -> tuple[bytes | None, ExportInfo] | None:
        """The sealed export and its metadata (blob ``None`` once destroyed), or ``None``."""
        with self._tx("BEGIN") as conn:
            row = conn.execute(
                "SELECT sealed, size_bytes, created_at, expires_at, destroyed_at FROM exports "
                "WHERE request_id = ?",
                (request_id,),
            ).fetchone()
        if row is None:
            return None
        blob = None if row[0] is None else bytes(row[0])
        return blob, _export_info(row[1:])

    def exports_of(self, person_refs: Sequence[str]) -> list[str]:
        """Request ids of the undestroyed exports that hold any of ``person_refs``."""
        if not person_refs:
            return []
        marks = ",".join("?" * len(person_refs))
        with self._tx("BEGIN") as conn:
            rows = conn.execute(
                "SELECT DISTINCT e.request_id FROM export_persons p JOIN exports e "  # noqa: S608 - placeholders only
                f"ON e.request_id = p.request_id WHERE p.person_ref IN ({marks}) "
                "AND e.destroyed_at IS NULL ORDER BY e.request_id",
                tuple(person_refs),
            ).fetchall()
        return [str(row[0]) for row in rows]

    def expired_exports(self, now: datetime, limit: int = 100) -> list[str]:
        """Request ids of exports past their expiry that still hold their blob."""
        with self._tx("BEGIN") as conn:
            rows = conn.execute(
                "SELECT request_id FROM exports WHERE destroyed_at IS NULL AND expires_at <= ? "
                "ORDER BY expires_at LIMIT ?",
                (fmt(now), limit),
            ).fetchall()
        return [str(row[0]) for row in rows]

    def destroy_exports(self, request_ids: Sequence[str], now: datetime) -> int:
        """Drop the sealed blobs of ``request_ids`` (metadata stays, for the 410 answer)."""
        if not request_ids:
            return 0
        destroyed = 0
        with self._tx() as conn:
            for request_id in request_ids:
                destroyed += conn.execute(
                    "UPDATE exports SET sealed = NULL, destroyed_at = ? "
                    "WHERE request_id = ? AND destroyed_at IS NULL",
                    (fmt(now), request_id),
                ).rowcount
                conn.execute("DELETE FROM export_persons WHERE request_id = ?", (request_id,))
        return destroyed

    # -- webhook outbox --------------------------------------------------------------------

    def due_deliveries(self, now: datetime, limit: int = 100) -> list[DueDelivery]:
        """Pending deliveries whose next attempt is due, oldest first."""
        with self._tx("BEGIN") as conn:
            rows = conn.execute(
                "SELECT delivery_id, request_id, destination, url, webhook_id, payload, attempts "
                "FROM deliveries WHERE state = ? AND next_attempt_at <= ? "
                "ORDER BY next_attempt_at, delivery_id LIMIT ?",
                (DeliveryState.PENDING.value, fmt(now), limit),
            ).fetchall()
        return [
            DueDelivery(
                int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), bytes(r[5]), int(r[6])
            )
            for r in rows
        ]

    def record_attempt(
        self,
        delivery_id: int,
        *,
        state: DeliveryState,
        status: int | None,
        error: str | None,
        next_attempt_at: datetime | None,
        now: datetime,
    ) -> None:
        """Record one delivery attempt and what comes next."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, state = ?, last_status = ?, "
                "last_error = ?, next_attempt_at = ?, delivered_at = ? WHERE delivery_id = ?",
                (
                    state.value,
                    status,
                    error,
                    None if next_attempt_at is None else fmt(next_attempt_at),
                    fmt(now) if state is DeliveryState.DELIVERED else None,
                    delivery_id,
                ),
            )

    def clear_payload(self, delivery_id: int) -> None:
        """Drop a finished delivery's payload (a sealed recipient notice, its key shredded)."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE deliveries SET payload = X'' WHERE delivery_id = ?", (delivery_id,)
            )

    def purge(self, requests_before: datetime, deliveries_before: datetime) -> tuple[int, int]:
        """Retention: old ended requests with everything hanging off them, and finished
        deliveries (never a pending or held one: it still has to be sent)."""
        terminal = [s.value for s in DsrStatus if s.terminal]
        with self._tx() as conn:
            old = [
                str(r[0])
                for r in conn.execute(
                    "SELECT request_id FROM requests WHERE status IN (?, ?, ?) AND finished_at < ?",
                    (*terminal, fmt(requests_before)),
                )
            ]
            deliveries = 0
            for rid in old:
                for table in ("subjects", "exports", "export_persons", "deliveries"):
                    deleted = conn.execute(
                        f"DELETE FROM {table} WHERE request_id = ?",  # noqa: S608 - fixed names
                        (rid,),
                    ).rowcount
                    deliveries += deleted if table == "deliveries" else 0
                conn.execute("DELETE FROM requests WHERE request_id = ?", (rid,))
            deliveries += conn.execute(
                "DELETE FROM deliveries WHERE state NOT IN (?, ?) AND created_at < ?",
                (DeliveryState.PENDING.value, DeliveryState.HELD.value, fmt(deliveries_before)),
            ).rowcount
        return len(old), deliveries

    # -- housekeeping ----------------------------------------------------------------------

    def checkpoint(self) -> bool:
        """Fold the WAL into the file and truncate it (after deletions of sealed data)."""
        with self._lock:
            if self._closed:
                raise DsrStoreUnavailableError("the DSR store is closed")
            try:
                busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error as exc:
                raise DsrStoreUnavailableError(f"DSR store checkpoint failed: {exc}") from exc
        return int(busy) == 0

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    # -- rows ------------------------------------------------------------------------------

    def _stored(self, conn: sqlite3.Connection, request_id: str) -> StoredRequest | None:
        row = conn.execute(
            f"SELECT {_REQUEST_COLUMNS}, fingerprint, fingerprint_key FROM requests "  # noqa: S608 - constant columns
            "WHERE request_id = ?",
            (request_id,),
        ).fetchone()
        if row is None:
            return None
        request = self._with_details(conn, _request(row[:-2]))
        return StoredRequest(request, str(row[-2]), str(row[-1]))

    @staticmethod
    def _with_details(conn: sqlite3.Connection, request: DsrRequest) -> DsrRequest:
        export = conn.execute(
            "SELECT size_bytes, created_at, expires_at, destroyed_at FROM exports "
            "WHERE request_id = ?",
            (request.request_id,),
        ).fetchone()
        deliveries = conn.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE request_id = ? "  # noqa: S608 - constant columns
            "ORDER BY delivery_id",
            (request.request_id,),
        ).fetchall()
        return replace(
            request,
            export=None if export is None else _export_info(export),
            deliveries=tuple(_delivery(row) for row in deliveries),
        )


def _export_info(row: Sequence[Any]) -> ExportInfo:
    return ExportInfo(
        created_at=_must(str(row[1])),
        expires_at=_must(str(row[2])),
        destroyed_at=parse(row[3]),
        size_bytes=int(row[0]),
    )


def _request(row: Sequence[Any]) -> DsrRequest:
    return DsrRequest(
        request_id=str(row[0]),
        type=DsrType(row[1]),
        action=DsrAction(row[2]),
        purposes=tuple(json.loads(row[3])),
        regulation=str(row[4]),
        status=DsrStatus(row[5]),
        submitted_at=_must(row[6]),
        received_at=_must(row[7]),
        due_at=_must(row[8]),
        extended=bool(row[9]),
        subject_types=tuple(json.loads(row[10])),
        subject_hashes=tuple(SubjectHash(*item) for item in json.loads(row[11])),
        requester=str(row[12]),
        callback_urls=tuple(json.loads(row[13])),
        attempts=int(row[14]),
        started_at=parse(row[15]),
        finished_at=parse(row[16]),
        result={str(k): int(v) for k, v in json.loads(row[17]).items()},
        error=None if row[18] is None else str(row[18]),
        owner=str(row[19]),
        rectified=tuple(json.loads(row[20])),
    )


def _delivery(row: Sequence[Any]) -> Delivery:
    return Delivery(
        delivery_id=int(row[0]),
        request_id=str(row[1]),
        destination=str(row[2]),
        webhook_id=str(row[3]),
        event=str(row[4]),
        state=DeliveryState(row[5]),
        attempts=int(row[6]),
        next_attempt_at=parse(row[7]),
        last_status=None if row[8] is None else int(row[8]),
        last_error=None if row[9] is None else str(row[9]),
        created_at=_must(row[10]),
        delivered_at=parse(row[11]),
    )


def _migrate(conn: sqlite3.Connection) -> None:
    """Schema 1 → 2: requests get an owner. Old requests are owned by the consumer a key had by
    default (its id, taken from the ``key_<id>`` requester); others (CLI) by operators only.
    2 → 3: requests.rectified; 3 → 4: deliveries.erasure_id (held recipient notices)."""
    delivery_columns = {row[1] for row in conn.execute("PRAGMA table_info(deliveries)")}
    if delivery_columns and "erasure_id" not in delivery_columns:
        conn.execute("ALTER TABLE deliveries ADD COLUMN erasure_id TEXT")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
    if columns and "rectified" not in columns:  # schema 2 → 3 (issue 20)
        conn.execute("ALTER TABLE requests ADD COLUMN rectified TEXT NOT NULL DEFAULT '[]'")
    if columns and "owner" not in columns:
        conn.execute("ALTER TABLE requests ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
        conn.execute(
            "UPDATE requests SET owner = substr(requester, 5) WHERE requester LIKE 'key^_%' "
            "ESCAPE '^'"
        )
