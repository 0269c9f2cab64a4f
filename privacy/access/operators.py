"""Operator accounts for the privacy-operations console: people, not API keys.

An operator signs in with a username, a password and (optionally) a TOTP code, and gets a
server-side session. Everything here is framework-free; the console (``console/``) turns HTTP
into calls of :class:`OperatorAccess` and back.

Why each choice:

* **argon2id** (``argon2-cffi``, its RFC 9106 "low memory" profile) for passwords: people choose
  guessable passwords, so the stored hash must be slow and memory-hard to brute-force offline.
  (API keys are 256 random bits and need no KDF; operator passwords do.)
* **TOTP** (RFC 6238 via ``pyotp``, 30 s steps, one step of clock drift) is optional per
  operator; the secret is shown once, at creation, as an ``otpauth://`` URI. A code is accepted
  once: the last used time step is stored, so a code seen over a shoulder cannot be replayed.
* **Sessions are server-side**: the browser holds a 256-bit random token; the store keeps only
  its SHA-256 (a stolen database yields no usable session) together with the operator, the
  CSRF token, the creation and last-seen times. Logout deletes the row, so a copied cookie dies
  with it. Sessions expire after ``idle`` without use and after ``absolute`` in any case.
* **A new token at every sign-in** (session fixation): a token presented before sign-in is never
  promoted; :meth:`OperatorAccess.sign_in` always mints a fresh one.
* **Rate limit and lockout per account**: at most ``max_attempts_per_window`` sign-in attempts
  per ``attempt_window`` (429-like :class:`SignInThrottledError`) and, after
  ``lockout_failures`` failures in a row, the account is locked for ``lockout`` (audited).
  Both live in the store (not process memory), so several replicas share them.
* Every sign-in, failure, lockout and sign-out lands in the hash-chained audit log with the
  operator (``op_<username>``) as actor. Usernames are restricted to a token shape that cannot
  be an email address or phone number, so the actor is never personal data of a data subject.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Final, Protocol

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from identity.errors import IdGraphError, InvalidFieldError, StoreUnavailableError
from privacy.access.policy_engine import ALL_PURPOSES
from privacy.auditing.log import AuditDraft, AuditLog
from storage.sqlite import open_migrated, transaction

USERNAME: Final = re.compile(r"[a-z][a-z0-9_.\-]{1,31}")
MIN_PASSWORD_LENGTH: Final = 12
MAX_PASSWORD_LENGTH: Final = 256
SCHEMA_VERSION: Final = 1
TOTP_ISSUER: Final = "idgraph console"


class Role(StrEnum):
    """What an operator does; each role maps onto scopes and purposes (:data:`ROLE_SCOPES`)."""

    PRIVACY_OFFICER = "privacy_officer"  # DSRs, person lookup, quarantine, audit
    MARKETING_OPS = "marketing_ops"  # audiences for its own purposes
    AUDITOR = "auditor"  # the audit log, read-only
    ADMIN = "admin"  # everything


class ConsoleScope(StrEnum):
    """The scopes the console checks. ``dsr``, ``resolve``, ``read`` and ``admin`` are the API
    key scopes of the same name (``admin`` implies every other); ``audit`` and ``quarantine``
    name what the CLI's ``idgraph audit`` and ``idgraph quarantine`` do, which the API has no
    endpoints for."""

    DSR = "dsr"
    RESOLVE = "resolve"
    READ = "read"
    AUDIT = "audit"
    QUARANTINE = "quarantine"
    ADMIN = "admin"


ROLE_SCOPES: Final[dict[Role, frozenset[ConsoleScope]]] = {
    Role.PRIVACY_OFFICER: frozenset(
        {ConsoleScope.DSR, ConsoleScope.RESOLVE, ConsoleScope.AUDIT, ConsoleScope.QUARANTINE}
    ),
    Role.MARKETING_OPS: frozenset({ConsoleScope.READ}),
    Role.AUDITOR: frozenset({ConsoleScope.AUDIT}),
    Role.ADMIN: frozenset({ConsoleScope.ADMIN}),
}


@dataclass(frozen=True, slots=True)
class Operator:
    """An operator account (without its password hash or TOTP secret)."""

    username: str
    role: Role
    purposes: frozenset[str]  # what the operator may read for ("*": every purpose)
    totp: bool
    created_at: datetime
    disabled: bool = False

    @property
    def actor(self) -> str:
        """The audit actor: ``op_<username>`` (never a key id, never personal data)."""
        return operator_actor(self.username)

    @property
    def scopes(self) -> frozenset[ConsoleScope]:
        """The scopes the role grants."""
        return ROLE_SCOPES[self.role]

    def allows(self, scope: ConsoleScope) -> bool:
        """Whether the role grants ``scope`` (``admin`` grants every scope)."""
        return ConsoleScope.ADMIN in self.scopes or scope in self.scopes

    def may_read_for(self, purpose: str) -> bool:
        """Whether the operator's purposes include ``purpose``."""
        return ALL_PURPOSES in self.purposes or purpose in self.purposes


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in operator's session (the token itself is never stored)."""

    operator: Operator
    csrf_token: str
    created_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True, slots=True)
class NewOperator:
    """What :meth:`OperatorAccess.create_operator` returns: the account and, if TOTP is on,
    the ``otpauth://`` URI to enrol an authenticator app (shown once)."""

    operator: Operator
    totp_uri: str | None


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A new session: the cookie token (shown to the browser only) and the session."""

    token: str
    session: Session


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """Session lifetimes, the sign-in rate limit and the lockout."""

    idle: timedelta = timedelta(minutes=30)
    absolute: timedelta = timedelta(hours=12)
    attempt_window: timedelta = timedelta(minutes=1)
    max_attempts_per_window: int = 10
    lockout_failures: int = 5
    lockout: timedelta = timedelta(minutes=15)


class SignInFailedError(IdGraphError):
    """Wrong username, password or TOTP code (one message for all: no account enumeration)."""

    code = "sign_in_failed"

    def __init__(self) -> None:
        super().__init__("wrong username, password or one-time code")


class AccountLockedError(IdGraphError):
    """Too many failed sign-ins: the account is locked until ``until``."""

    code = "account_locked"

    def __init__(self, until: datetime) -> None:
        self.until = until
        super().__init__(
            "too many failed sign-ins; the account is locked until "
            f"{until.strftime('%H:%M:%S')} UTC"
        )


class SignInThrottledError(IdGraphError):
    """Too many sign-in attempts in a short time; retry after ``retry_after`` seconds."""

    code = "sign_in_throttled"

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many sign-in attempts; try again in {retry_after} seconds")


class OperatorExistsError(IdGraphError):
    """An operator with that username exists."""

    code = "operator_exists"


class OperatorStoreUnavailableError(StoreUnavailableError):
    """The operator database cannot be opened or written."""


def operator_actor(username: str) -> str:
    """The audit actor for an operator: ``op_<username>``."""
    return f"op_{username}"


def _token_digest(token: str) -> str:
    # SHA-256, not a KDF: the token is 256 random bits (nothing to brute-force).
    return hashlib.sha256(token.encode()).hexdigest()


# -- the port ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredOperator:
    """An operator row with its secrets, for :class:`OperatorAccess` only."""

    operator: Operator
    password_hash: str
    totp_secret: str | None
    last_totp_step: int
    failures: int
    locked_until: datetime | None
    attempts_window_start: datetime | None
    attempts_in_window: int


class OperatorStore(Protocol):
    """Operator accounts, their sign-in counters and their sessions (shared by all replicas)."""

    def add(self, stored: StoredOperator) -> bool:
        """Insert a new operator; ``False`` if the username is taken."""
        ...

    def get(self, username: str) -> StoredOperator | None:
        """The operator with its secrets and counters, or ``None``."""
        ...

    def list_operators(self) -> list[Operator]:
        """Every operator, by username."""
        ...

    def update_counters(
        self,
        username: str,
        *,
        failures: int,
        locked_until: datetime | None,
        window_start: datetime | None,
        attempts: int,
        last_totp_step: int | None = None,
    ) -> None:
        """Store the sign-in counters (and the last used TOTP step)."""
        ...

    def set_password(self, username: str, password_hash: str) -> bool:
        """Replace the password hash; ``False`` if there is no such operator."""
        ...

    def set_disabled(self, username: str, disabled: bool) -> bool:
        """Disable or enable the account; ``False`` if there is no such operator."""
        ...

    def create_session(
        self, token_digest: str, username: str, csrf_token: str, now: datetime
    ) -> None:
        """Store a new session under the digest of its token."""
        ...

    def session(self, token_digest: str) -> tuple[str, str, datetime, datetime] | None:
        """``(username, csrf token, created at, last seen at)`` of a session, or ``None``."""
        ...

    def touch_session(self, token_digest: str, now: datetime) -> None:
        """Record use of the session."""
        ...

    def delete_session(self, token_digest: str) -> bool:
        """Delete one session; ``False`` if it did not exist."""
        ...

    def delete_sessions_of(self, username: str) -> int:
        """Delete every session of an operator; returns how many."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


# -- the SQLite adapter -----------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS operators (
    username        TEXT PRIMARY KEY,
    role            TEXT NOT NULL,
    purposes        TEXT NOT NULL,
    password_hash   TEXT NOT NULL,
    totp_secret     TEXT,
    last_totp_step  INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    disabled        INTEGER NOT NULL DEFAULT 0,
    failures        INTEGER NOT NULL DEFAULT 0,
    locked_until    TEXT,
    window_start    TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions (
    token_digest  TEXT PRIMARY KEY,
    username      TEXT NOT NULL REFERENCES operators (username),
    csrf_token    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_by_operator ON sessions (username);
"""

_OPERATOR_COLUMNS = (
    "username, role, purposes, password_hash, totp_secret, last_totp_step, created_at, "
    "disabled, failures, locked_until, window_start, attempts"
)


def _at(value: object) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def _row_operator(row: Sequence[object]) -> StoredOperator:
    operator = Operator(
        username=str(row[0]),
        role=Role(str(row[1])),
        purposes=frozenset(p for p in str(row[2]).split(",") if p),
        totp=row[4] is not None,
        created_at=datetime.fromisoformat(str(row[6])),
        disabled=bool(row[7]),
    )
    return StoredOperator(
        operator=operator,
        password_hash=str(row[3]),
        totp_secret=None if row[4] is None else str(row[4]),
        last_totp_step=int(str(row[5])),
        failures=int(str(row[8])),
        locked_until=_at(row[9]),
        attempts_window_start=_at(row[10]),
        attempts_in_window=int(str(row[11])),
    )


class SqliteOperatorStore:
    """Operators and sessions in ``operators.sqlite3`` (owner-only, WAL, ``synchronous=FULL``).

    ``secure_delete`` is on: a deleted session's token digest and CSRF token are zeroed, not
    left in free pages.
    """

    def __init__(self, path: Path, busy_timeout_ms: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._conn = open_migrated(
            path,
            busy_timeout_ms,
            OperatorStoreUnavailableError,
            "operator database",
            _SCHEMA,
            SCHEMA_VERSION,
            secure_delete=True,
        )

    @contextmanager
    def _tx(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                with transaction(
                    self._conn, begin, OperatorStoreUnavailableError, "operator database"
                ) as conn:
                    yield conn
            except sqlite3.Error as exc:
                raise OperatorStoreUnavailableError(f"operator database: {exc}") from exc

    def add(self, stored: StoredOperator) -> bool:
        """Insert a new operator; ``False`` if the username is taken."""
        op = stored.operator
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO operators (username, role, purposes, password_hash, "
                "totp_secret, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    op.username,
                    op.role.value,
                    ",".join(sorted(op.purposes)),
                    stored.password_hash,
                    stored.totp_secret,
                    op.created_at.isoformat(),
                ),
            )
            return cur.rowcount == 1

    def get(self, username: str) -> StoredOperator | None:
        """The operator with its secrets and counters, or ``None``."""
        with self._tx("BEGIN") as conn:
            row = conn.execute(
                f"SELECT {_OPERATOR_COLUMNS} FROM operators WHERE username = ?",  # noqa: S608 - constant column list
                (username,),
            ).fetchone()
        return None if row is None else _row_operator(row)

    def list_operators(self) -> list[Operator]:
        """Every operator, by username."""
        with self._tx("BEGIN") as conn:
            rows = conn.execute(
                f"SELECT {_OPERATOR_COLUMNS} FROM operators ORDER BY username"  # noqa: S608 - constant column list
            ).fetchall()
        return [_row_operator(r).operator for r in rows]

    def update_counters(
        self,
        username: str,
        *,
        failures: int,
        locked_until: datetime | None,
        window_start: datetime | None,
        attempts: int,
        last_totp_step: int | None = None,
    ) -> None:
        """Store the sign-in counters (and the last used TOTP step)."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE operators SET failures = ?, locked_until = ?, window_start = ?, "
                "attempts = ?, last_totp_step = COALESCE(?, last_totp_step) WHERE username = ?",
                (
                    failures,
                    locked_until.isoformat() if locked_until else None,
                    window_start.isoformat() if window_start else None,
                    attempts,
                    last_totp_step,
                    username,
                ),
            )

    def set_password(self, username: str, password_hash: str) -> bool:
        """Replace the password hash; ``False`` if there is no such operator."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE operators SET password_hash = ?, failures = 0, locked_until = NULL "
                "WHERE username = ?",
                (password_hash, username),
            )
            return cur.rowcount == 1

    def set_disabled(self, username: str, disabled: bool) -> bool:
        """Disable or enable the account; ``False`` if there is no such operator."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE operators SET disabled = ? WHERE username = ?", (int(disabled), username)
            )
            return cur.rowcount == 1

    def create_session(
        self, token_digest: str, username: str, csrf_token: str, now: datetime
    ) -> None:
        """Store a new session under the digest of its token."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO sessions (token_digest, username, csrf_token, created_at, "
                "last_seen_at) VALUES (?, ?, ?, ?, ?)",
                (token_digest, username, csrf_token, now.isoformat(), now.isoformat()),
            )

    def session(self, token_digest: str) -> tuple[str, str, datetime, datetime] | None:
        """``(username, csrf token, created at, last seen at)`` of a session, or ``None``."""
        with self._tx("BEGIN") as conn:
            row = conn.execute(
                "SELECT username, csrf_token, created_at, last_seen_at FROM sessions "
                "WHERE token_digest = ?",
                (token_digest,),
            ).fetchone()
        if row is None:
            return None
        return (
            str(row[0]),
            str(row[1]),
            datetime.fromisoformat(row[2]),
            datetime.fromisoformat(row[3]),
        )

    def touch_session(self, token_digest: str, now: datetime) -> None:
        """Record use of the session."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE sessions SET last_seen_at = ? WHERE token_digest = ?",
                (now.isoformat(), token_digest),
            )

    def delete_session(self, token_digest: str) -> bool:
        """Delete one session; ``False`` if it did not exist."""
        with self._tx() as conn:
            cur = conn.execute("DELETE FROM sessions WHERE token_digest = ?", (token_digest,))
            return cur.rowcount == 1

    def delete_sessions_of(self, username: str) -> int:
        """Delete every session of an operator; returns how many."""
        with self._tx() as conn:
            return conn.execute("DELETE FROM sessions WHERE username = ?", (username,)).rowcount

    def close(self) -> None:
        """Release the connection."""
        with self._lock:
            self._conn.close()


# -- the service ------------------------------------------------------------------------------


def _check_password(password: str) -> None:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidFieldError(
            "weak_password",
            f"a password has {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters",
            "#/password",
        )


class OperatorAccess:
    """Operator accounts, sign-in (password, TOTP, rate limit, lockout) and sessions."""

    def __init__(
        self,
        store: OperatorStore,
        audit: AuditLog,
        purposes: Sequence[str],
        policy: AccessPolicy | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._audit = audit
        self._purposes = frozenset(purposes)
        self.policy = policy or AccessPolicy()
        self._clock = clock
        # RFC 9106's second recommended option (argon2id, t=3, m=64 MiB, p=4): strong and
        # affordable on a 2-core machine (about 0.1 s per sign-in).
        self._hasher = PasswordHasher(time_cost=3, memory_cost=65_536, parallelism=4)
        # Compared against when the username is unknown, so both cases take the same time.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    def close(self) -> None:
        """Close the operator store."""
        self._store.close()

    # -- accounts -----------------------------------------------------------------------------

    def create_operator(
        self,
        username: str,
        password: str,
        role: Role,
        purposes: Sequence[str] = (),
        *,
        totp: bool = False,
        actor: str = "cli",
    ) -> NewOperator:
        """Create an account. ``purposes`` are what it may read for (``*``: all); a marketing
        operator needs at least one. Raises :class:`InvalidFieldError` or
        :class:`OperatorExistsError`."""
        if not USERNAME.fullmatch(username):
            raise InvalidFieldError(
                "invalid_username",
                "a username is 2-32 of a-z 0-9 _ . - starting with a letter",
                "#/username",
            )
        _check_password(password)
        unknown = sorted(set(purposes) - self._purposes - {ALL_PURPOSES})
        if unknown:
            raise InvalidFieldError(
                "unknown_purpose",
                f"unknown purpose(s) {', '.join(unknown)}; declared: "
                + ", ".join(sorted(self._purposes)),
                "#/purposes",
            )
        if role is Role.MARKETING_OPS and not purposes:
            raise InvalidFieldError(
                "required", "a marketing operator reads for at least one purpose", "#/purposes"
            )
        secret = pyotp.random_base32() if totp else None
        operator = Operator(username, role, frozenset(purposes), totp, self._clock())
        stored = StoredOperator(operator, self._hasher.hash(password), secret, 0, 0, None, None, 0)
        if not self._store.add(stored):
            raise OperatorExistsError(f"an operator named {username!r} exists")
        self._audit.append(
            [
                AuditDraft(
                    actor,
                    "console.operator.created",
                    reason="operator account created",
                    details={
                        "operator": username,
                        "role": role.value,
                        "purposes": sorted(purposes),
                        "totp": totp,
                    },
                )
            ]
        )
        uri = (
            pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=TOTP_ISSUER)
            if secret
            else None
        )
        return NewOperator(operator, uri)

    def list_operators(self) -> list[Operator]:
        """Every operator account."""
        return self._store.list_operators()

    def reset_password(self, username: str, password: str, actor: str = "cli") -> None:
        """Set a new password, unlock the account and end its sessions."""
        _check_password(password)
        if not self._store.set_password(username, self._hasher.hash(password)):
            raise InvalidFieldError("unknown_operator", "no such operator", "#/username")
        self._store.delete_sessions_of(username)
        self._record(actor, "console.operator.password_reset", {"operator": username})

    def set_disabled(self, username: str, disabled: bool, actor: str = "cli") -> None:
        """Disable (and sign out) or re-enable an account."""
        if not self._store.set_disabled(username, disabled):
            raise InvalidFieldError("unknown_operator", "no such operator", "#/username")
        if disabled:
            self._store.delete_sessions_of(username)
        action = "console.operator.disabled" if disabled else "console.operator.enabled"
        self._record(actor, action, {"operator": username})

    # -- sign-in ------------------------------------------------------------------------------

    def sign_in(self, username: str, password: str, totp_code: str = "") -> SignedIn:
        """Check the credentials and open a new session (always a fresh token).

        Raises :class:`SignInThrottledError` over the attempt rate, :class:`AccountLockedError`
        while locked, :class:`SignInFailedError` for any wrong credential (and for an unknown or
        disabled account, after the same amount of work).
        """
        now = self._clock()
        stored = self._store.get(username) if USERNAME.fullmatch(username) else None
        if stored is None:
            self._verify(self._dummy_hash, password)
            raise SignInFailedError
        policy = self.policy
        window, attempts = stored.attempts_window_start, stored.attempts_in_window
        if window is None or now - window >= policy.attempt_window:
            window, attempts = now, 0
        if attempts >= policy.max_attempts_per_window:
            retry = int((window + policy.attempt_window - now).total_seconds()) + 1
            raise SignInThrottledError(max(retry, 1))
        attempts += 1
        if stored.locked_until is not None and stored.locked_until > now:
            self._store.update_counters(
                username,
                failures=stored.failures,
                locked_until=stored.locked_until,
                window_start=window,
                attempts=attempts,
            )
            self._record(
                stored.operator.actor, "console.sign_in", {"operator": username}, "deny", "locked"
            )
            raise AccountLockedError(stored.locked_until)
        ok = self._verify(stored.password_hash, password) and not stored.operator.disabled
        step: int | None = None
        if ok and stored.totp_secret is not None:
            step = self._totp_step(stored.totp_secret, totp_code, stored.last_totp_step, now)
            ok = step is not None
        if not ok:
            failures = stored.failures + 1
            locked = now + policy.lockout if failures >= policy.lockout_failures else None
            self._store.update_counters(
                username,
                failures=0 if locked else failures,
                locked_until=locked,
                window_start=window,
                attempts=attempts,
            )
            self._record(
                stored.operator.actor,
                "console.sign_in",
                {"operator": username, "failures": failures},
                "deny",
                "wrong_credentials",
            )
            if locked is not None:
                self._record(
                    stored.operator.actor,
                    "console.locked_out",
                    {"operator": username, "minutes": int(policy.lockout.total_seconds() // 60)},
                    "deny",
                    "too_many_failures",
                )
                raise AccountLockedError(locked)
            raise SignInFailedError
        self._store.update_counters(
            username,
            failures=0,
            locked_until=None,
            window_start=window,
            attempts=attempts,
            last_totp_step=step,
        )
        if self._hasher.check_needs_rehash(stored.password_hash):
            self._store.set_password(username, self._hasher.hash(password))
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        self._store.create_session(_token_digest(token), username, csrf, now)
        self._record(stored.operator.actor, "console.sign_in", {"operator": username}, "allow")
        return SignedIn(token, Session(stored.operator, csrf, now, now))

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    @staticmethod
    def _totp_step(secret: str, code: str, last_step: int, now: datetime) -> int | None:
        """The time step ``code`` is valid for (now or one step either side), if not used yet."""
        totp = pyotp.TOTP(secret)
        code = code.strip().replace(" ", "")
        if not code.isdigit():
            return None
        current = int(now.timestamp()) // totp.interval
        for step in (current - 1, current, current + 1):
            if step <= last_step:
                continue  # each code works once (RFC 6238 §5.2)
            expected = totp.generate_otp(step)
            if hmac.compare_digest(expected, code):
                return step
        return None

    # -- sessions -----------------------------------------------------------------------------

    def session(self, token: str) -> Session | None:
        """The live session for a cookie token, or ``None`` (unknown, expired, disabled)."""
        if not token or len(token) > 128:
            return None
        digest = _token_digest(token)
        found = self._store.session(digest)
        if found is None:
            return None
        username, csrf, created, last_seen = found
        now = self._clock()
        if now - created >= self.policy.absolute or now - last_seen >= self.policy.idle:
            self._store.delete_session(digest)
            return None
        stored = self._store.get(username)
        if stored is None or stored.operator.disabled:
            self._store.delete_session(digest)
            return None
        self._store.touch_session(digest, now)
        return Session(stored.operator, csrf, created, now)

    def sign_out(self, token: str) -> bool:
        """End the session of ``token`` (the cookie is useless afterwards)."""
        digest = _token_digest(token)
        found = self._store.session(digest)
        if found is None:
            return False
        self._store.delete_session(digest)
        self._record(operator_actor(found[0]), "console.sign_out", {"operator": found[0]})
        return True

    def _record(
        self,
        actor: str,
        action: str,
        details: dict[str, str | int | bool | list[str]],
        decision: str | None = None,
        reason: str = "",
    ) -> None:
        self._audit.append(
            [
                AuditDraft(
                    actor,
                    action,
                    decision="allow" if decision == "allow" else "deny" if decision else None,
                    reason=reason,
                    details=details,
                )
            ]
        )


def csrf_matches(expected: str, presented: str) -> bool:
    """Constant-time comparison of a CSRF token (``False`` for an empty one)."""
    return bool(presented) and hmac.compare_digest(expected.encode(), presented.encode())


__all__ = [
    "ROLE_SCOPES",
    "AccessPolicy",
    "AccountLockedError",
    "ConsoleScope",
    "NewOperator",
    "Operator",
    "OperatorAccess",
    "OperatorExistsError",
    "OperatorStore",
    "OperatorStoreUnavailableError",
    "Role",
    "Session",
    "SignInFailedError",
    "SignInThrottledError",
    "SignedIn",
    "SqliteOperatorStore",
    "StoredOperator",
    "csrf_matches",
    "operator_actor",
]
