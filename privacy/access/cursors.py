"""Paging cursors that reveal nothing and cannot be forged or handed to another caller.

A page of an audience or a feature table ends where the scan stopped, at a person id. Handing
that id back in the clear (even base64-encoded) undoes pseudonymity: a feature consumer paging
with ``limit=1`` learns the person id behind each pseudonym, a forged cursor selects a chosen
person, and two consumers can join their "unlinkable" tables on it. So a cursor is sealed:

``cursor = base64url(0x02 | nonce (12) | AES-256-GCM(K_cursor, nonce, plaintext, aad))``

* ``plaintext = expiry (8 bytes, unix seconds, big endian) | position``, the position padded with
  NULs to a multiple of 32 bytes so the cursor's length does not hint at the id's length.
* ``aad = "idgraph-cursor/1" NUL`` then the JSON of the :class:`CursorScope`: the endpoint, the
  API key id, the consumer, the purpose and the subject (an audience id). A cursor issued to one
  key, for one endpoint, purpose or audience, fails authentication anywhere else (400).
* ``K_cursor = HKDF-SHA256(primary hash key, info="idgraph-cursor/1")``
  (:meth:`identity.hashing.Keyring.derive_key`): its own subkey, so a cursor's key is never a
  key used for anything else. Rotating the hash key invalidates open cursors; a caller starts
  the scan again (the same as after expiry).
* AES-GCM with random 96-bit nonces: a key seals far fewer than the 2**32 cursors at which random
  nonces risk a collision before the hash key rotates. The expiry bounds how long a cursor can be
  replayed by the key it was issued to.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from identity.errors import InvalidFieldError
from identity.hashing import Keyring

CURSOR_INFO = b"idgraph-cursor/1"
_AAD_PREFIX = CURSOR_INFO + b"\x00"
_VERSION = b"\x02"
_NONCE_BYTES = 12
_TAG_BYTES = 16
_EXPIRY_BYTES = 8
_PAD = 32
MAX_POSITION_BYTES = 256
DEFAULT_CURSOR_TTL = timedelta(hours=24)


class InvalidCursorError(InvalidFieldError):
    """A cursor this service did not issue to this caller for this read, or one that expired
    (the API answers 400). One message for every cause: a forger learns nothing from it."""

    code = "invalid-cursor"

    def __init__(self, detail: str = "not a cursor from a previous page of this read") -> None:
        super().__init__("invalid_cursor", f"{detail}; omit it to start", "#/query/cursor")


@dataclass(frozen=True, slots=True)
class CursorScope:
    """What a cursor is bound to: who asked, on which endpoint, for which purpose and subject."""

    endpoint: str
    key_id: str
    consumer: str
    purpose: str
    subject: str = ""

    def aad(self) -> bytes:
        """The associated data: the scope as canonical JSON after a domain prefix."""
        return _AAD_PREFIX + json.dumps(asdict(self), sort_keys=True).encode()


class CursorCodec:
    """Seals and opens paging positions (see the module docstring)."""

    def __init__(
        self,
        keyring: Keyring,
        ttl: timedelta = DEFAULT_CURSOR_TTL,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.key_id, key = keyring.derive_key(CURSOR_INFO)
        self._aead = AESGCM(key)
        self._ttl = ttl
        self._clock = clock

    def seal(self, scope: CursorScope, position: str) -> str:
        """The cursor for "continue after ``position``" within ``scope``."""
        raw = position.encode()
        if not raw or len(raw) > MAX_POSITION_BYTES or b"\x00" in raw:
            raise ValueError("a cursor position is 1-256 bytes without NUL")
        expiry = int((self._clock() + self._ttl).timestamp())
        padded = raw + b"\x00" * (-len(raw) % _PAD)
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(
            nonce, expiry.to_bytes(_EXPIRY_BYTES, "big") + padded, scope.aad()
        )
        return base64.urlsafe_b64encode(_VERSION + nonce + sealed).decode().rstrip("=")

    def open(self, scope: CursorScope, cursor: str | None) -> str:
        """The position a cursor stands for (``""``: none given, start from the beginning).

        Raises :class:`InvalidCursorError` for anything not sealed by :meth:`seal` for exactly
        this ``scope`` (altered, forged, issued to another key or endpoint) or past its expiry.
        """
        if not cursor:
            return ""
        try:
            blob = base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode("ascii"))
        except (binascii.Error, ValueError):
            raise InvalidCursorError from None
        if base64.urlsafe_b64encode(blob).decode().rstrip("=") != cursor:
            raise InvalidCursorError  # non-canonical or non-alphabet characters
        if len(blob) < 1 + _NONCE_BYTES + _TAG_BYTES + _EXPIRY_BYTES or blob[:1] != _VERSION:
            raise InvalidCursorError
        nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            plain = self._aead.decrypt(nonce, sealed, scope.aad())
        except InvalidTag:
            raise InvalidCursorError from None
        expiry = int.from_bytes(plain[:_EXPIRY_BYTES], "big")
        if self._clock().timestamp() > expiry:
            raise InvalidCursorError("this cursor has expired")
        position = plain[_EXPIRY_BYTES:].rstrip(b"\x00").decode()
        if not position:
            raise InvalidCursorError
        return position
