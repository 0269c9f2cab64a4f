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

import os
import secrets
import threading
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
        # References asked for ahead (refs_ahead): one worker thread, started on first use (in
        # this process: a forked child starts its own, the parent's thread is not in it), and
        # the persons of each request not known to be finished. Under _ahead_lock.
        self._ahead_lock = threading.Lock()
        self._worker: ThreadPoolExecutor | None = None
        self._worker_pid = 0
        self._ahead: list[tuple[frozenset[str], Future[dict[str, str]]]] = []
        self._closed = False

    def _owner(self, person_id: str) -> str:
        return OWNER_PREFIX + self._owner_mac.digest(person_id.encode()).hex()[:32]

    def owners(self, person_ids: Sequence[str]) -> list[str]:
        """The vault owners of ``person_ids``' references and keys (for an erasure, which shreds
        them: their remembered references are dropped as well)."""
        self._refs.drop(person_ids)
        return sorted({self._owner(p) for p in person_ids})

    def refs_ahead(self, person_ids: Sequence[str]) -> None:
        """Start reading or making (``create``) and storing ``person_ids``' references on a
        worker thread, and return at once: a later :meth:`refs` of any of them waits for that
        work and finds them remembered.

        Why: an audience page knows its members a chunk at a time, and the key-file work of a
        chunk's references (a lookup; on a first-ever read also an insert and an fsync'd commit,
        ~4 us a member, nearly all in SQLite, which runs without the GIL) then overlaps the
        page's next member read instead of following the whole scan. Nothing is weakened:
        :meth:`refs` hands out a reference only once it is durably stored (made here or there),
        so the audit entry naming it is still written after that. A reference made ahead for a
        person the page then leaves out (past its limit: the next page's first member) is the
        one that page would make.
        """
        wanted = frozenset(person_ids)
        if not wanted:
            return
        with self._ahead_lock:
            if self._closed:
                return
            if self._worker is None or self._worker_pid != os.getpid():
                self._worker = ThreadPoolExecutor(1, thread_name_prefix="audit-refs-ahead")
                self._worker_pid, self._ahead = os.getpid(), []
            work = self._worker.submit(self._refs_now, list(wanted), create=True)
            self._ahead = [(ids, f) for ids, f in self._ahead if not f.done()]
            self._ahead.append((wanted, work))

    def _wait_ahead(self, person_ids: Collection[str]) -> None:
        """Wait for the work ahead (:meth:`refs_ahead`) on any of ``person_ids``. Its errors
        are not raised here: the caller's own attempt makes what is still missing (and meets
        the error again, if it lasts)."""
        with self._ahead_lock:
            if self._worker_pid != os.getpid():
                return  # a forked child: the parent's worker and its work are not here
            self._ahead = [(ids, f) for ids, f in self._ahead if not f.done()]
            pending = [f for ids, f in self._ahead if not ids.isdisjoint(person_ids)]
        for future in pending:
            future.exception()  # waits for it

    def close(self) -> None:
        """Finish the work ahead and stop its worker; nothing is made ahead afterwards (each
        :meth:`refs` makes its own)."""
        with self._ahead_lock:
            self._closed = True
            worker, self._worker, self._ahead = self._worker, None, []
        if worker is not None and self._worker_pid == os.getpid():
            worker.shutdown(wait=True)

    def refs(self, person_ids: Sequence[str], *, create: bool = True) -> dict[str, str]:
        """Each person's reference (made and stored on first use when ``create``); erased
        persons' references are never made again, and are absent (as are, without ``create``,
        persons that have none yet)."""
        if self._ahead:  # some may be in the making ahead: wait for them (then remembered)
            self._wait_ahead(set(person_ids))
        return self._refs_now(person_ids, create=create)

    def _refs_now(self, person_ids: Sequence[str], *, create: bool) -> dict[str, str]:
        """:meth:`refs` without waiting for the work ahead (which is how that work runs)."""
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
        made = {owners[o]: ref for o, ref in stored.items()}
        found.update(made)
        # Kept only if no shred happened since the generation was read.
        self._refs.put_many(made.items(), generation=generation)
        return found
