"""Per-person audit reference keys, held by the vault and shredded by erasure.

The audit log names a person by ``r_`` + HMAC(key, person id)
(:func:`privacy.auditing.log.person_ref`).
With one shared key, anyone holding that key and a person id (a downstream tool keeps the ids it
was sent) could find every entry about the person, erased or not. So each person's references
are keyed with a key of its own: HKDF-SHA256 of a vault data key that exists for that person
alone. An erasure shreds that data key with the person's identifier keys
(:mod:`privacy.dsr.erasure`): from then on nobody, the operator included, can compute the reference,
and the erased person's entries cannot be linked to its id any more. The entries stay, and the
hash chain still verifies (it never needed a key).

The vault owner of a person's key is not the person id but ``aref:`` + 32 hex of an HMAC of it
under a vault reference subkey: the key file lists owners in clear, and must not list person ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from identity.bounded import BoundedMap
from identity.hashing import HmacSha256
from privacy.keys.vault import Vault

OWNER_INFO: Final = b"idgraph-audit-person-ref-owner/1"
KEY_INFO: Final = b"idgraph-audit-person-ref-key/1"
OWNER_PREFIX: Final = "aref:"
# How many persons' owners are remembered: as many as the vault's owner-subkey cache holds
# subkeys by default (privacy.keys.vault); ~200 B an entry, ~20 MiB at most.
DEFAULT_OWNER_CACHE_SIZE: Final = 100_000


class VaultPersonRefKeys:
    """Implements :class:`privacy.auditing.log.PersonRefKeys` with per-person vault data keys."""

    def __init__(self, vault: Vault, owner_cache_size: int = DEFAULT_OWNER_CACHE_SIZE) -> None:
        self._vault = vault
        # Pads hashed once (HmacSha256, the same digests as hmac.digest): an audience page names
        # up to thousands of persons, each needing its owner on every read (about 1 us a person
        # instead of 2-5 us for a one-shot hmac.digest, measured).
        self._owner_mac = HmacSha256(vault.reference_key(OWNER_INFO))
        # person id -> owner. The owner is a fixed function of the id (the HMAC above), so an
        # entry is never stale; whether the owner still has a key is asked of the vault on every
        # call (an erasure shreds it). Why: a warm audience re-read ~25k owners page by page.
        self._owners: BoundedMap[str, str] = BoundedMap(owner_cache_size)

    def _owner(self, person_id: str) -> str:
        return OWNER_PREFIX + self._owner_mac.digest(person_id.encode()).hex()[:32]

    def owners(self, person_ids: Sequence[str]) -> list[str]:
        """The vault owners of ``person_ids``' keys (for an erasure, which shreds them: their
        remembered owners are dropped as well)."""
        self._owners.drop(person_ids)
        return sorted({self._owner(p) for p in person_ids})

    def _owners_of(self, person_ids: Sequence[str]) -> dict[str, str]:
        found = self._owners.get_many(person_ids)
        if len(found) < len(person_ids):
            made = [(p, self._owner(p)) for p in person_ids if p not in found]
            found.update(made)
            self._owners.put_many(made)
        return found

    def keys(self, person_ids: Sequence[str], *, create: bool = True) -> dict[str, bytes]:
        """Each person's key (made on first use when ``create``); erased persons' keys are
        never made again."""
        owners = self._owners_of(person_ids)
        found = self._vault.owner_subkeys(set(owners.values()), KEY_INFO, create=create)
        return {p: found[o] for p, o in owners.items() if o in found}
