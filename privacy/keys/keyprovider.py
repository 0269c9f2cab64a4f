"""Key-encryption keys (KEKs): the port that wraps vault data keys, and its local-file adapter.

The vault (:mod:`privacy.keys.vault`) encrypts values with data keys (DEKs) and never stores a DEK
in
the clear: it stores the DEK *wrapped* (encrypted) by a KEK that a :class:`KeyProvider` holds.
The provider is a port so the KEK can live in a KMS instead of a file.

Local file format: the one every key file has (:mod:`privacy.keys.keyfile`), tagged
``"format": "idgraph-kek/1"``, key ids like ``kek-20261123-3f9a1c``, secrets exactly 32 bytes.
``primary`` wraps new data keys; the other keys stay only so that data keys wrapped under them
can still be unwrapped until :meth:`privacy.keys.vault.Vault.rewrap` has moved every data key to the
primary. Production refuses a ``generated`` primary (see :func:`check_kek_origin`).

Rotation, step by step::

    rotate_kek_file(path)              # new primary; old KEKs stay in the file
    vault = Vault(keys, LocalFileKeyProvider(path))
    vault.rewrap()                     # re-wrap every DEK under the new primary (resumable)
    vault.count_by_kek()               # -> {new_primary: n}: nothing left under an old KEK
    remove_kek(path, old_id)           # only now may the old KEK go

How a KMS-backed provider implements the same Protocol
------------------------------------------------------
No data key ever needs to leave the vault for this; only the 32-byte DEK travels to the KMS.

* **AWS KMS.** ``current_kek_id`` is the KMS key ARN. ``wrap`` calls
  ``Encrypt(KeyId=arn, Plaintext=data_key, EncryptionContext={"idgraph-aad": b64(aad)})`` and
  returns ``WrappedKey(arn, CiphertextBlob)``. ``unwrap`` calls
  ``Decrypt(KeyId=wrapped.kek_id, CiphertextBlob=wrapped.blob, EncryptionContext=<same>)``;
  KMS authenticates the EncryptionContext exactly as AES-GCM authenticates AAD, so a wrapped key
  moved to another owner fails with ``InvalidCiphertextException``, which the provider re-raises
  as :class:`WrappedKeyInvalidError`. Passing ``KeyId`` on Decrypt pins the key so a blob cannot
  redirect the call to another KMS key. KMS automatic rotation keeps the ARN (old backing keys
  stay inside KMS), so it needs no rewrap; moving to a *different* KMS key changes
  ``current_kek_id`` and :meth:`~privacy.keys.vault.Vault.rewrap` moves the DEKs over.
* **HashiCorp Vault transit.** ``current_kek_id`` is ``"transit:<key name>:v<latest version>"``.
  ``wrap`` calls ``POST transit/encrypt/<name>`` with ``plaintext=b64(data_key)`` and
  ``associated_data=b64(aad)`` (AEAD key types such as ``aes256-gcm96``, Vault >= 1.13) and stores
  the returned ``vault:vN:...`` string as the blob. ``unwrap`` calls ``transit/decrypt`` with the
  same ``associated_data``. After ``transit/keys/<name>/rotate`` the latest version changes, so
  ``current_kek_id`` changes and ``rewrap`` re-wraps (a provider may use ``transit/rewrap``, which
  never returns the plaintext DEK); afterwards ``min_decryption_version`` retires old versions,
  the counterpart of :func:`remove_kek`.

Either way, the provider's errors are re-raised as :class:`KeyProviderError` subclasses and no
message ever contains key bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from identity.errors import ConfigurationError, IdGraphError
from identity.frozen import quick_init
from privacy.keys.keyfile import KeyFile, KeyFileFormat, Origin

KEK_BYTES = 32  # AES-256: the largest AES key; 128-bit security even against Grover-style search
NONCE_BYTES = 12  # 96 bits: the nonce size GCM is specified for (no GHASH-derived counter)
_WRAP_VERSION = b"\x01"
_TAG_BYTES = 16
# Domain separation: a KEK wrap can never be confused with any other AES-GCM use of the same
# bytes, and the KEK id is bound too, so a blob relabelled with another kek_id fails to unwrap.
_WRAP_AAD_PREFIX = b"idgraph-kek-wrap/1\x00"


class KeyProviderError(IdGraphError):
    """A key provider could not wrap or unwrap a data key."""

    code = "key-provider-error"


class KekNotFoundError(KeyProviderError, ConfigurationError):
    """A wrapped key names a KEK the provider does not hold (removed too early, or wrong file)."""

    code = "kek-not-found"

    def __init__(self, kek_id: str) -> None:
        self.kek_id = kek_id
        super().__init__(
            f"KEK {kek_id!r} is not in the key provider; was it removed before every data key "
            "was re-wrapped? (Vault.count_by_kek shows which KEKs are still in use)"
        )


class WrappedKeyInvalidError(KeyProviderError):
    """A wrapped key failed authentication: altered, moved to another owner, or a wrong KEK."""

    code = "wrapped-key-invalid"


@quick_init  # one per new data key: a bulk batch wraps ~20,000
@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key encrypted under the KEK ``kek_id``; ``blob`` is provider-specific."""

    kek_id: str
    blob: bytes

    def __repr__(self) -> str:
        # A wrapped key is not secret on its own, but crypto-shredding works only if every copy
        # of it is destroyed, so it must not leak into logs or tracebacks either.
        return f"WrappedKey(kek_id={self.kek_id!r}, blob=<{len(self.blob)} bytes>)"


class KeyProvider(Protocol):
    """The port to whatever holds the key-encryption keys (a local file, a KMS)."""

    @property
    def current_kek_id(self) -> str:
        """The KEK new data keys are wrapped under."""
        ...

    def wrap(self, data_key: bytes, aad: bytes) -> WrappedKey:
        """Encrypt ``data_key`` under the current KEK, authenticating ``aad`` (binds the owner)."""
        ...

    def wrap_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[WrappedKey]:
        """:meth:`wrap` each ``(data_key, aad)`` under the same current KEK (the vault wraps the
        new keys of a whole ingest batch at once)."""
        ...

    def unwrap(self, wrapped: WrappedKey, aad: bytes) -> bytes:
        """Decrypt a wrapped key; raises :class:`KeyProviderError` if it does not authenticate."""
        ...

    @property
    def kek_ids(self) -> tuple[str, ...]:
        """Every KEK this provider holds (rotation retires all but the current one)."""
        ...

    def holds(self, kek_id: str) -> bool:
        """Whether this provider can unwrap keys wrapped under ``kek_id`` (start-up checks that
        every KEK named by a data key is held, so a missing KEK stops the service, not a read)."""
        ...

    def reload(self) -> None:
        """Pick up a rotation made elsewhere (a new primary, KEKs added or removed).

        The vault calls it when the key file refuses a key wrapped under a retired KEK and when
        a data key names a KEK this provider does not know yet, so a running service follows a
        rotation without a restart.
        """
        ...


KEK_FILE = KeyFileFormat(
    format="idgraph-kek/1", what="KEK file", id_prefix="kek", secret_bytes=KEK_BYTES, exact=True
)
FORMAT = KEK_FILE.format


def new_kek_id() -> str:
    """A fresh KEK id (``kek-<date>-<random>``)."""
    return KEK_FILE.new_key_id()


def read_kek_file(path: Path) -> KeyFile:
    """Read and check the KEK file; refuses files readable by group or others."""
    return KEK_FILE.read(path)


def create_kek_file(path: Path, origin: Origin) -> KeyFile:
    """Create a KEK file with one new KEK; refuses to overwrite an existing file."""
    return KEK_FILE.create(path, origin)


def rotate_kek_file(path: Path) -> str:
    """Add a new operator KEK and make it primary; returns its id. Old KEKs stay for unwrapping."""
    return KEK_FILE.rotate(path).primary


def remove_kek(path: Path, kek_id: str) -> KeyFile:
    """Drop a retired KEK from the file; refuses the primary.

    Run it only after :meth:`privacy.keys.vault.Vault.rewrap` and when
    :meth:`~privacy.keys.vault.Vault.count_by_kek` shows no data key under ``kek_id``: a data key
    still
    wrapped under a removed KEK is unreadable (which is crypto-shredding, by accident).
    """
    return KEK_FILE.remove(path, kek_id)


def check_kek_origin(origin: Origin, *, production: bool) -> None:
    """Refuse a ``generated`` primary KEK in production (the bootstrap calls this)."""
    if production and origin == "generated":
        raise ConfigurationError(
            "the primary KEK was generated for local development; production refuses it. "
            "Create an operator KEK (rotate the KEK file) or configure a KMS key provider."
        )


def wrap_aad(kek_id: str, aad: bytes) -> bytes:
    """The AAD of a KEK wrap: domain prefix, KEK id, then the caller's AAD (every provider)."""
    return _WRAP_AAD_PREFIX + kek_id.encode() + b"\x00" + aad


class LocalFileKeyProvider:
    """:class:`KeyProvider` whose KEKs are in a local JSON file (development, single host).

    The file is read at construction and again whenever it changes (its inode, size or mtime
    differ, checked with one ``stat`` before each wrap) or :meth:`reload` is called, so a running
    service follows ``idgraph keys rotate-kek`` without a restart. AES-GCM objects are stateless
    per call and the loaded state is swapped in one assignment, so one provider is safe to share
    between threads.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._state = self._read()

    def _signature(self) -> tuple[int, int, int]:
        try:
            st = self.path.stat()
        except OSError:
            return (0, 0, 0)  # gone: keep what is loaded (a read would fail the same way)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _read(self) -> tuple[KeyFile, dict[str, AESGCM], tuple[int, int, int]]:
        signature = self._signature()
        keks = read_kek_file(self.path)
        return keks, {e.key_id: AESGCM(e.secret) for e in keks.entries}, signature

    @property
    def _file(self) -> KeyFile:
        return self._state[0]

    def reload(self) -> None:
        """Re-read the KEK file (see :meth:`KeyProvider.reload`)."""
        self._state = self._read()

    def _follow_changes(self) -> None:
        signature = self._signature()
        if signature != (0, 0, 0) and signature != self._state[2]:
            self._state = self._read()

    @property
    def current_kek_id(self) -> str:
        """The primary KEK of the file (as of the last check)."""
        self._follow_changes()
        return self._file.primary

    @property
    def primary_origin(self) -> Origin:
        """Origin of the primary KEK (same as :attr:`kek_origin`)."""
        return self._file.primary_origin

    @property
    def kek_origin(self) -> Origin:
        """Origin of the KEK that wraps new data keys; pass it to :func:`check_kek_origin`."""
        return self._file.primary_origin

    @property
    def kek_ids(self) -> tuple[str, ...]:
        """Every KEK this provider can unwrap with."""
        return self._file.key_ids

    def holds(self, kek_id: str) -> bool:
        """Whether the file holds ``kek_id``."""
        return kek_id in self._state[1]

    def wrap(self, data_key: bytes, aad: bytes) -> WrappedKey:
        """AES-256-GCM-encrypt ``data_key`` under the primary KEK.

        Blob: version byte ``0x01`` | 12-byte random nonce | ciphertext + 16-byte tag. A random
        96-bit nonce is safe here: one KEK wraps at most a few million DEKs before rotation, far
        below the 2**32 messages per key where random-nonce collisions become a concern for GCM.
        The AAD binds the KEK id and the caller's ``aad`` (the owner), so a wrapped key copied to
        another owner's row does not unwrap.
        """
        self._follow_changes()
        keks, ciphers, _ = self._state
        kek_id = keks.primary
        nonce = os.urandom(NONCE_BYTES)
        sealed = ciphers[kek_id].encrypt(nonce, data_key, wrap_aad(kek_id, aad))
        return WrappedKey(kek_id, _WRAP_VERSION + nonce + sealed)

    def wrap_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[WrappedKey]:
        """:meth:`wrap` for many keys: one check of the file and one draw of random nonces for
        the whole batch (not one ``stat`` and one ``os.urandom`` per key)."""
        self._follow_changes()
        keks, ciphers, _ = self._state
        kek_id = keks.primary
        encrypt = ciphers[kek_id].encrypt
        nonces = os.urandom(NONCE_BYTES * len(items))
        prefix = wrap_aad(kek_id, b"")  # wrap_aad(kek_id, aad) is this prefix + aad
        wrapped = []
        for index, (data_key, aad) in enumerate(items):
            nonce = nonces[index * NONCE_BYTES : (index + 1) * NONCE_BYTES]
            sealed = encrypt(nonce, data_key, prefix + aad)
            wrapped.append(WrappedKey(kek_id, _WRAP_VERSION + nonce + sealed))
        return wrapped

    def unwrap(self, wrapped: WrappedKey, aad: bytes) -> bytes:
        """Decrypt a key wrapped by :meth:`wrap` under any KEK still in the file."""
        kek = self._state[1].get(wrapped.kek_id)
        if kek is None:
            raise KekNotFoundError(wrapped.kek_id)
        return _unseal(kek, wrapped, aad)


def _unseal(kek: AESGCM, wrapped: WrappedKey, aad: bytes) -> bytes:
    # Open a blob made by LocalFileKeyProvider.wrap with the AES-GCM KEK kek.
    blob = wrapped.blob
    if len(blob) < 1 + NONCE_BYTES + _TAG_BYTES or blob[:1] != _WRAP_VERSION:
        raise WrappedKeyInvalidError("wrapped data key has an unknown format")
    nonce, sealed = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
    try:
        return kek.decrypt(nonce, sealed, wrap_aad(wrapped.kek_id, aad))
    except InvalidTag:
        raise WrappedKeyInvalidError(
            "wrapped data key failed authentication (altered, moved to another owner, or "
            "a different KEK under the same id)"
        ) from None
