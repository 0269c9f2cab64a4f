"""Standard Webhooks signatures: verify inbound webhooks, sign outbound ones, refuse replays.

Scheme (Standard Webhooks 1.0, ``spec/standard-webhooks.md`` in standard-webhooks/standard-webhooks)
----------------------------------------------------------------------------------------------
* Three headers: ``webhook-id`` (the message id, stable across retries: the idempotency key),
  ``webhook-timestamp`` (integer Unix seconds of *this attempt*) and ``webhook-signature`` (a
  space-separated list of ``<version>,<base64 signature>``).
* The signed content is ``{webhook-id}.{webhook-timestamp}.{raw body}``: the metadata is signed
  with the body, so neither the id (idempotency) nor the timestamp (replay window) can be swapped.
* ``v1`` signatures are HMAC-SHA256 under a shared secret serialized as ``whsec_<base64>``. Other
  versions (``v1a`` is ed25519) are ignored, so a sender may add them without breaking us.
* Any one valid ``v1`` signature suffices: a sender rotating its secret signs with old and new
  for a while, and we may hold several secrets per source for the same reason.

Why we implement it instead of wrapping the ``standardwebhooks`` package (1.1.0): its
``Webhook.verify`` lets ``ValueError`` (a signature without a comma), ``binascii.Error`` (bad
base64) and ``UnicodeDecodeError`` (a non-UTF-8 body) escape instead of its own error, accepts
fractional timestamps, has neither an injectable clock nor a configurable tolerance, and decodes
secrets without validation. Every one of those would either be a 500 in the API or make the
tolerance edges untestable; the scheme itself is a few dozen lines on top of :mod:`hmac`.

Idempotency and replays: a valid signature only proves the sender made the message, and the
timestamp window only bounds *when* a captured request can be replayed. :class:`ReplayGuard`
remembers ``(source, webhook-id)`` so the same message is applied once; see :func:`verify_once`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from secrets import token_urlsafe
from typing import Final, Literal, Protocol, runtime_checkable

from identity.errors import ConfigurationError, IdGraphError, StoreUnavailableError
from storage.sqlite import open_migrated

HEADER_ID: Final = "webhook-id"
HEADER_TIMESTAMP: Final = "webhook-timestamp"
HEADER_SIGNATURE: Final = "webhook-signature"
SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the spec's format marker, not a secret
SIGNATURE_VERSION: Final = "v1"
DEFAULT_TOLERANCE_S: Final = 300  # the spec's ±5 minutes
# A header longer than this is not a webhook header but an attempt to make us do work.
MAX_HEADER_CHARS: Final = 8 * 1024
MAX_ID_CHARS: Final = 256
# The spec's bounds for a symmetric secret: at least 24 bytes (192 bits), at most 64 (512 bits).
MIN_SECRET_BYTES: Final = 24
MAX_SECRET_BYTES: Final = 64
_MAC_BYTES: Final = 32  # HMAC-SHA256 output; a v1 signature of any other length is malformed
# ASCII digits only: ``int()`` alone would also accept "+5", " 5", "1_000" and non-ASCII digits,
# all of which would make the header we verify differ from the number we compare. 19 digits is
# the int64 range; anything longer is garbage, not a far-future time.
_TIMESTAMP = re.compile(r"[0-9]{1,19}")
# Printable ASCII without space or '.': the spec asks that the id contain no '.', because the
# signed content is '.'-delimited and an id with dots could be re-split into (id, timestamp, body)
# differently from how it was signed, i.e. a new id (a way around the replay guard).
_WEBHOOK_ID = re.compile(rf"[\x21-\x2d\x2f-\x7e]{{1,{MAX_ID_CHARS}}}")

WebhookFailure = Literal[
    "missing_header",
    "malformed_id",
    "malformed_timestamp",
    "malformed_signature",
    "stale_timestamp",
    "future_timestamp",
    "no_valid_signature",
    "replayed",
]


class WebhookVerificationError(IdGraphError):
    """An inbound webhook is refused (the API answers 401). ``reason`` is machine-readable.

    Messages never repeat header values: a header is attacker-controlled text.
    """

    code = "webhook-verification-failed"

    def __init__(self, reason: WebhookFailure, message: str) -> None:
        self.reason: WebhookFailure = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


class ReplayGuardUnavailableError(StoreUnavailableError):
    """The replay-guard database cannot be opened or refused an operation."""

    code = "replay-guard-unavailable"


@dataclass(frozen=True, slots=True)
class VerifiedWebhook:
    """A webhook whose signature and timestamp checked out.

    ``secret_index`` is the position, in the verifier's secrets, of the secret that matched:
    once no delivery matches an old secret any more, that secret can be removed.
    """

    webhook_id: str
    timestamp: int
    body: bytes
    secret_index: int


# Secrets printed in public documentation: the Standard Webhooks specification's example (also
# used in this project's README). Anyone can sign with them, so production refuses them.
_PUBLISHED_SECRETS: Final = frozenset({"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})


def refuse_published_secret(secret: str, where: str) -> None:
    """Raise :class:`ConfigurationError` if ``secret`` is a published example secret.

    Compared by key bytes, so re-padding or re-encoding the example does not get it through.
    """
    key = parse_secret(secret)
    if any(hmac.compare_digest(key, parse_secret(p)) for p in _PUBLISHED_SECRETS):
        raise ConfigurationError(
            f"{where}: this is the Standard Webhooks documentation's example secret, which "
            "anyone can sign with; production refuses it. Generate one: "
            'python -c \'import base64,secrets;print("whsec_"+base64.b64encode('
            "secrets.token_bytes(32)).decode())'"
        )


def parse_secret(secret: str) -> bytes:
    """Decode a ``whsec_<base64>`` secret to its key bytes; :class:`ConfigurationError` if bad.

    The prefix is required: it is how the spec tells a symmetric secret apart from ``whsk_`` /
    ``whpk_`` asymmetric keys, and a value without it is more likely something else pasted into
    the wrong setting. Base64 is decoded strictly (the stdlib default silently drops invalid
    characters, which would turn a typo into a different, weaker key); missing ``=`` padding is
    tolerated because the reference libraries tolerate it.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ConfigurationError(f"webhook secret must start with {SECRET_PREFIX!r}")
    encoded = secret[len(SECRET_PREFIX) :]
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError("webhook secret is not valid base64 after 'whsec_'") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        # Shorter keys weaken HMAC below the spec's 192-bit floor; longer ones are a paste error.
        raise ConfigurationError(
            f"webhook secret must decode to {MIN_SECRET_BYTES}-{MAX_SECRET_BYTES} bytes, "
            f"got {len(key)}"
        )
    return key


def _mac(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    # The raw body bytes are signed, never a decoded or re-serialized form: JSON re-encoding
    # changes bytes, and decoding would fail on (or normalize) non-UTF-8 input.
    content = f"{msg_id}.{timestamp}.".encode("ascii") + body
    return hmac.new(key, content, hashlib.sha256).digest()


def _check_outbound_id(msg_id: str) -> None:
    if not _WEBHOOK_ID.fullmatch(msg_id):
        raise ValueError(
            f"webhook id must be 1-{MAX_ID_CHARS} printable ASCII characters without space or '.'"
        )


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value (``v1,<base64>``) for an outbound webhook.

    ``timestamp`` is the Unix time of this delivery attempt (a retry gets a new one, the id stays).
    """
    _check_outbound_id(msg_id)
    if timestamp < 0:
        raise ValueError("timestamp must be a non-negative Unix time in seconds")
    mac = _mac(parse_secret(secret), msg_id, str(timestamp), body)
    return f"{SIGNATURE_VERSION},{base64.b64encode(mac).decode('ascii')}"


def sign_headers(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """All three headers for an outbound webhook, signed with every secret in ``secrets``.

    Several secrets give zero-downtime rotation: the receiver accepts whichever it knows.
    """
    if not secrets:
        raise ConfigurationError("at least one webhook secret is required")
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: " ".join(sign(s, msg_id, timestamp, body) for s in secrets),
    }


def new_webhook_id() -> str:
    """A fresh message id for an outbound webhook (``msg_`` + 128 random bits, no '.')."""
    return "msg_" + token_urlsafe(16)


class WebhookVerifier:
    """Verifies Standard Webhooks signatures for one source, with one or more secrets.

    ``tolerance_s`` bounds how far the ``webhook-timestamp`` may be from ``clock()`` either way
    (inclusive). ``clock`` returns Unix seconds; injectable for tests. Every way a request can be
    wrong raises :class:`WebhookVerificationError`; nothing else escapes :meth:`verify`.
    """

    def __init__(
        self,
        secrets: Sequence[str],
        tolerance_s: int = DEFAULT_TOLERANCE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(secrets, str):
            raise ConfigurationError("secrets must be a sequence of secrets, not one string")
        if not secrets:
            raise ConfigurationError("at least one webhook secret is required")
        if not isinstance(tolerance_s, int) or tolerance_s <= 0:
            raise ConfigurationError("tolerance_s must be a positive number of seconds")
        self._keys = tuple(parse_secret(secret) for secret in secrets)
        self.tolerance_s = tolerance_s
        self._clock = clock

    def verify(self, headers: Mapping[str, str], body: bytes) -> VerifiedWebhook:
        """Check the headers and the signature over ``body`` (the raw request bytes).

        Header names are matched case-insensitively. Raises :class:`WebhookVerificationError`
        with reason ``missing_header``, ``malformed_id``, ``malformed_timestamp``,
        ``malformed_signature`` (no usable ``v1`` entry and at least one broken entry),
        ``stale_timestamp``, ``future_timestamp`` or ``no_valid_signature``.
        """
        lowered = {str(name).lower(): value for name, value in headers.items()}
        msg_id = _required(lowered, HEADER_ID)
        timestamp_text = _required(lowered, HEADER_TIMESTAMP)
        signature_text = _required(lowered, HEADER_SIGNATURE)

        if len(msg_id) > MAX_ID_CHARS or not _WEBHOOK_ID.fullmatch(msg_id):
            raise WebhookVerificationError(
                "malformed_id",
                f"{HEADER_ID} must be 1-{MAX_ID_CHARS} printable ASCII characters without '.'",
            )
        if len(timestamp_text) > MAX_HEADER_CHARS or not _TIMESTAMP.fullmatch(timestamp_text):
            raise WebhookVerificationError(
                "malformed_timestamp", f"{HEADER_TIMESTAMP} must be integer Unix seconds"
            )
        candidates = _v1_signatures(signature_text)

        # Timestamp before the MAC: cheap, and it reveals nothing about the secret.
        timestamp = int(timestamp_text)
        now = math.floor(self._clock())
        if timestamp < now - self.tolerance_s:
            raise WebhookVerificationError(
                "stale_timestamp", f"{HEADER_TIMESTAMP} is more than {self.tolerance_s}s old"
            )
        if timestamp > now + self.tolerance_s:
            raise WebhookVerificationError(
                "future_timestamp",
                f"{HEADER_TIMESTAMP} is more than {self.tolerance_s}s in the future",
            )

        for index, key in enumerate(self._keys):
            expected = _mac(key, msg_id, timestamp_text, body)
            for candidate in candidates:
                # Constant-time comparison: a byte-by-byte early exit would let an attacker
                # learn the expected MAC a byte at a time from response timings.
                if hmac.compare_digest(expected, candidate):
                    return VerifiedWebhook(msg_id, timestamp, bytes(body), index)
        raise WebhookVerificationError(
            "no_valid_signature", "no v1 signature matches any configured secret"
        )


def _required(headers: Mapping[str, object], name: str) -> str:
    value = headers.get(name)
    if not isinstance(value, str) or not value:
        raise WebhookVerificationError("missing_header", f"header {name} is missing or empty")
    return value


def _v1_signatures(header: str) -> list[bytes]:
    """The decoded ``v1`` MACs of a ``webhook-signature`` header (unknown versions skipped).

    A broken entry is skipped when another ``v1`` entry is usable (any valid signature suffices);
    if none is usable and some entry was broken, the header is ``malformed_signature``.
    """
    if len(header) > MAX_HEADER_CHARS:
        raise WebhookVerificationError(
            "malformed_signature", f"{HEADER_SIGNATURE} is longer than {MAX_HEADER_CHARS} chars"
        )
    found: list[bytes] = []
    broken = 0
    entries = [entry for entry in header.split(" ") if entry]
    for entry in entries:
        version, comma, encoded = entry.partition(",")
        if not comma or not version:
            broken += 1
            continue
        if version != SIGNATURE_VERSION:
            continue  # e.g. v1a (ed25519): not ours to check, and not a reason to refuse
        try:
            # Strict: standard alphabet, padding required; ASCII-only (non-ASCII -> ValueError).
            mac = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            broken += 1
            continue
        if len(mac) != _MAC_BYTES:
            broken += 1
            continue
        found.append(mac)
    if not found and (broken or not entries):
        raise WebhookVerificationError(
            "malformed_signature", f"{HEADER_SIGNATURE} holds no well-formed v1 signature"
        )
    return found


# -- idempotency / replay -----------------------------------------------------------------------


@runtime_checkable
class ReplayGuard(Protocol):
    """Remembers which ``(source, webhook-id)`` pairs were accepted, to apply each once."""

    def check_and_record(self, source: str, webhook_id: str) -> bool:
        """Record the pair; ``False`` (recording nothing) if it was already recorded."""
        ...

    def forget(self, source: str, webhook_id: str) -> None:
        """Drop the pair, so the sender's retry is accepted (processing failed after recording)."""
        ...

    def prune(self, now: float) -> int:
        """Drop pairs recorded before ``now`` minus the retention; returns how many."""
        ...


def verify_once(
    verifier: WebhookVerifier,
    guard: ReplayGuard,
    source: str,
    headers: Mapping[str, str],
    body: bytes,
) -> VerifiedWebhook:
    """Verify, then claim the webhook id; ``replayed`` if that id was already accepted.

    The signature is checked *before* the id is recorded: recording ids of unauthenticated
    requests would let anyone burn the id of a genuine upcoming delivery. If applying the webhook
    then fails, call ``guard.forget(source, webhook_id)`` so the sender's retry is not refused.
    """
    verified = verifier.verify(headers, body)
    if not guard.check_and_record(source, verified.webhook_id):
        raise WebhookVerificationError("replayed", f"{HEADER_ID} was already accepted")
    return verified


_REPLAY_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    source      TEXT NOT NULL,
    webhook_id  TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (source, webhook_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS webhook_deliveries_received ON webhook_deliveries (received_at);
"""


class SqliteReplayGuard:
    """:class:`ReplayGuard` on a SQLite file (mode 0600, WAL, ``synchronous=FULL``).

    The unique key ``(source, webhook_id)`` makes "check and record" one atomic statement, so two
    workers or processes receiving the same delivery at once cannot both accept it.

    ``retention_s`` must be at least twice the verifier's tolerance: a delivery recorded at our
    time ``t`` carries a timestamp within ``t ± tolerance``, and a replay of it is refused by the
    timestamp check alone from ``t + 2 * tolerance`` on. Before that, only this table refuses it.
    Keep entries longer (days) to also absorb a sender's legitimate retries of a message already
    applied; the spec's example retry schedule spans about three days.
    """

    def __init__(
        self,
        path: Path,
        retention_s: int = 2 * DEFAULT_TOLERANCE_S,
        clock: Callable[[], float] = time.time,
        busy_timeout_ms: int = 10_000,
    ) -> None:
        if retention_s <= 0:
            raise ConfigurationError("retention_s must be positive")
        self.path = path
        self.retention_s = retention_s
        self._clock = clock
        # Owner-only, WAL, synchronous=FULL: an accepted webhook id is on disk before the 2xx,
        # so a redelivery after a crash is still recognised.
        self._conn = open_migrated(
            path,
            busy_timeout_ms,
            ReplayGuardUnavailableError,
            "replay-guard file",
            _REPLAY_SCHEMA,
            None,
        )
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise ReplayGuardUnavailableError("the replay guard is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise ReplayGuardUnavailableError(f"replay-guard file error: {exc}") from exc

    def check_and_record(self, source: str, webhook_id: str) -> bool:
        """Record ``(source, webhook_id)``; ``False`` if it was already there."""
        _check_key(source, webhook_id)
        with self._connection() as conn:
            # One statement in autocommit mode is its own transaction: atomic and, with
            # synchronous=FULL, durable before we answer (a crash cannot forget an accepted id).
            cursor = conn.execute(
                "INSERT INTO webhook_deliveries (source, webhook_id, received_at) "
                "VALUES (?, ?, ?) ON CONFLICT (source, webhook_id) DO NOTHING",
                (source, webhook_id, math.floor(self._clock())),
            )
            return cursor.rowcount == 1

    def forget(self, source: str, webhook_id: str) -> None:
        """Drop ``(source, webhook_id)`` so a retry of a delivery we failed to apply is accepted."""
        _check_key(source, webhook_id)
        with self._connection() as conn:
            conn.execute(
                "DELETE FROM webhook_deliveries WHERE source = ? AND webhook_id = ?",
                (source, webhook_id),
            )

    def prune(self, now: float) -> int:
        """Delete entries received before ``now - retention_s``; returns how many."""
        with self._connection() as conn:
            cursor = conn.execute(
                "DELETE FROM webhook_deliveries WHERE received_at < ?",
                (math.floor(now) - self.retention_s,),
            )
            return cursor.rowcount

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()


def _check_key(source: str, webhook_id: str) -> None:
    for value in (source, webhook_id):
        if not 1 <= len(value) <= MAX_ID_CHARS or not value.isascii() or not value.isprintable():
            raise ValueError(
                f"source and webhook_id must be 1-{MAX_ID_CHARS} printable ASCII characters"
            )
