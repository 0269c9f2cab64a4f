"""The vault: envelope encryption of the few raw values idgraph must keep, with crypto-shredding.

Design (GitHub issue 4)
-----------------------
**One data key (DEK) per identifier anchor, not per person.** The owner of a DEK is the
identifier node id (``n_…``, an opaque random id, see :func:`identity.model.new_node_id`) that a
value arrived with. Persons are not stable: resolution merges two persons into one and an unlink
or erasure splits a cluster. With a DEK per person every merge or split would have to re-encrypt
(or re-key) the values that moved; with a DEK per anchor the anchor moves between persons and its
ciphertexts and key stay as they are. Erasing a person is then shredding the DEKs of all of that
person's anchors (:meth:`Vault.shred` takes a collection of owners and does it in one
transaction). The anchor id is random, so the key store reveals nothing about who a key is for.

**Envelope encryption.** Each DEK is 32 random bytes used with AES-256-GCM. DEKs are stored only
*wrapped* (encrypted) by a key-encryption key (KEK) from a
:class:`~privacy.keys.keyprovider.KeyProvider`
(a local file, or a KMS in production). Rotating the KEK re-wraps 32-byte DEKs
(:meth:`Vault.rewrap`); the data itself is never re-encrypted.

**Wrapped DEKs live in their own SQLite file** (``vault-keys.sqlite3``, behind the
:class:`VaultKeyStore` port, adapter :class:`~privacy.keys.vault_sqlite.SqliteVaultKeyStore`), never
in
the graph database that holds the ciphertexts.
Crypto-shredding means deleting an owner's wrapped DEK: every ciphertext under that DEK, in every
copy, becomes unreadable. That only holds if the copies of the ciphertext do not carry the key:
because the graph database never contains a DEK, a backup or copy of it taken *before* a shred
cannot be decrypted *after* the shred. The key file runs with ``PRAGMA secure_delete=ON`` (freed
cells and pages are overwritten with zeros, so a deleted wrapped key is not left in the file's
free space) and a shred ends with ``PRAGMA wal_checkpoint(TRUNCATE)`` (the page images that held
the key are folded into the main file, where secure_delete zeroed them, and the WAL is cut to
zero bytes instead of keeping old frames around for reuse).

**The price: backups of the vault key file must have short retention**, like a KMS's key
deletion window (7-30 days). A key-file backup taken before a shred still holds the shredded
wrapped DEK and, together with a live KEK, would decrypt old graph copies. So: back up the key
file often, keep those backups briefly, and rotate and *remove* old KEKs
(:func:`~privacy.keys.keyprovider.remove_kek`) on a schedule: once the KEK a stale key-file backup
was
wrapped under is gone, that backup is dead too. The same argument covers what secure_delete cannot
reach (blocks the filesystem or an SSD's wear levelling keep after an overwrite).

Limits, stated plainly
----------------------
* Unwrapped DEKs are cached in process memory (a bounded LRU of AES-GCM contexts, so a hit
  costs neither a key-file lookup nor an unwrap, which with a KMS is a network call). Python
  cannot wipe memory, so a shredded key may remain in freed process memory until it is reused.
  The cache is never *used* after a shred: every call first reads the key file's shred
  generation (one single-row query), which every shred increments in its own transaction; when
  it has moved, the cache is emptied. So a shred by another process (the CLI while the API
  serves) takes effect on the next call everywhere.
* A cached DEK was authenticated when it was unwrapped; a key-file row altered *afterwards* is
  noticed when the entry leaves the cache (eviction, a shred, a restart), not before. That
  alteration cannot make the vault use a key the attacker chose while the genuine one is cached.
* ``secure_delete`` is a per-connection setting. Every connection that deletes from the key file
  must be made by :class:`~privacy.keys.vault_sqlite.SqliteVaultKeyStore`.

Blob format of a vault value: ``0x01`` (version) | 12-byte random nonce | ciphertext + 16-byte
GCM tag. The AAD is ``b"idgraph-vault/1\\x00" + owner + b"\\x00" + field``.
"""

from __future__ import annotations

import hmac
import operator
import os
import secrets
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Literal, Protocol, overload

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from identity.bounded import BoundedMap
from identity.errors import (
    AnchorKeyDestroyedError,
    ConfigurationError,
    IdGraphError,
    StoreUnavailableError,
)
from identity.hashing import HmacSha256
from privacy.keys.keyprovider import (
    KekNotFoundError,
    KeyProvider,
    WrappedKey,
    WrappedKeyInvalidError,
)
from privacy.keys.process import ProcessIdentity, is_gone, process_identity

VERSION = 0x01
_VERSION_BYTE = bytes((VERSION,))
DEK_BYTES = 32  # AES-256 (see privacy.keys.keyprovider.KEK_BYTES for why 256)
NONCE_BYTES = 12  # 96-bit nonce: GCM's native size
TAG_BYTES = 16  # full-length GCM tag; truncated tags weaken forgery resistance
_HEADER = 1 + NONCE_BYTES
# The AAD binds each ciphertext to its owner and its field, so a blob copied to another owner's
# row, or into another field of the same owner, fails authentication instead of decrypting as
# the wrong person's data. The prefix names the format version, so a future version-2 blob
# relabelled as version 1 fails too (the version byte itself is checked, not authenticated).
_VALUE_AAD_PREFIX = b"idgraph-vault/1\x00"
# The owner is bound into the DEK wrap as well: a wrapped DEK copied onto another owner's row in
# the key file does not unwrap, so nobody can re-point an owner at a key they control.
_DEK_AAD_PREFIX = b"idgraph-vault-dek/1\x00"
# The root of keyed references (shred refs here, audit person refs, see reference_key): 32 random
# bytes stored like a data key, wrapped under the KEK, under this reserved owner. So it needs the
# KEK to use, moves with every KEK rotation (rewrap treats it like any data key) and never
# changes when the hash key rotates: references written years ago stay findable.
REFS_OWNER = "~refs"
RESERVED_OWNER_PREFIX = "~"
SHRED_REF_INFO = b"idgraph-vault-shred-ref/1"
# The subkey that tags references stored in the key file (Vault.owner_refs).
STORED_REF_TAG_INFO = b"idgraph-vault-stored-ref-tag/1"
_WRAP_ATTEMPTS = 3  # a refused wrap reloads the provider; more than twice means no rotation
_FIRST_REFILL = 256  # keys made by a vault's first pool refill (then doubling to pool_size)
# Keys made for one reservation above the pool size (a bulk batch: ~2 per 10k-event row batch,
# ~20,000), at most; a larger request gets none (keys are then made at seal time, as before).
# Bounds the AES-GCM contexts held for reservations in flight (see Vault.reserve_owners).
MAX_KEYS_AHEAD = 32_768


class VaultError(IdGraphError):
    """Root of the vault's errors. Messages never contain plaintext or key bytes."""

    code = "vault-error"


class VaultUnavailableError(VaultError, StoreUnavailableError):
    """The vault key file cannot be opened or refused an operation (maps like a store outage)."""

    code = "vault-unavailable"


class InvalidVaultItemError(VaultError):
    """An owner id or field name cannot be used (empty, or containing NUL)."""

    code = "vault-item-invalid"


class DataKeyDestroyedError(VaultError, AnchorKeyDestroyedError):
    """Some owners have no data key (shredded, or never created): their data is unreadable.

    It is the domain's :class:`~identity.errors.AnchorKeyDestroyedError` too (one error, not a
    translation): ingest refuses an identifier whose anchor's key is gone instead of failing."""

    code = "data-key-destroyed"

    def __init__(self, owners: Collection[str]) -> None:
        # The owners stay on the attribute, for the code that handles the error (which items
        # to withhold). The message counts them only: it ends up in log lines and error
        # bodies, and an owner is an identifier node's id (n_…) of a person whose data was
        # shredded, which those must not name.
        AnchorKeyDestroyedError.__init__(self, owners)


class TamperedCiphertextError(VaultError):
    """A value failed authentication: altered, truncated, wrong version, or moved between
    owners or fields. Nothing of the batch is returned."""

    code = "ciphertext-tampered"

    def __init__(self, owner: str, field: str, index: int, detail: str) -> None:
        # Owner and field stay on the attributes, for the code that handles the error. The
        # message names neither: it ends up in log lines (api.problems logs it) and error
        # bodies, and the owner is an identifier node's id (n_...), a pseudonymous id of one
        # person, and a field names a trait or event (``attribute:city``). What an operator needs
        # to find the value is safe to say: its position in the batch and the field's kind.
        self.owner = owner
        self.field = field
        self.index = index
        super().__init__(f"vault value #{index} ({field_kind(field)} field): {detail}")


class TamperedDataKeyError(TamperedCiphertextError):
    """An owner's wrapped data key failed authentication (altered or copied from another owner)."""

    code = "data-key-tampered"

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.field = ""
        self.index = -1
        # The owner is not named (see TamperedCiphertextError): it stays on the attribute.
        VaultError.__init__(
            self,
            "a wrapped data key failed authentication (altered in the key file, or copied from "
            "another owner's row)",
        )


class KekRetiredError(VaultUnavailableError):
    """A key wrapped under a KEK that is being retired was refused by the key file (503: this
    process's key provider is out of date, e.g. a host whose KEK file copy was not updated)."""

    code = "kek-retired"

    def __init__(self, kek_ids: Collection[str]) -> None:
        self.kek_ids = tuple(sorted(kek_ids))
        super().__init__(
            f"KEK(s) {', '.join(self.kek_ids)} are retired; keys must be wrapped under the "
            "current primary KEK (the key provider did not pick up the rotation)"
        )


class ShredIncompleteError(VaultError):
    """The keys were destroyed, but the WAL could not be truncated (a reader held it).

    The shredded keys are already unreadable through the vault; their bytes may remain in the WAL
    file until :meth:`VaultKeyStore.checkpoint` succeeds. Retry it.
    """

    code = "shred-incomplete"

    def __init__(self, destroyed: int) -> None:
        self.destroyed = destroyed
        super().__init__(
            f"{destroyed} data key(s) destroyed, but the key file's WAL could not be truncated "
            "because another connection is reading it; retry the checkpoint"
        )


@dataclass(frozen=True, slots=True)
class RewrapReport:
    """What :meth:`Vault.rewrap` did: keys moved to the current KEK and keys already there."""

    kek_id: str
    rewrapped: int
    already_current: int
    batches: int


@dataclass(frozen=True, slots=True)
class RetireReport:
    """What :meth:`Vault.retire_old_keks` did: the KEKs now retired (safe to remove from the
    provider) and how many keys were re-wrapped under ``kek_id``."""

    kek_id: str
    retired: tuple[str, ...]
    rewrapped: int


class KekRetirementIncompleteError(VaultError):
    """Data keys are still wrapped under a KEK being retired: do not remove it yet."""

    code = "kek-retirement-incomplete"

    def __init__(self, left: dict[str, int]) -> None:
        self.left = dict(left)
        listed = ", ".join(f"{k}: {n}" for k, n in sorted(left.items()))
        super().__init__(f"data keys are still under retired KEKs ({listed}); run it again")


def field_kind(field: str) -> str:
    """The kind of a vault field (``attribute`` of ``attribute:city``; fields are
    ``<fact kind>:<name>``): what an error message may say of a field without naming it."""
    kind = field.partition(":")[0]
    return kind if kind.replace("_", "").isalnum() and len(kind) <= 32 else "other"


# Stores the wrapped keys of one _insert_fresh attempt (VaultKeyStore.insert_new or insert_ahead).
_InsertKeys = Callable[[Sequence[tuple[str, "WrappedKey"]]], dict[str, "WrappedKey"]]


def _check_name(kind: str, value: str) -> None:
    # NUL separates the parts of the AAD; a NUL inside a part would let two different
    # (owner, field) pairs produce the same AAD and so accept each other's blobs.
    if not value or "\x00" in value:
        raise InvalidVaultItemError(f"{kind} must be non-empty and must not contain NUL")
    if kind == "owner" and value.startswith(RESERVED_OWNER_PREFIX):
        # "~refs" holds the reference root key: never a value's DEK, never shredded.
        raise InvalidVaultItemError("owner ids starting with '~' are reserved")


def _check_owners(owners: Collection[str]) -> None:
    """:func:`_check_name` of every owner, in a few C-level passes over them all (a cold audience
    page names ~1,000 owners); a suspect found is checked one by one, which names it."""
    joined = "\x01".join(owners)
    if (
        "" in owners
        or "\x00" in joined
        or joined.startswith(RESERVED_OWNER_PREFIX)
        or "\x01" + RESERVED_OWNER_PREFIX in joined
    ):
        for owner in owners:  # the culprit, or (an owner holding "\x01~") a false alarm
            _check_name("owner", owner)


def _check_items(items: Sequence[tuple[str, str, bytes]]) -> set[str]:
    """Check every distinct owner and field once; returns the owners."""
    owners = {owner for owner, _, _ in items}
    _check_owners(owners)  # C-level passes: a bulk batch seals ~20,000 owners
    for field in {field for _, field, _ in items}:
        _check_name("field", field)
    return owners


def _value_aad(owner: str, field: str) -> bytes:
    return _VALUE_AAD_PREFIX + owner.encode() + b"\x00" + field.encode()


def _dek_aad(owner: str) -> bytes:
    return _DEK_AAD_PREFIX + owner.encode()


class _LazyRefs(Mapping[str, str]):
    """The shred references of some owners, each computed when first read (then kept)."""

    __slots__ = ("_made", "_make", "_owners")

    def __init__(self, owners: Collection[str], make: Callable[[str], str]) -> None:
        self._owners = frozenset(owners)
        self._make = make
        self._made: dict[str, str] = {}

    def __getitem__(self, owner: str) -> str:
        if owner not in self._owners:
            raise KeyError(owner)
        ref = self._made.get(owner)
        if ref is None:
            ref = self._made[owner] = self._make(owner)
        return ref

    def __iter__(self) -> Iterator[str]:
        return iter(self._owners)

    def __len__(self) -> int:
        return len(self._owners)


# HKDF-SHA256 (RFC 5869) without a salt, one 32-byte output block, is two HMACs: extract
# PRK = HMAC(32 zero bytes, root), expand OKM = HMAC(PRK, info || 0x01). _hkdf computes exactly
# that with the HMAC of identity.hashing (the zero salt's pads hashed once): the same bytes as
# cryptography's HKDF(SHA256, length=32, salt=None, info) (tested against it, so every subkey and
# every audit reference made before stays the same), at less than half its CPU (~3.4 us against
# ~7.8 us a derivation, measured): a cold audience derives one subkey per member, ~25k at 1M.
_HKDF_EXTRACT = HmacSha256(bytes(32))


def _hkdf(root: bytes, info: bytes) -> bytes:
    return HmacSha256(_HKDF_EXTRACT.digest(root)).digest(info + b"\x01")


class VaultKeyStore(Protocol):
    r"""The port to where wrapped data keys live (one row per owner), and which owners were
    shredded. The vault never sees a plaintext key here: only :class:`WrappedKey`\ s.

    Every method is one transaction. An adapter must delete for real (the SQLite one zeroes
    freed cells and truncates its WAL on :meth:`checkpoint`): deleting a wrapped key *is* the
    crypto-shred. Adapter: :class:`privacy.keys.vault_sqlite.SqliteVaultKeyStore`.
    """

    def get_many(self, owners: Collection[str]) -> dict[str, WrappedKey]:
        """The wrapped keys of those ``owners`` that have one."""
        ...

    def insert_new(
        self,
        rows: Sequence[tuple[str, WrappedKey]],
        shred_refs: Mapping[str, str],
        holder: int | None = None,
    ) -> dict[str, WrappedKey]:
        """Store new keys; an owner that got one meanwhile keeps it (returned). Raises
        :class:`DataKeyDestroyedError` (nothing written) for a shredded owner and
        :class:`KekRetiredError` for a key under a retired KEK. ``holder``: keys made ahead by
        that pool holder."""
        ...

    def insert_ahead(
        self,
        rows: Sequence[tuple[str, WrappedKey]],
        shred_refs: Mapping[str, str],
        process: ProcessIdentity,
        settled: Collection[int] = (),
    ) -> tuple[int, dict[str, WrappedKey]]:
        """In one transaction: :meth:`release_holder` (nothing unused, settled) of each of
        ``settled``, a new holder for ``process``, and :meth:`insert_new` of ``rows`` under it;
        returns the new holder and the keys now stored."""
        ...

    def get_refs(self, owners: Collection[str]) -> dict[str, tuple[str, bytes]]:
        """The stored ``(reference, tag)`` of those ``owners`` that have one."""
        ...

    def refs_and_keys(
        self, owners: Collection[str]
    ) -> tuple[dict[str, tuple[str, bytes]], dict[str, WrappedKey]]:
        """:meth:`get_refs` of ``owners``, and :meth:`get_many` of those without a stored
        reference, as of one snapshot (one read transaction)."""
        ...

    def insert_refs(
        self, rows: Sequence[tuple[str, str, bytes]], shred_refs: Mapping[str, str]
    ) -> dict[str, tuple[str, bytes]]:
        """Store ``(owner, reference, tag)`` rows; an owner that got one meanwhile keeps it:
        returns what is stored for those owners (empty when every row was stored). Raises
        :class:`DataKeyDestroyedError` (nothing written) for a shredded owner."""
        ...

    def register_holder(self, process: ProcessIdentity) -> int:
        """A new pool holder (a process making keys ahead); its id."""
        ...

    def pool_holders(self) -> dict[int, ProcessIdentity | None]:
        """Every pool holder and its process (``None``: stopped cleanly, marks kept)."""
        ...

    def held_by(self, holder: int) -> list[str]:
        """The owners of the keys ``holder`` made ahead and still holds."""
        ...

    def release_holder(self, holder: int, unused: Collection[str], *, settled: bool) -> int:
        """Delete ``holder``'s keys of ``unused`` and its row; ``settled``: the rest are used."""
        ...

    def delete_many(
        self, owners: Collection[str], shred_refs: Mapping[str, str]
    ) -> tuple[int, int]:
        """Delete the keys and stored references of ``owners``, remember them as shredded, bump
        the shred generation; returns ``(owners that had either, new shred generation)``."""
        ...

    def shred_generation(self) -> int:
        """A counter every shred (by any process) increments; one cheap read."""
        ...

    def shredded(self, owners: Collection[str], shred_refs: Mapping[str, str]) -> set[str]:
        """Those of ``owners`` that were shredded (``shred_refs`` read only if any owner was)."""
        ...

    def delete_unused(self, owners: Collection[str]) -> int:
        """Delete the keys of ``owners`` that no value was ever sealed under (keys made ahead
        and never handed out): not a shred, so nothing is remembered and no cache is bumped.
        Returns how many were deleted."""
        ...

    def not_under(self, kek_id: str, after: str, limit: int) -> list[tuple[str, WrappedKey]]:
        """Up to ``limit`` keys not wrapped under ``kek_id``, with owner > ``after``, by owner."""
        ...

    def owners_starting(self, prefix: str, limit: int) -> list[str]:
        """Up to ``limit`` owners with a data key whose id starts with ``prefix``, in order."""
        ...

    def replace_wrapped(self, updates: Sequence[tuple[str, WrappedKey, WrappedKey]]) -> int:
        """Compare-and-set ``old`` to ``new`` per owner; returns rows changed."""
        ...

    def retire(self, kek_ids: Collection[str]) -> None:
        """List ``kek_ids`` as retired: from then on no key under them can be stored."""
        ...

    def retired(self) -> set[str]:
        """The KEK ids listed as retired."""
        ...

    def kek_ids_in_use(self) -> set[str]:
        """The KEK ids that wrap at least one data key."""
        ...

    def count_by_kek(self, *, include_reserved: bool = True) -> dict[str, int]:
        """Number of keys under each KEK (``include_reserved``: the reference root key too)."""
        ...

    def checkpoint(self) -> bool:
        """Make deletions final on disk; ``False`` if that could not complete (retry)."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...


class Vault:
    """Encrypts and decrypts values per (owner, field) and shreds owners' keys.

    Thread-safe: the key store serializes its connection; the DEK cache has its own lock, and
    key unwrapping (a network call with a KMS provider) runs outside both.
    """

    def __init__(
        self,
        keys: VaultKeyStore,
        provider: KeyProvider,
        cache_size: int = 10_000,
        pool_size: int = 4096,
        process: ProcessIdentity | None = None,
        max_keys_ahead: int = MAX_KEYS_AHEAD,
    ) -> None:
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        if pool_size < 0:
            raise ValueError("pool_size must be >= 0")
        self._keys = keys
        self._provider = provider
        # owner -> AES-GCM context of its DEK, least recently used first. Holds DEKs that were
        # unwrapped (and so authenticated) from the key file; valid until the owner is shredded:
        # every use names the key file's shred generation, and a newer one empties the cache
        # (BoundedMap's validity generation), so another process's shred takes effect here on
        # the next call; keys read before a shred are never cached after it.
        self._cache: BoundedMap[str, AESGCM] = BoundedMap(cache_size)
        # Owners the key file was seen not to have shredded (see shredded_owners), under the
        # same rule: valid for the shred generation they were checked in, so another process's
        # shred empties it on the next call. Why: ingest asks about every found node of a batch,
        # and on a key file that ever shredded anything each owner costs two keyed references
        # and an indexed probe (~5 us); the same persons come back batch after batch.
        self._unshredded: BoundedMap[str, bool] = BoundedMap(cache_size)
        self._root_key: bytes | None = None
        self._shred_mac: HmacSha256 | None = None
        self._tag_mac: HmacSha256 | None = None
        self._root_lock = threading.Lock()
        # Owners whose data keys are already durably stored, not yet handed out (see
        # reserve_owners), with their AES-GCM contexts. A refill makes ``_refill_size`` keys (at
        # least the request's count), starting at 256 and doubling per refill up to
        # ``pool_size``: a one-shot process makes a few hundred keys, a busy server soon makes
        # them thousands per key-file commit (an HTTP ingest group of 50-event requests needs
        # ~200 per request; with a fixed 256 nearly every group paid a second fsync'd commit).
        # A list (owner, context), taken from its end by slicing: a reservation takes ~200 at
        # once (one C-level slice, where one popitem per owner was ~70k calls per 20k events).
        # Any order does: the owners are fresh random ids.
        self._pool: list[tuple[str, AESGCM]] = []
        # The key file's shred generation as last read by a reservation (see reserve_owners).
        self._pool_generation: int | None = None
        self._pool_lock = threading.Lock()
        self._pool_size = pool_size
        self._refill_size = min(_FIRST_REFILL, pool_size)
        self._pool_closed = False  # discard_pool() ran: nothing is handed out or kept any more
        # This process as the key file records the pool's keys (sweep_unused), registered on
        # the first refill.
        self._process = process or process_identity()
        self._holder: int | None = None
        # Owners handed out by a reservation above the pool size, with their data keys (bytes:
        # an AES-GCM context holds ~2.4 KiB, and two batches' worth were ~100 MiB of RSS),
        # until their write seals under them (encrypt_many takes them) or gives them back
        # (release_owners); at most 2 x max_keys_ahead (a failed write's ids are dropped, and a
        # dropped entry only costs a key-file read when sealed). Under their own lock (the DEK
        # cache is a BoundedMap with its own); valid for the shred generation they were made
        # in. ``_spare``: such owners a committed write did not use (durable keys of ids that
        # exist nowhere), handed out again first.
        self._max_keys_ahead = max_keys_ahead
        self._handed: OrderedDict[str, bytes] = OrderedDict()
        self._handed_generation = -1
        self._spare: OrderedDict[str, bytes] = OrderedDict()
        self._handed_lock = threading.Lock()
        # Keys made ahead carry the mark of a holder registered for their batch (see
        # _keys_ahead), so a crash leaves them to the next start-up's sweep. ``_ahead_marks``:
        # the owners of those keys not known to be used yet (handed out, or spare) -> their
        # holder; ``_ahead_left``: how many such owners each holder still has. A holder whose
        # owners were all used by committed writes (or deleted) is ``_settleable``: its marks
        # are cleared by the next key-file commit of keys ahead (or at a stop), so the key file
        # only ever holds marks of the batches in flight, the spares and failed writes (bounded;
        # the sweep after a crash reads only those). Under ``_handed_lock``.
        self._ahead_marks: dict[str, int] = {}
        self._ahead_left: Counter[int] = Counter()
        self._settleable: list[int] = []

    # -- keyed references ------------------------------------------------------------------

    def _root(self) -> bytes:
        """The reference root key, unwrapped from the key file (made on first use)."""
        with self._root_lock:
            if self._root_key is None:
                rows = self._keys.get_many({REFS_OWNER})
                if REFS_OWNER in rows:
                    self._root_key = self._unwrap(REFS_OWNER, rows[REFS_OWNER])
                else:
                    stored, mine = self._insert_fresh({REFS_OWNER}, {REFS_OWNER: REFS_OWNER})
                    self._root_key = mine.get(REFS_OWNER) or self._unwrap(
                        REFS_OWNER, stored[REFS_OWNER]
                    )
            return self._root_key

    def reference_key(self, info: bytes) -> bytes:
        """A 32-byte subkey for keyed references, named by ``info`` (HKDF-SHA256 of the root).

        For ids that must not be recomputable by someone who merely knows them (an erased
        node id, a person id a downstream tool kept): only a holder of the vault key file *and*
        the KEK can compute such a reference.
        """
        if not info:
            raise ValueError("reference_key needs a non-empty info (the subkey's purpose)")
        return _hkdf(self._root(), info)

    def shred_ref(self, owner: str) -> str:
        """What the key file remembers of a shredded owner: HMAC-SHA256 under the shred-ref
        subkey (hex). Keyed, so a guessed owner id cannot be confirmed against a copy of the
        key file without the KEK."""
        return self._shred_ref_mac().digest(owner.encode()).hex()

    def _shred_ref_mac(self) -> HmacSha256:
        if self._shred_mac is None:
            # Pads hashed once (HmacSha256): a batch of new anchors needs one ref per anchor.
            self._shred_mac = HmacSha256(self.reference_key(SHRED_REF_INFO))
        return self._shred_mac

    def _shred_refs(self, owners: Collection[str]) -> Mapping[str, str]:
        # Each ref is computed on first read: the key file reads them only once it has shredded
        # something (SqliteVaultKeyStore.insert_new), and a bulk batch would otherwise compute an
        # HMAC per new anchor for nothing. The MAC itself is made now: its root key may have to
        # be read from the key file, which must not happen inside the key file's transaction.
        mac = self._shred_ref_mac()
        return _LazyRefs(owners, lambda owner: mac.digest(owner.encode()).hex())

    def shredded_owners(self, owners: Collection[str]) -> set[str]:
        """Those of ``owners`` whose data key was shredded: they never get a key again, so
        ingest refuses them as anchors (``identity.resolution``, reason ``shredded``). One read
        of the key file; one row when it never shredded anything (no HMAC is computed).

        Owners found not shredded are remembered for the key file's shred generation read
        *before* the check: a shred that commits after the check bumps it, so the next call
        starts afresh (BoundedMap's validity generation), and one that commits before the check
        is seen by it. So a remembered answer is never older than the last shred."""
        if not owners:
            return set()
        generation = self._keys.shred_generation()
        known = self._unshredded.get_many(owners, generation=generation)
        unknown = [owner for owner in owners if owner not in known]
        if not unknown:
            return set()
        gone = self._keys.shredded(unknown, self._shred_refs(unknown))
        self._unshredded.put_many(
            ((owner, True) for owner in unknown if owner not in gone), generation=generation
        )
        return gone

    def shred_generation(self) -> int:
        """The key file's shred generation (one single-row read): a cache of anything derived
        from owners' keys is valid while it has not moved (see :class:`BoundedMap`)."""
        return self._keys.shred_generation()

    def owner_refs(
        self,
        owners: Collection[str],
        info: bytes,
        make: Callable[[str, bytes | None], str],
        *,
        create: bool,
    ) -> dict[str, str]:
        """A keyed reference per owner, stored in the key file, for the use named ``info``
        (one stored reference per owner: owners name their use, like the audit log's ``aref:``;
        the tag binds ``info``, so a reference stored for another use is refused).

        A stored reference is read back (its tag checked); an owner without one but with a data key
        (a reference made before references were stored) gets ``make(owner, subkey)``, the subkey
        being HKDF-SHA256 of its data key named ``info`` (as references were derived before stop
        33), so it is the reference made before; with ``create``, an owner with neither gets
        ``make(owner, None)`` (a reference that needs no data key). What was made is stored, durably
        (``synchronous=FULL``), before it is returned. Shredded owners are absent from the answer
        and never get one again (a shred deletes the stored reference with the key), as are, without
        ``create``, owners that have neither.

        Why stored: deriving a reference from the owner's data key costs a key-file lookup, an
        unwrap, an HKDF and the caller's HMAC per owner (~16 us); reading a stored one is one
        lookup and a tag check. See docs/keys.md for why it is as private.
        """
        if not info:
            raise ValueError("owner_refs needs a non-empty info (the references' purpose)")
        wanted = set(owners)
        _check_owners(wanted)
        if not wanted:
            return {}
        name = info.decode()
        tags = self._ref_tag_mac()
        # Stored references and, for the owners without one, data keys of before (version-1
        # references): one read transaction, where it was one for the references, one for an
        # index probe and one for the keys (a first-ever audience page paid the first two).
        # The keys are looked up only if one could exist: an owner range holding no key at all
        # is one index probe, where the lookups of a first-ever page (~1,000 misses) cost ~0.6 ms.
        stored, older = self._keys.refs_and_keys(wanted)
        found = self._checked_refs(stored, name, tags)
        rest = wanted - found.keys()
        if not rest:
            return found
        made: dict[str, str] = {}
        for owner, wrapped in older.items():
            made[owner] = make(owner, _hkdf(self._unwrap(owner, wrapped), info))
        if create:
            made.update((owner, make(owner, None)) for owner in rest - older.keys())
        if not made:
            return found
        found.update(self._store_refs(name, made, tags))
        return found

    def _store_refs(self, name: str, made: dict[str, str], tags: HmacSha256) -> dict[str, str]:
        """Store ``made`` (owner -> reference); what is stored afterwards (another process's
        reference wins a race), shredded owners left out."""
        mac, joint = tags.digest, self._tag_joint(name)
        for _ in range(2):
            # The tags (see _tag_joint), computed inline: a first-ever 1M audience makes ~25k.
            rows = [
                (o, ref, mac(f"{o}{joint}{ref}".encode())[:16]) for o, ref in sorted(made.items())
            ]
            try:
                theirs = self._keys.insert_refs(rows, self._shred_refs(made))
            except DataKeyDestroyedError as exc:  # shredded meanwhile: never made again
                made = {o: ref for o, ref in made.items() if o not in set(exc.owners)}
                if not made:
                    return {}
                continue
            # What was stored as made here carries the tag just computed: only the rows another
            # process stored first are checked (a first-ever 1M audience stores ~25k, and
            # checking its own tags again was an HMAC each for nothing).
            if not theirs:
                return made
            found = {o: ref for o, ref in made.items() if o not in theirs}
            found.update(self._checked_refs(theirs, name, tags))
            return found
        return {}  # pragma: no cover - a second shred of the same owners in between

    def _checked_refs(
        self, stored: Mapping[str, tuple[str, bytes]], name: str, tags: HmacSha256
    ) -> dict[str, str]:
        """``stored`` (owner -> (reference, tag)) as owner -> reference, every tag checked
        (:class:`TamperedDataKeyError` for the first that does not match)."""
        out: dict[str, str] = {}
        # Tags computed inline (a cold audience checks ~25k: a call each was a fifth of it).
        mac, same, use = tags.digest, hmac.compare_digest, self._tag_joint(name)
        for owner, (ref, tag) in stored.items():
            if not same(tag, mac(f"{owner}{use}{ref}".encode())[:16]):
                raise TamperedDataKeyError(owner)
            out[owner] = ref
        return out

    def _ref_tag_mac(self) -> HmacSha256:
        if self._tag_mac is None:
            # Pads hashed once: a cold audience checks ~25k tags.
            self._tag_mac = HmacSha256(self.reference_key(STORED_REF_TAG_INFO))
        return self._tag_mac

    @staticmethod
    def _tag_joint(name: str) -> str:
        """What stands between owner and reference in a stored reference's tag message: the tag
        is the first 128 bits of HMAC(owner NUL use NUL reference) under the tag subkey. It
        binds the reference to its owner and use: a row edited, or copied onto another owner,
        in the key file is refused (only a holder of the KEK can make a tag)."""
        return f"\x00{name}\x00"

    # -- keys made ahead (one durable commit per request) ---------------------------------

    def reserve_owners(self, count: int, make_owner: Callable[[], str]) -> list[str]:
        """``count`` new owner ids (made by ``make_owner``) whose data keys are already durably
        stored; ``[]`` when ``count`` is above the pool size (make keys at seal time instead).

        Why: a write that creates new anchors used to store their keys in a key-file commit of
        its own (fsync'd) and then the ciphertexts in the graph commit (fsync'd again): two
        durable commits per request, the first one inside the graph's write lock. Keys made
        ahead, hundreds to thousands per key-file commit, leave one durable commit per request (the
        graph's). Crash safety is the same as before, by ordering: an id is handed out only
        after the commit that stores its key returned (``synchronous=FULL``), so any graph
        commit that holds a ciphertext under it is later than a durable key, across a SIGKILL
        or a power cut alike. A crash can only leave keys nobody used (a random owner id and a
        wrapped random key, no data; at most one pool per process); never a value without its
        key. Owners are fresh random ids the caller makes, so they were never shredded.

        Give back what a committed write did not use with :meth:`release_owners`; ids whose
        write failed are simply dropped (their keys are unused keys, as after a crash).

        Above the pool size (a bulk file's batch: ~20,000 anchors), up to ``max_keys_ahead``
        (default :data:`MAX_KEYS_AHEAD`), the keys are made for this call alone, in one
        key-file commit, here (see :meth:`_keys_ahead`); above that, ``[]``.
        """
        if count <= 0:
            return []
        if count > self._pool_size:
            return self._keys_ahead(count, make_owner) if count <= self._max_keys_ahead else []
        with self._pool_lock:
            if self._pool_closed:
                return []  # stopping: the caller makes its keys at seal time, as without a pool
            if len(self._pool) < count:
                self._refill(make_owner, count)
            taken = self._pool[-count:]
            del self._pool[-count:]
        # In the DEK cache, so sealing finds them without a key-file read, under the shred
        # generation last read for the pool, not one read per reservation (a single-row SELECT
        # under the key-file lock per HTTP request). Sound because the generation only keeps
        # keys a shred withdrew out of the cache, and these are keys of fresh random ids this
        # process made, which no shred has named (a shred names identifier nodes; an id becomes
        # one only in the commit that seals under it): valid under any generation. Refused
        # (the cache has seen a newer generation: a shred since) they are put under the
        # generation read again, once per shred. The shred check itself is unchanged: sealing
        # reads the generation (Vault._ciphers) and a newer one empties the cache first.
        generation = self._pool_generation
        if generation is None or not self._cache.put_many(taken, generation=generation):
            generation = self._pool_generation = self._keys.shred_generation()
            self._cache.put_many(taken, generation=generation)
        return [owner for owner, _ in taken]

    def release_owners(self, owners: Sequence[str], *, used: Sequence[str] = ()) -> None:
        """Give back reserved owners a committed write did not use (their keys stay valid).

        ``used``: the reserved owners that write used (now identifier nodes). Keys made ahead
        for a batch keep their holder's mark until all of them are used or deleted, so the
        write's caller names them here once it committed (see :meth:`_keys_ahead`)."""
        if used and self._ahead_marks:
            with self._handed_lock:
                self._unmark(used)
        with self._pool_lock:
            if self._pool_closed:
                # Stopping: nothing will hand them out again, and a committed write did not use
                # them, so no value is sealed under them. Removed like the rest of the pool.
                with self._handed_lock:
                    for owner in owners:
                        self._handed.pop(owner, None)
                self._delete_unused(list(owners))
                with self._handed_lock:
                    self._unmark(owners)
                self._settle()
                return
            back = self._spare_back(owners)
            room = self._pool_size - len(self._pool)
            if not back or room <= 0:
                return  # the rest stay unused keys (see reserve_owners)
            # Evicted or dropped by a shred (absent from the answer): no longer known good.
            known = self._cache.get_many(back)
            self._pool.extend([(o, known[o]) for o in back if o in known][:room])

    def discard_pool(self) -> int:
        """Delete the keys made ahead that were never handed out, and stop handing out any
        (a stopping process: ``bootstrap.container.Container.close``); returns how many.

        Why: every process holds up to ``pool_size`` keys made ahead, durably stored for owner
        ids that exist nowhere else. Left in the key file at every stop, they would pile up
        forever (wrapped random keys, no data: harmless, but the file only grows, and a crash
        audit cannot tell them from keys whose values were lost). Safe against concurrent use:
        under the pool lock, so an id is either still in the pool (deleted here, never handed
        out) or was handed out before (kept: a write may be sealing under it now). Ids given
        back afterwards by a committed write that did not use them are deleted too
        (:meth:`release_owners`). A crash still leaves its pool behind (at most one per crash).
        """
        with self._pool_lock:
            self._pool_closed = True
            owners = [owner for owner, _ in self._pool]
            self._pool.clear()
            with self._handed_lock:
                spare = list(self._spare)
                self._spare.clear()
            self._delete_unused(spare)  # made ahead for a batch, never used (not pool keys)
            with self._handed_lock:
                self._unmark(spare)
            self._settle()  # batches whose keys are all used: their marks are cleared
            if self._holder is None:
                return self._delete_unused(owners)
            self._cache.drop(owners)
            # The ids handed out keep their mark: the next sweep keeps those that became nodes.
            return self._keys.release_holder(self._holder, owners, settled=False)

    def sweep_unused(self, existing: Callable[[Sequence[str]], set[str]]) -> int:
        """Delete the keys made ahead by processes that are gone and that no value uses; run at
        start-up (``bootstrap.container.build_container``). Returns how many were deleted.

        ``existing`` names those of some owner ids that are identifier nodes of the graph (a
        reserved id is only ever used as a new node's id, created in the same commit as every
        value sealed under it). A key is deleted only when its process is gone
        (:func:`privacy.keys.process.is_gone`: nothing can hand its id out or write under it
        any more) and its owner is not a node: so no stored value can be under it. Keys of live
        processes, of processes that cannot be judged (another container) and of this one are
        left alone; the used keys of a gone process become ordinary keys.
        """
        deleted = 0
        for holder, process in sorted(self._keys.pool_holders().items()):
            if holder == self._holder or not is_gone(process, self._process):
                continue
            owners = self._keys.held_by(holder)
            used = existing(owners) if owners else set()
            unused = [owner for owner in owners if owner not in used]
            deleted += self._keys.release_holder(holder, unused, settled=True)
        return deleted

    def _delete_unused(self, owners: list[str]) -> int:
        """Delete never-used keys (pool lock held); they leave the DEK cache first."""
        if not owners:
            return 0
        self._cache.drop(owners)
        return self._keys.delete_unused(owners)

    def _keys_ahead(self, count: int, make_owner: Callable[[], str]) -> list[str]:
        """``count`` owners with stored keys for one write above the pool size: spare ones
        first, the rest made now, in one key-file commit (``synchronous=FULL``) that returns
        before any id is handed out, as for the pool.

        Why: a 10,000-event bulk batch seals ~20,000 new anchors, more than the pool holds, and
        made its keys at seal time: a key-file commit inside the graph writer's turn, serial
        with everything else. Made here, by the caller of ``prepare`` (the bulk reader, while
        the batch before commits), the writer only seals.

        Like the pool's, these keys carry a holder mark naming this process: a crash between
        this commit and the graph's leaves keys of ids that exist nowhere (a wrapped random
        key, no data), and the next start-up's sweep (:meth:`sweep_unused`) deletes them once
        this process is gone. Each call registers a holder of its own, so the marks of a batch
        can be cleared as a whole once a committed write used all its keys (the write's caller
        says which it used: :meth:`release_owners`); that happens here, in the next call (in
        the same key-file commit as the new holder and its keys), or at a stop, so the key file
        holds the marks of at most the batches in flight, the spares and the ids of failed
        writes, and a sweep after a crash reads tens of thousands of owners, not every key a
        bulk import ever made. A committed write's unused ids are kept
        as spares (still marked), deleted at a clean stop (:meth:`discard_pool`).
        """
        with self._pool_lock:
            if self._pool_closed:
                return []  # stopping: the caller makes its keys at seal time
        generation = self._keys.shred_generation()
        taken: dict[str, bytes] = {}
        with self._handed_lock:
            if generation != self._handed_generation:
                # Handed-out keys are taken only within the shred generation they were handed
                # out in (conservative: a shred cannot name an id that is not a node yet; one
                # dropped here is read from the key file when sealed). Spares stay: their ids
                # exist nowhere.
                self._handed.clear()
                self._handed_generation = generation
            while self._spare and len(taken) < count:
                owner, dek = self._spare.popitem(last=False)
                taken[owner] = dek
        wanted = {make_owner() for _ in range(count - len(taken))} - taken.keys()
        _check_owners(wanted)
        if not wanted:
            self._settle()
        else:
            # The marks of batches whose keys are all used are cleared, the new batch's holder
            # registered and its keys stored in one key-file commit (three fsync'd commits per
            # bulk batch before): see VaultKeyStore.insert_ahead.
            with self._handed_lock:
                settled, self._settleable = self._settleable, []
            holders: list[int] = []

            def insert(rows: Sequence[tuple[str, WrappedKey]]) -> dict[str, WrappedKey]:
                holder, stored = self._keys.insert_ahead(
                    rows, refs, self._process, () if holders else settled
                )
                holders.append(holder)
                return stored

            refs = self._shred_refs(wanted)
            try:
                _, mine = self._insert_fresh(wanted, refs, insert=insert)
            except BaseException:
                if not holders:
                    with self._handed_lock:  # not released: tried again next time (or swept)
                        self._settleable.extend(settled)
                raise
            holder = holders[-1]
            # Another process storing a key for a fresh random id meanwhile would be an id
            # collision: such an owner is not handed out.
            # (mine is in sorted order already: _insert_fresh makes it from sorted owners.)
            made = [owner for owner in mine if owner in wanted]
            taken.update((owner, mine[owner]) for owner in made)
            with self._handed_lock:
                self._ahead_marks.update(dict.fromkeys(made, holder))
                self._ahead_left[holder] += len(made)
                if not made:
                    self._settleable.append(holder)
        with self._handed_lock:
            # A shred meanwhile (another generation): ours are still fresh ids' keys, but the
            # sealing write then reads them from the key file (see _handed_deks).
            self._handed.update(taken)
            while len(self._handed) > 2 * self._max_keys_ahead:
                self._handed.popitem(last=False)
        return list(taken)

    def _unmark(self, owners: Iterable[str]) -> None:
        """``owners`` (keys made ahead) are used or deleted: their holders need them no more
        (``_handed_lock`` held)."""
        left = self._ahead_left
        # One C-level pass (map of dict.pop, then a Counter of the holders): a bulk batch
        # unmarks ~17,000 owners here on the commit thread, and a Python loop of pops and
        # per-owner Counter updates was ~8 % of that thread (stop 40).
        popped: Counter[int | None] = Counter(map(self._ahead_marks.pop, owners, repeat(None)))
        for holder, count in popped.items():
            if holder is None:
                continue  # not a key made ahead, or unmarked already
            left[holder] -= count
            if left[holder] <= 0:
                del left[holder]
                self._settleable.append(holder)

    def _settle(self) -> None:
        """Clear the marks of batches whose keys made ahead are all used (their owners are
        nodes now), one key-file transaction each (see :meth:`_keys_ahead`)."""
        with self._handed_lock:
            holders, self._settleable = self._settleable, []
        for index, holder in enumerate(holders):
            try:
                self._keys.release_holder(holder, (), settled=True)
            except BaseException:
                with self._handed_lock:  # tried again next time (or swept once we are gone)
                    self._settleable.extend(holders[index:])
                raise

    def _handed_deks(self, owners: set[str], generation: int) -> dict[str, bytes]:
        """Take the data keys of ``owners`` that :meth:`_keys_ahead` handed out (only while no
        shred happened since ``generation``, the key file's shred generation read by the caller
        just before: otherwise they are read from the key file like any key)."""
        if not self._handed:
            return {}
        with self._handed_lock:
            if generation != self._handed_generation:
                self._handed.clear()
                self._handed_generation = generation
                return {}
            return {o: self._handed.pop(o) for o in owners if o in self._handed}

    def _spare_back(self, owners: Sequence[str]) -> list[str]:
        """Keep the owners of ``owners`` that :meth:`_keys_ahead` handed out as spares; the
        others (pool keys) are returned."""
        if not self._handed:
            return list(owners)
        rest: list[str] = []
        with self._handed_lock:
            for owner in owners:
                dek = self._handed.pop(owner, None)
                if dek is None:
                    rest.append(owner)
                elif len(self._spare) < self._max_keys_ahead:
                    self._spare[owner] = dek
        return rest

    def _refill(self, make_owner: Callable[[], str], count: int) -> None:
        target = max(self._refill_size, count)  # count <= pool_size (reserve_owners)
        self._refill_size = min(self._pool_size, self._refill_size * 2)
        wanted = {make_owner() for _ in range(target - len(self._pool))}
        for owner in wanted:
            _check_name("owner", owner)
        if self._holder is None:
            # Once per process: its pool's keys name it, so a process that dies with ids in its
            # pool can have them removed after it is gone (sweep_unused), never before.
            self._holder = self._keys.register_holder(self._process)
        _, mine = self._insert_fresh(wanted, self._shred_refs(wanted), self._holder)
        for owner in sorted(wanted):
            # Another process storing a key for a fresh random owner meanwhile would be an id
            # collision: such an owner is simply not pooled.
            if owner in mine:
                self._pool.append((owner, AESGCM(mine[owner])))

    # -- encryption ------------------------------------------------------------------------

    def encrypt(self, owner: str, field: str, plaintext: bytes) -> bytes:
        """Encrypt one value; see :meth:`encrypt_many`."""
        return self.encrypt_many([(owner, field, plaintext)])[0]

    def encrypt_many(
        self, items: Sequence[tuple[str, str, bytes]], *, new_owners: Collection[str] = ()
    ) -> list[bytes]:
        """Encrypt ``(owner, field, plaintext)`` items; returns one blob per item, in order.

        Owners without a data key get one, all in one key-store transaction (set-based), before
        anything is encrypted. Raises :class:`DataKeyDestroyedError` (encrypting nothing) if any
        owner was shredded: an erased anchor never gets new data.

        ``new_owners``: owners the caller has just made (fresh random ids, such as the nodes an
        ingest batch creates): their keys are not looked up in the key file first, only made
        (a key stored meanwhile under the same id would still win, see ``insert_new``).
        """
        if not items:
            return []
        owners = _check_items(items)
        # Read once, here, for both the keys made ahead and the DEK cache (each read its own:
        # two single-row reads per seal, e.g. per journal row of an asynchronous ingest). Both
        # are checked against a generation read just before they are used, as a decrypt's keys
        # are (decrypt_and_generation): a shred committed before this read empties both.
        generation = self._keys.shred_generation()
        handed = self._handed_deks(owners, generation)  # keys made ahead for this write
        ciphers: dict[str, AESGCM] = {}
        if len(handed) < len(owners):
            ciphers = self._ciphers(
                owners - handed.keys(), create=True, fresh=new_owners, generation=generation
            )
        # Random 96-bit nonces from the OS CSPRNG, drawn in one call. Each DEK encrypts the
        # values of one anchor only, orders of magnitude below the 2**32 messages per key at
        # which random GCM nonces start to risk a collision.
        nonces = os.urandom(NONCE_BYTES * len(items))
        out: list[bytes] = []
        last: str | None = None
        cipher: AESGCM | None = None
        for index, (owner, field, plaintext) in enumerate(items):
            if owner != last or cipher is None:
                # A key made ahead gets its AES-GCM context here, used for the owner's
                # consecutive values and dropped: a bulk batch seals ~20,000 such owners, mostly
                # one value each, and building a dict of 20,000 contexts first (~2.4 KiB each)
                # cost 1.3-1.9 us more per value than making and using each one at once.
                dek = handed.get(owner)
                cipher = AESGCM(dek) if dek is not None else ciphers[owner]
                last = owner
            nonce = nonces[index * NONCE_BYTES : (index + 1) * NONCE_BYTES]
            sealed = cipher.encrypt(nonce, plaintext, _value_aad(owner, field))
            out.append(_VERSION_BYTE + nonce + sealed)
        return out

    def decrypt(self, owner: str, field: str, blob: bytes) -> bytes:
        """Decrypt one value; see :meth:`decrypt_many`."""
        return self.decrypt_many([(owner, field, blob)])[0]

    def decrypt_many(self, items: Sequence[tuple[str, str, bytes]]) -> list[bytes]:
        """Decrypt ``(owner, field, blob)`` items; returns the plaintexts, in order.

        All or nothing: raises :class:`DataKeyDestroyedError` (naming every owner of the batch
        without a key) or :class:`TamperedCiphertextError` (the first value that fails
        authentication) and returns no plaintext at all.
        """
        # One code path with decrypt_and_generation; an empty batch reads nothing at all.
        return self.decrypt_and_generation(items)[0] if items else []

    def decrypt_and_generation(
        self, items: Sequence[tuple[str, str, bytes]]
    ) -> tuple[list[bytes], int]:
        """:meth:`decrypt_many`, and the key file's shred generation its keys were checked
        against (read first, as there; read even when ``items`` is empty).

        For a caller that needs the generation again right after (a profile read: the audit
        log's reference lookup for the person, :meth:`privacy.auditing.log.AuditLog.record_about`,
        checks its cache against it): one key-file query per read instead of two. Erasure is
        not weakened: the plaintexts are checked against a generation read before them, as
        always (a shred seen by then fails the call, :class:`DataKeyDestroyedError`), and a
        reference looked up as of that generation is the person's reference at the time its
        data was read.
        """
        generation = self._keys.shred_generation()
        return (self._decrypt(items, generation) if items else []), generation

    def decrypt_readable(self, items: Sequence[tuple[str, str, bytes]]) -> list[bytes | None]:
        """:meth:`decrypt_many`, except that an item whose owner has no data key (shredded, or
        never created) gives ``None`` instead of failing the whole batch.

        For reads over many persons (an audience page, an export chunk): one person whose keys
        were shredded must not make the page of everyone else unreadable, and the caller must
        learn *which* values are gone to withhold that person whole (fail closed for that person
        only). Same single pass over the key file as :meth:`decrypt_many`, and the same checks:
        the keys are checked against the shred generation read first, and a value or wrapped key
        that fails authentication still raises :class:`TamperedCiphertextError` (tampering is
        not the expected "no longer readable" state, and is never folded into it).
        """
        if not items:
            return []
        generation = self._keys.shred_generation()
        return self._decrypt(items, generation, missing_ok=True)

    @overload
    def _decrypt(
        self,
        items: Sequence[tuple[str, str, bytes]],
        generation: int,
        *,
        missing_ok: Literal[False] = False,
    ) -> list[bytes]: ...

    @overload
    def _decrypt(
        self, items: Sequence[tuple[str, str, bytes]], generation: int, *, missing_ok: bool
    ) -> list[bytes | None]: ...

    def _decrypt(
        self,
        items: Sequence[tuple[str, str, bytes]],
        generation: int,
        *,
        missing_ok: bool = False,
    ) -> list[bytes] | list[bytes | None]:
        """:meth:`decrypt_many` of a non-empty batch, its keys checked against ``generation``
        (the key file's shred generation, read just before). ``missing_ok``: an item whose
        owner has no key gives ``None`` (:meth:`decrypt_readable`) instead of raising."""
        ciphers = self._ciphers(
            _check_items(items), create=False, generation=generation, missing_ok=missing_ok
        )
        out: list[bytes | None] = []
        for index, (owner, field, blob) in enumerate(items):
            cipher = ciphers.get(owner)
            if cipher is None:  # only with missing_ok: _ciphers raised otherwise
                out.append(None)
                continue
            if len(blob) < _HEADER + TAG_BYTES:
                raise TamperedCiphertextError(owner, field, index, "value is truncated")
            if blob[0] != VERSION:
                raise TamperedCiphertextError(owner, field, index, "unknown format version")
            nonce, sealed = blob[1:_HEADER], blob[_HEADER:]
            try:
                out.append(cipher.decrypt(nonce, sealed, _value_aad(owner, field)))
            except InvalidTag:
                raise TamperedCiphertextError(
                    owner,
                    field,
                    index,
                    "failed authentication (altered, or stored under another owner or field)",
                ) from None
        return out

    # -- key lifecycle ---------------------------------------------------------------------

    def owners_starting(self, prefix: str, limit: int = 1000) -> list[str]:
        """Up to ``limit`` owners that hold a data key and whose id starts with ``prefix``, in
        order: named owners (the ingest journal's day keys, ``ingestjournal-YYYYMMDD``) whose
        keys are shredded once nothing sealed under them is needed. Random owners (``n_...``,
        ``aref:...``) are never listed this way."""
        _check_name("owner", prefix)
        return self._keys.owners_starting(prefix, limit)

    def shred(self, owners: Collection[str]) -> int:
        """Destroy the data keys of ``owners`` (crypto-shredding); returns how many existed.

        One transaction deletes every key (with ``secure_delete`` their bytes are zeroed in the
        file), records the owners as shredded and bumps the shred generation (other processes'
        vaults drop their caches on their next call); this vault's cache drops them now; the WAL
        is then checkpointed and truncated so no old page image keeps the key bytes. Raises
        :class:`ShredIncompleteError` if another connection's reader prevents the truncation (the
        keys are destroyed all the same; retry :meth:`VaultKeyStore.checkpoint`).
        """
        wanted = sorted(set(owners))
        if not wanted:
            return 0
        for owner in wanted:
            _check_name("owner", owner)
        destroyed, generation = self._keys.delete_many(wanted, self._shred_refs(wanted))
        # Data keys: with no other shred since the cache was last validated, dropping ours is
        # enough; otherwise the cache empties (BoundedMap.advance).
        self._cache.advance(generation, wanted)
        if not self._keys.checkpoint():
            raise ShredIncompleteError(destroyed)
        return destroyed

    def rewrap(
        self, batch_size: int = 1000, progress: Callable[[int], None] | None = None
    ) -> RewrapReport:
        """Re-wrap every data key that is not under ``provider.current_kek_id`` (KEK rotation).

        Works in batches of ``batch_size`` keys, one transaction each; ``progress`` is called
        after each committed batch with the number re-wrapped so far in this run. Safe to
        interrupt and resumable: it only ever selects keys still under an old KEK, so a rerun
        picks up where the last one stopped. Only 32-byte DEKs are re-wrapped; no value is
        re-encrypted, and cached DEKs stay valid (the DEK itself does not change). A key
        shredded meanwhile is never written back (compare-and-set).
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        current = self._provider.current_kek_id
        already = self.count_by_kek().get(current, 0)
        rewrapped = batches = 0
        after = ""  # owner ids are never empty, so "" sorts before every owner
        while batch := self._keys.not_under(current, after, batch_size):
            after = batch[-1][0]
            updates = []
            for owner, old in batch:
                dek = self._unwrap(owner, old)
                updates.append((owner, old, self._provider.wrap(dek, _dek_aad(owner))))
            # The reference root key moves too, but it is not a data key: not counted.
            reserved = [u for u in updates if u[0] == REFS_OWNER]
            if reserved:
                self._keys.replace_wrapped(reserved)
            rewrapped += self._keys.replace_wrapped([u for u in updates if u[0] != REFS_OWNER])
            batches += 1
            if progress is not None:
                progress(rewrapped)
        return RewrapReport(current, rewrapped, already, batches)

    def checkpoint(self) -> bool:
        """Fold the key file's WAL and truncate it (what a shred ends with); ``False`` if a
        reader blocked it, so the caller retries (see :class:`ShredIncompleteError`)."""
        return self._keys.checkpoint()

    def count_by_kek(self) -> dict[str, int]:
        """Number of data keys under each KEK (all under the current one after a rewrap); the
        reference root key is not a data key and is not counted (rotation moves it all the same).
        """
        return self._keys.count_by_kek(include_reserved=False)

    def retire_old_keks(
        self, batch_size: int = 1000, progress: Callable[[int], None] | None = None
    ) -> RetireReport:
        """Retire every KEK but the provider's current one, safely against concurrent writers.

        1. List every other KEK (those wrapping a data key and those the provider holds) as
           retired in the key file, in one transaction. From then on no process can store a key
           under them: a writer that still wraps under an old KEK is refused, reloads its
           provider and wraps again under the new primary (:meth:`_load`).
        2. Re-wrap what is still under them (:meth:`rewrap`); nothing new can appear there.
        3. Count again; raise :class:`KekRetirementIncompleteError` if any key is left.

        Only then may the caller remove the retired KEKs from the provider. Resumable: rerun it
        after any failure.
        """
        self._provider.reload()
        current = self._provider.current_kek_id
        if current in self._keys.retired():
            raise ConfigurationError(
                f"the provider's primary KEK {current!r} is itself retired; rotate to a new KEK "
                "(was an old KEK file restored?)"
            )
        old = (self._keys.kek_ids_in_use() | set(self._provider.kek_ids)) - {current}
        if old:
            self._keys.retire(old)
        report = self.rewrap(batch_size, progress)
        left = {k: n for k, n in self._keys.count_by_kek().items() if k != current}
        if left:
            raise KekRetirementIncompleteError(left)
        return RetireReport(current, tuple(sorted(old)), report.rewrapped)

    def check_keks(self) -> None:
        """Refuse to start unless the provider holds every KEK a data key is wrapped under and
        its primary KEK is not retired. Without this a missing KEK shows up only when a read of
        that person fails, long after the backup that still had it may be gone."""
        current = self._provider.current_kek_id
        if current in self._keys.retired():
            raise ConfigurationError(
                f"the primary KEK {current!r} was retired by an earlier rotation; an old KEK "
                "file was probably restored. Restore the current KEK file."
            )
        missing = sorted(k for k in self._keys.kek_ids_in_use() if not self._provider.holds(k))
        if missing:
            counts = self._keys.count_by_kek()
            listed = ", ".join(f"{k} ({counts.get(k, 0)} data keys)" for k in missing)
            raise ConfigurationError(
                f"data keys are wrapped under KEK(s) the key provider does not hold: {listed}. "
                "Refusing to start: restore the KEK file (or provider configuration) that holds "
                "them; starting anyway would make every value under them unreadable."
            )

    # -- internals -------------------------------------------------------------------------

    def _unwrap(self, owner: str, wrapped: WrappedKey) -> bytes:
        try:
            try:
                return self._provider.unwrap(wrapped, _dek_aad(owner))
            except KekNotFoundError:
                # Another process rotated and re-wrapped this key under a KEK we have not loaded.
                self._provider.reload()
                return self._provider.unwrap(wrapped, _dek_aad(owner))
        except WrappedKeyInvalidError:
            raise TamperedDataKeyError(owner) from None

    def _insert_fresh(
        self,
        missing: set[str],
        shred_refs: Mapping[str, str],
        holder: int | None = None,
        *,
        insert: _InsertKeys | None = None,
    ) -> tuple[dict[str, WrappedKey], dict[str, bytes]]:
        """Make, wrap and store keys for ``missing``; returns what is stored and our DEKs.
        ``insert`` stores the rows instead of :meth:`VaultKeyStore.insert_new` (keys ahead).

        If the key file refuses the wrap's KEK as retired (a rotation is under way elsewhere),
        the provider reloads and the keys are wrapped again under the new primary.
        """
        for attempt in range(_WRAP_ATTEMPTS):
            owners = sorted(missing)
            # 32 bytes from the OS CSPRNG per owner: a full-strength AES-256 key, unique per
            # anchor (drawn in one call for the batch, then cut).
            pool = secrets.token_bytes(DEK_BYTES * len(owners))
            deks = [pool[i : i + DEK_BYTES] for i in range(0, len(pool), DEK_BYTES)]
            # Zipped and mapped rather than built item by item: a bulk batch makes ~20,000
            # keys here, on the thread that reads the file (stop 37: the per-key comprehensions
            # were ~3 % of that thread).
            wrapped = self._provider.wrap_many(list(zip(deks, map(_dek_aad, owners), strict=True)))
            rows = list(zip(owners, wrapped, strict=True))
            try:
                if insert is None:
                    stored = self._keys.insert_new(rows, shred_refs, holder)
                else:
                    stored = insert(rows)
            except KekRetiredError:
                if attempt == _WRAP_ATTEMPTS - 1:
                    raise
                self._provider.reload()
                continue
            if all(map(operator.is_, map(stored.__getitem__, owners), wrapped)):
                return stored, dict(zip(owners, deks, strict=True))  # every key is ours
            mine = {
                o: dek
                for o, w, dek in zip(owners, wrapped, deks, strict=True)
                if stored[o] is w or stored[o] == w
            }
            return stored, mine
        raise AssertionError("unreachable")  # pragma: no cover

    def _ciphers(
        self,
        owners: set[str],
        *,
        create: bool,
        fresh: Collection[str] = (),
        generation: int | None = None,
        missing_ok: bool = False,
    ) -> dict[str, AESGCM]:
        """AES-GCM contexts for ``owners``: cached, else unwrapped from the key file, else (with
        ``create``) made. Raises :class:`DataKeyDestroyedError` for owners without a key, or,
        with ``missing_ok`` (a read only), leaves them out of the answer.

        The shred generation is read first, with one single-row query: if any connection has
        shredded since the cache was validated, the cache is emptied, so a shred made by another
        process takes effect here on the next call. Keys read after that point are cached only
        if no shred happened meanwhile. ``generation``: that read, made by the caller just
        before (:meth:`decrypt_and_generation`).
        """
        if generation is None:
            generation = self._keys.shred_generation()
        # Only forward: a call that read the generation before a concurrent call saw a newer
        # one does not roll the cache's validity back (BoundedMap.get_many).
        ciphers = self._cache.get_many(owners, generation=generation)
        if len(ciphers) < len(owners):
            loaded = self._load(
                owners - ciphers.keys(), create=create, fresh=fresh, missing_ok=missing_ok
            )
            ciphers.update(loaded)
            # Not cached if a shred happened while these were loaded.
            self._cache.put_many(loaded.items(), generation=generation)
        return ciphers

    def _load(
        self,
        owners: set[str],
        *,
        create: bool,
        fresh: Collection[str] = (),
        missing_ok: bool = False,
    ) -> dict[str, AESGCM]:
        # Fresh owners (just made by the caller) have no key to read: only the others are
        # looked up. Only with ``create``: a read must find every key it needs (or, with
        # ``missing_ok``, answers without the owners that have none).
        known = owners.difference(fresh) if create and fresh else owners
        rows = self._keys.get_many(known) if known else {}
        missing = owners - rows.keys()
        if missing and not create:
            if not missing_ok:
                raise DataKeyDestroyedError(missing)
            missing = set()
        made: dict[str, AESGCM] = {}
        if missing:
            stored, mine = self._insert_fresh(missing, self._shred_refs(missing))
            for owner in missing:
                if owner in mine:
                    made[owner] = AESGCM(mine[owner])  # ours: no need to unwrap what we wrapped
                else:
                    rows[owner] = stored[owner]  # another process won the race; use its key
        for owner, wrapped in rows.items():
            made[owner] = AESGCM(self._unwrap(owner, wrapped))
        return made
