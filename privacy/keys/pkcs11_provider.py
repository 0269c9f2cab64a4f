"""A :class:`~privacy.keys.keyprovider.KeyProvider` whose KEKs live in a PKCS#11 token (an HSM).

Any HSM, cloud HSM or smart card with a PKCS#11 library works (Thales Luna, Entrust nShield,
AWS CloudHSM, YubiHSM 2, SoftHSM2 for development and tests). The library is python-pkcs11.

* **The KEK never leaves the token.** Each KEK is an AES-256 secret-key object generated *in*
  the token with ``CKA_SENSITIVE=true`` and ``CKA_EXTRACTABLE=false``; idgraph only holds a
  handle. Wrapping is ``C_Encrypt`` with ``CKM_AES_GCM`` inside the token (the 32-byte data key
  goes in, the sealed blob comes out), unwrapping is ``C_Decrypt``.
* **Same blob and AAD rules as the file provider**: version byte ``0x02`` | 12-byte random nonce
  | ciphertext + 16-byte tag, AAD = ``"idgraph-kek-wrap/1" NUL kek_id NUL owner-aad``, so a
  wrapped key moved to another owner or relabelled with another KEK id fails to unwrap.
* **KEK ids are token labels** with a fixed prefix (default ``idgraph-kek-``) followed by a UTC
  timestamp. The primary is the newest label, so a rotation is "create a new key in the token"
  (``idgraph keys rotate-kek``); :meth:`reload` re-lists the token, so a running service
  follows. Retiring destroys the old key object once
  :meth:`privacy.keys.vault.Vault.retire_old_keks`
  has moved every data key off it.

A python-pkcs11 session is not thread-safe: one session per provider, serialized by a lock
(the token does the crypto; the lock is held for one call).
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import ObjectHandleInvalid, PKCS11Error, UserAlreadyLoggedIn
from pkcs11.mechanisms import GCMParams

from identity.errors import ConfigurationError
from privacy.keys.keyprovider import (
    KekNotFoundError,
    KeyProviderError,
    WrappedKey,
    WrappedKeyInvalidError,
    wrap_aad,
)

_VERSION = b"\x02"
_NONCE_BYTES = 12
_TAG_BYTES = 16
DEFAULT_LABEL_PREFIX = "idgraph-kek-"


class Pkcs11KeyProvider:
    """KEKs in a PKCS#11 token; see the module docstring."""

    def __init__(
        self,
        library: Path,
        token_label: str,
        user_pin: str,
        label_prefix: str = DEFAULT_LABEL_PREFIX,
    ) -> None:
        self._prefix = label_prefix
        self._lock = threading.Lock()
        try:
            self._lib = pkcs11.lib(str(library))
            token = self._lib.get_token(token_label=token_label)
            try:
                self._session = token.open(user_pin=user_pin, rw=True)
            except UserAlreadyLoggedIn:
                # PKCS#11 login is per process: another provider in this process (the CLI's
                # rotation next to the vault's) already logged in; sessions share it.
                self._session = token.open(rw=True)
        except (PKCS11Error, RuntimeError) as exc:
            # The message names the library and token, never the PIN.
            raise ConfigurationError(
                f"cannot open PKCS#11 token {token_label!r} with {library}: {type(exc).__name__}"
            ) from None
        # Token key objects (python-pkcs11 mixes encrypt/decrypt in at run time, so its stubs
        # cannot type them precisely).
        self._keys: dict[str, Any] = {}
        self.reload()

    def close(self) -> None:
        """Close the token session."""
        with self._lock:
            self._session.close()

    # -- the KeyProvider port --------------------------------------------------------------

    def reload(self) -> None:
        """Re-list the token's KEKs (a rotation made by another process shows up here)."""
        with self._lock:
            found: dict[str, Any] = {}
            for obj in self._session.get_objects(
                {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES}
            ):
                label = str(obj[Attribute.LABEL])
                if label.startswith(self._prefix):
                    found[label] = obj
            self._keys = found

    @property
    def kek_ids(self) -> tuple[str, ...]:
        """Labels of every KEK in the token, oldest first."""
        return tuple(sorted(self._keys))

    @property
    def current_kek_id(self) -> str:
        """The newest KEK (labels carry a UTC timestamp)."""
        if not self._keys:
            raise ConfigurationError(
                f"the PKCS#11 token holds no key labelled {self._prefix}*; create one with "
                "`idgraph keys rotate-kek`"
            )
        return max(self._keys)

    def holds(self, kek_id: str) -> bool:
        """Whether the token holds a KEK with this label."""
        return kek_id in self._keys

    def wrap(self, data_key: bytes, aad: bytes) -> WrappedKey:
        """AES-256-GCM-encrypt ``data_key`` inside the token under the current KEK."""
        for attempt in range(2):
            kek_id = self.current_kek_id
            nonce = os.urandom(_NONCE_BYTES)
            try:
                with self._lock:
                    sealed = self._keys[kek_id].encrypt(
                        data_key,
                        mechanism=Mechanism.AES_GCM,
                        mechanism_param=GCMParams(nonce, wrap_aad(kek_id, aad), _TAG_BYTES * 8),
                    )
            except ObjectHandleInvalid:
                if attempt:
                    raise KeyProviderError("PKCS#11 wrap failed: ObjectHandleInvalid") from None
                # Another process retired and destroyed this KEK: list the token again.
                self.reload()
                continue
            except PKCS11Error as exc:
                raise KeyProviderError(f"PKCS#11 wrap failed: {type(exc).__name__}") from None
            return WrappedKey(kek_id, _VERSION + nonce + bytes(sealed))
        raise AssertionError("unreachable")  # pragma: no cover

    def unwrap(self, wrapped: WrappedKey, aad: bytes) -> bytes:
        """Decrypt inside the token; :class:`WrappedKeyInvalidError` if it does not authenticate."""
        key = self._keys.get(wrapped.kek_id)
        if key is None:
            raise KekNotFoundError(wrapped.kek_id)
        blob = wrapped.blob
        if len(blob) < 1 + _NONCE_BYTES + _TAG_BYTES or blob[:1] != _VERSION:
            raise WrappedKeyInvalidError("wrapped data key has an unknown format")
        nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            with self._lock:
                plain = key.decrypt(
                    sealed,
                    mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(nonce, wrap_aad(wrapped.kek_id, aad), _TAG_BYTES * 8),
                )
        except PKCS11Error:
            # CKR_ENCRYPTED_DATA_INVALID and friends: the tag did not verify.
            raise WrappedKeyInvalidError(
                "wrapped data key failed authentication in the token (altered, moved to another "
                "owner, or a different KEK under the same label)"
            ) from None
        return bytes(plain)

    # -- key lifecycle (the CLI) -----------------------------------------------------------

    def create_kek(self) -> str:
        """Generate a new AES-256 KEK inside the token (non-extractable); returns its label,
        which becomes the current KEK."""
        label = self._prefix + datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        with self._lock:
            self._session.generate_key(
                KeyType.AES,
                256,
                label=label,
                store=True,
                template={
                    Attribute.SENSITIVE: True,  # never readable in the clear
                    Attribute.EXTRACTABLE: False,  # never wrapped out of the token either
                    Attribute.TOKEN: True,  # persists in the token, not only in this session
                    Attribute.ENCRYPT: True,
                    Attribute.DECRYPT: True,
                    Attribute.WRAP: False,
                    Attribute.UNWRAP: False,
                },
            )
        self.reload()
        return label

    def destroy_kek(self, kek_id: str) -> None:
        """Destroy a retired KEK in the token; refuses the current one."""
        if kek_id == self.current_kek_id:
            raise ConfigurationError(f"KEK {kek_id!r} is the current KEK; rotate first")
        key = self._keys.get(kek_id)
        if key is None:
            raise ConfigurationError(f"KEK {kek_id!r} is not in the token")
        with self._lock:
            key.destroy()
        self.reload()

    def attributes(self, kek_id: str) -> dict[str, bool]:
        """The security attributes of a KEK as the token reports them (for checks and tests)."""
        key = self._keys[kek_id]
        with self._lock:
            return {
                "sensitive": bool(key[Attribute.SENSITIVE]),
                "extractable": bool(key[Attribute.EXTRACTABLE]),
                "token": bool(key[Attribute.TOKEN]),
            }
