"""API keys: random bearer tokens, stored only as hashes, each with a set of scopes.

Token format: ``idg_<key id>.<secret>``. The key id is public (it appears in logs and in
``idgraph keys list-api-keys``); the secret is 32 random bytes and is shown once, at creation.

Why plain SHA-256 for the stored hash and not a password KDF: the secret is 256 bits from the OS
CSPRNG, so there is nothing to brute-force and a slow KDF would only slow every request. A
constant-time comparison keeps timing from leaking how much of a guess matched.

A key that was verified against the database is remembered for a short time (``verified_ttl_s``,
1 s by default): every request authenticates, and the locked read of the control database was
the biggest single share of a small request's work on the event loop. What that changes and
what it does not is said at :meth:`ApiKeyStore.authenticate`.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from identity.errors import IdGraphError, StoreUnavailableError
from storage.sqlite import open_migrated

TOKEN_PREFIX = "idg_"  # noqa: S105 - a public prefix, not a secret


class Scope(StrEnum):
    """What an API key may do. ``admin`` implies every other scope."""

    INGEST = "ingest"
    RESOLVE = "resolve"
    CONSENT = "consent"  # record consent signals (POST /v1/consent)
    READ = "read"  # purpose-bound reads: profiles, audiences, features (needs purposes too)
    DSR = "dsr"  # data-subject requests (erasure, access, ...)
    # Record that compelling legitimate grounds override an objection (Art. 21(1)): a decision
    # against the subject's wish, so kept apart from the everyday `dsr` scope.
    DSR_OVERRIDE = "dsr_override"
    METRICS = "metrics"  # read GET /metrics (for a Prometheus scraper: no data about persons)
    ADMIN = "admin"


class AuthenticationError(IdGraphError):
    """No key, an unknown key, or a revoked key (401)."""

    code = "unauthenticated"


class ForbiddenError(IdGraphError):
    """The key is valid but lacks the scope the endpoint needs (403)."""

    code = "forbidden"

    def __init__(self, needed: Scope) -> None:
        self.needed = needed
        super().__init__(f"this API key lacks the {needed.value!r} scope")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored API key (without its secret)."""

    key_id: str
    name: str
    scopes: frozenset[Scope]
    created_at: datetime
    revoked_at: datetime | None
    # Purposes the key may read for ("*" = every purpose). Reads need the ``read`` scope AND the
    # purpose: a marketing tool's key reads for marketing only, whatever else it is allowed.
    purposes: frozenset[str] = frozenset()
    # The downstream system the key belongs to; keys feature-export pseudonyms. Default: key id.
    consumer: str = ""

    @property
    def allows_admin(self) -> bool:
        """Whether this key has the ``admin`` scope (operators see every owner's objects)."""
        return self.allows(Scope.ADMIN)

    def allows(self, scope: Scope) -> bool:
        """Whether this key may act with ``scope``."""
        return self.revoked_at is None and (scope in self.scopes or Scope.ADMIN in self.scopes)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeys(Protocol):
    """API keys and their scopes, shared by every replica (adapter: :class:`ApiKeyStore`)."""

    def create(
        self,
        name: str,
        scopes: frozenset[Scope],
        purposes: frozenset[str] = frozenset(),
        consumer: str | None = None,
    ) -> tuple[ApiKey, str]:
        """Create a key; returns it and the token, which is not stored and cannot be shown again."""
        ...

    def authenticate(self, token: str) -> ApiKey:
        """The key a token belongs to; raises :class:`AuthenticationError` otherwise."""
        ...

    def list(self) -> list[ApiKey]:
        """Every key, newest first (secrets are never returned)."""
        ...

    def revoke(self, key_id: str) -> bool:
        """Revoke a key; returns ``False`` if there is no such (unrevoked) key."""
        ...

    def close(self) -> None:
        """Close the database."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (key_id TEXT PRIMARY KEY, name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL, scopes TEXT NOT NULL, created_at TEXT NOT NULL,
    revoked_at TEXT, purposes TEXT NOT NULL DEFAULT '[]', consumer TEXT);
"""


def _add_purpose_columns(conn: sqlite3.Connection) -> None:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(api_keys)")}
    if "purposes" not in columns:  # a control database from before purpose-bound reads
        conn.execute("ALTER TABLE api_keys ADD COLUMN purposes TEXT NOT NULL DEFAULT '[]'")
        conn.execute("ALTER TABLE api_keys ADD COLUMN consumer TEXT")


@functools.lru_cache(maxsize=256)
def _key_of(
    key_id: str,
    name: str,
    scopes: str,
    created_at: str,
    revoked_at: str | None,
    purposes: str,
    consumer: str | None,
) -> ApiKey:
    """The :class:`ApiKey` of a stored row's columns (the secret's digest is not one of them).

    Memoized on the column values: every request authenticates, and parsing the same two JSON
    lists and timestamps again each time was a measurable share of a small request's CPU. A
    row read again after a change (a new ``revoked_at``) is a different key here, so the change
    is never hidden by this memo; an ApiKey is frozen, so sharing one between requests is
    safe."""
    return ApiKey(
        key_id,
        name,
        frozenset(Scope(s) for s in json.loads(scopes)),
        datetime.fromisoformat(created_at),
        datetime.fromisoformat(revoked_at) if revoked_at else None,
        frozenset(str(p) for p in json.loads(purposes)),
        consumer or key_id,
    )


# Remembered keys at most: only keys that were verified are remembered (a token that failed
# never is), so this bounds memory against an operator's thousands of keys, not against guessing.
_VERIFIED_MAX = 4096


@dataclass(frozen=True, slots=True)
class _Verified:
    """A key verified against the database: the stored digest its tokens must match, the key,
    and the monotonic time until which it may be used without reading the database again."""

    digest: str
    key: ApiKey
    fresh_until: float


class ApiKeyStore:
    """API keys in the service's control database (an SQLite file beside the graph).

    ``verified_ttl_s``: how long a key verified against the database is used without reading it
    again (0: read it on every authentication). It bounds how long a key revoked by another
    process (``idgraph keys revoke-api-key``, another server worker) keeps working here; a key
    revoked through this object stops at once. ``clock`` is monotonic seconds (tests step it).
    """

    def __init__(
        self,
        path: Path,
        busy_timeout_ms: int = 10_000,
        *,
        verified_ttl_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if verified_ttl_s < 0:
            raise ValueError("verified_ttl_s must be >= 0")
        self._lock = threading.Lock()
        self._verified_ttl_s = verified_ttl_s
        self._clock = clock
        # key id -> _Verified. Read without the lock (one dict lookup, atomic under the GIL);
        # written and cleared only under it, in the same critical section as the database read
        # or write it reflects (see authenticate and revoke).
        self._verified: dict[str, _Verified] = {}
        # Owner-only (a looser mode is refused), WAL, synchronous=FULL, a busy timeout: the
        # same opener as every other service-state file (storage/sqlite.py).
        self._conn = open_migrated(
            path,
            busy_timeout_ms,
            StoreUnavailableError,
            "control database",
            _SCHEMA,
            None,
            after=_add_purpose_columns,
        )

    def create(
        self,
        name: str,
        scopes: frozenset[Scope],
        purposes: frozenset[str] = frozenset(),
        consumer: str | None = None,
    ) -> tuple[ApiKey, str]:
        """Create a key; returns it and the token, which is not stored and cannot be shown again.

        ``purposes`` are the purposes the key may read for (``"*"``: all); ``consumer`` names
        the downstream system (default: the key id).
        """
        if not scopes:
            raise ValueError("an API key needs at least one scope")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with self._lock:
            self._conn.execute(
                "INSERT INTO api_keys (key_id, name, secret_sha256, scopes, created_at, "
                "purposes, consumer) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key_id,
                    name,
                    _digest(secret),
                    json.dumps(sorted(scopes)),
                    now.isoformat(),
                    json.dumps(sorted(purposes)),
                    consumer,
                ),
            )
        key = ApiKey(key_id, name, scopes, now, None, purposes, consumer or key_id)
        return key, f"{TOKEN_PREFIX}{key_id}.{secret}"

    def authenticate(self, token: str) -> ApiKey:
        """The key a token belongs to; raises :class:`AuthenticationError` otherwise.

        A key whose token was verified against the database less than ``verified_ttl_s`` ago is
        answered from memory, without the locked read (the server calls this on its event loop
        for every request). What stays as it was:

        - the token's secret is still hashed and compared, in constant time, with the stored
          digest on every call: the memory holds the digest, never the token, and only a token
          that matches it is answered from memory;
        - a token that fails (malformed, unknown id, wrong secret, revoked key) is never
          remembered, and one whose id is remembered but whose secret does not match goes to the
          database as before: a guess gets the same answer, from the same work, as without the
          memory, and cannot make a later guess cheaper or a valid key fail;
        - a revocation through this object (:meth:`revoke`) takes effect at once. One by another
          process takes effect here within ``verified_ttl_s`` of this process's last read of the
          key (1 s by default), the price of not reading the database per request.
        """
        if not token.startswith(TOKEN_PREFIX) or "." not in token or len(token) > 200:
            raise AuthenticationError("malformed API key")
        key_id, _, secret = token[len(TOKEN_PREFIX) :].partition(".")
        digest = _digest(secret)
        verified = self._verified.get(key_id)
        if (
            verified is not None
            and hmac.compare_digest(verified.digest, digest)
            and self._clock() < verified.fresh_until
        ):
            return verified.key
        with self._lock:
            try:
                row = self._conn.execute(
                    "SELECT key_id, name, secret_sha256, scopes, created_at, revoked_at, purposes, "
                    "consumer FROM api_keys WHERE key_id = ?",
                    (key_id,),
                ).fetchone()
            except sqlite3.Error as exc:
                raise StoreUnavailableError("API key store unavailable") from exc
            # Compare against a dummy digest when the id is unknown so both paths take equal time.
            stored = row[2] if row else _digest("unknown-key")
            if not hmac.compare_digest(stored, digest) or row is None:
                raise AuthenticationError("unknown API key")
            key = self._row(row)
            if key.revoked_at is not None:
                self._verified.pop(key_id, None)
                raise AuthenticationError("this API key has been revoked")
            # Remembered under the lock that covered the read, so a revoke() of this process
            # (which forgets the key under the same lock, after its write) cannot be overtaken
            # by a read that began before it.
            if self._verified_ttl_s > 0:
                if len(self._verified) >= _VERIFIED_MAX and key_id not in self._verified:
                    self._verified.clear()
                self._verified[key_id] = _Verified(
                    stored, key, self._clock() + self._verified_ttl_s
                )
        return key

    @staticmethod
    def _row(row: tuple[str, str, str, str, str, str | None, str, str | None]) -> ApiKey:
        key_id, name, _, scopes, created_at, revoked_at, purposes, consumer = row
        return _key_of(key_id, name, scopes, created_at, revoked_at, purposes, consumer)

    def list(self) -> list[ApiKey]:
        """Every key, newest first (secrets are never returned)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT key_id, name, secret_sha256, scopes, created_at, revoked_at, purposes, "
                "consumer FROM api_keys ORDER BY created_at DESC"
            ).fetchall()
        return [self._row(row) for row in rows]

    def revoke(self, key_id: str) -> bool:
        """Revoke a key; returns ``False`` if there is no such (unrevoked) key."""
        with self._lock:
            cursor = self._conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (datetime.now(UTC).isoformat(), key_id),
            )
            # Forgotten after the write, under the lock an authentication's read and remember
            # hold: no request of this process is answered from memory once this returns.
            self._verified.pop(key_id, None)
        return cursor.rowcount == 1

    def close(self) -> None:
        """Close the database (and forget every verified key)."""
        with self._lock:
            self._verified.clear()
            self._conn.close()
