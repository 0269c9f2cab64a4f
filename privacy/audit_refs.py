"""Per-person audit references, stored in the vault key file and shredded by erasure.

The audit log names a person by a reference ``r_`` + 24 hex
(:func:`privacy.auditing.log.person_ref`). With one shared key, anyone holding that key and a
person id (a downstream tool keeps the ids it was sent) could find every entry about the person,
erased or not. So each person's reference exists only as long as something of that person's in
the vault key file:

* **Version 2 (since stop 33):** a person's reference is 96 random bits, stored in the key file
  (``stored_refs``, :meth:`privacy.keys.vault.Vault.owner_refs`) with a tag under a vault
  subkey. An erasure deletes the row in the same shred as the person's identifier keys
  (:mod:`privacy.dsr.erasure`; secure_delete, WAL truncated): the reference was random, so
  from then on nobody, with the KEK and every file, can compute it, and the erased person's
  entries cannot be linked to its id any more.
* **Version 1 (before):** the reference was HMAC(HKDF-SHA256 of a vault data key that exists
  for that person alone, person id). A person with such a key gets that same reference the
  first time it is asked for now, and it is stored like a version-2 one: an access request
  (``mentioning()``) still finds the entries written before. The data key stays, and is shredded
  by an erasure as before.

Why the change: a cold audience at 1M persons needed a key-file lookup, an unwrap, an HKDF and
two HMACs per member (~19 us, ~0.48 s for ~25k members); a stored reference is one lookup and
a tag check, and a first-ever audience stores ~25k short rows instead of making, wrapping and
storing ~25k data keys.

The vault owner of a person's reference (and version-1 key) is not the person id but ``aref:``
+ 32 hex of an HMAC of it under a vault reference subkey: the key file lists owners in clear,
and must not list person ids. Without the KEK nobody can compute an owner from a person id, so
the stored references link no person id to its audit entries without the KEK, as before.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from typing import Final

from identity.bounded import BoundedMap
from identity.hashing import HmacSha256
from privacy.auditing.log import person_ref
from privacy.keys.vault import Vault

OWNER_INFO: Final = b"idgraph-audit-person-ref-owner/1"
KEY_INFO: Final = b"idgraph-audit-person-ref-key/1"
OWNER_PREFIX: Final = "aref:"
# How many persons' references are remembered (a warm 1M audience has ~25k members); ~200 B an
# entry, ~20 MiB at most.
DEFAULT_OWNER_CACHE_SIZE: Final = 100_000


def _random_refs(count: int) -> Iterator[str]:
    """``count`` version-2 references (``r_`` + 24 hex: 96 bits each) from one read of the OS
    CSPRNG (:func:`secrets.token_bytes`): the slices of one random string are as independent
    as separate reads."""
    raw = secrets.token_bytes(12 * count).hex()
    return ("r_" + raw[start : start + 24] for start in range(0, len(raw), 24))


class VaultPersonRefKeys:
    """Implements :class:`privacy.auditing.log.PersonRefKeys` with references stored in the vault
    key file (version 2; version-1 references derived from per-person data keys are kept)."""

    def __init__(self, vault: Vault, owner_cache_size: int = DEFAULT_OWNER_CACHE_SIZE) -> None:
        self._vault = vault
        # Pads hashed once (HmacSha256, the same digests as hmac.digest): an audience page names
        # up to thousands of persons, each needing its owner on a cold read (about 1 us a person
        # instead of 2-5 us for a one-shot hmac.digest, measured).
        self._owner_mac = HmacSha256(vault.reference_key(OWNER_INFO))
        # person id -> reference, valid for the key file's shred generation: a shred anywhere
        # (this process or another on the same key file) empties it, and a reference read before
        # a shred is never remembered after it (BoundedMap's generation). Why: a warm audience
        # re-reads ~25k references page by page. Plain str values: untracked by the collector.
        self._refs: BoundedMap[str, str] = BoundedMap(owner_cache_size)

    def _owner(self, person_id: str) -> str:
        return OWNER_PREFIX + self._owner_mac.digest(person_id.encode()).hex()[:32]

    def owners(self, person_ids: Sequence[str]) -> list[str]:
        """The vault owners of ``person_ids``' references and keys (for an erasure, which shreds
        them: their remembered references are dropped as well)."""
        self._refs.drop(person_ids)
        return sorted({self._owner(p) for p in person_ids})

    def refs(
        self, person_ids: Sequence[str], *, create: bool = True, generation: int | None = None
    ) -> dict[str, str]:
        """Each person's reference (made and stored on first use when ``create``); erased
        persons' references are never made again, and are absent (as are, without ``create``,
        persons that have none yet). ``generation``: the key file's shred generation a caller
        read just before (a profile read's, with its decrypt), else it is read here."""
        if generation is None:
            generation = self._vault.shred_generation()
        found = self._refs.get_many(person_ids, generation=generation)
        if len(found) == len(set(person_ids)):
            return found
        mac, prefix = self._owner_mac.digest, OWNER_PREFIX  # _owner, inlined (per member)
        owners = {prefix + mac(p.encode())[:16].hex(): p for p in person_ids if p not in found}

        fresh: Iterator[str] = iter(())

        def make(owner: str, subkey: bytes | None) -> str:
            nonlocal fresh
            if subkey is None:
                # Version 2: 96 random bits from the OS CSPRNG, nothing to derive it from, so
                # nothing can recompute it once the stored row is shredded. One CSPRNG read for
                # every owner that may need one, on the first that does (a first-ever 1M
                # audience makes ~25k: a read each cost three times as much CPU).
                ref = next(fresh, None)
                if ref is None:
                    fresh = _random_refs(len(owners))
                    ref = next(fresh)
                return ref
            return person_ref(owners[owner], subkey)  # version 1: the reference made before

        stored = self._vault.owner_refs(owners, KEY_INFO, make, create=create)
        made = {owners[o]: ref for o, ref in stored.items()}  # no pair per member kept
        found.update(made)
        # Kept only if no shred happened since the generation was read.
        self._refs.put_many(made.items(), generation=generation)
        return found
