"""Erasure (GDPR Art. 17): delete everything about a person, crypto-shred it, and make it stick.

Interface for the DSR layer (WIP: the store support lands next; until then :meth:`erase`
raises ``NotImplementedError``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from identity.hashing import Keyring
from identity.identifiers import NormalizedIdentifier
from identity.store.port import GraphStore
from privacy.audit import SqliteAuditLog
from privacy.vault import Vault


@dataclass(frozen=True, slots=True)
class ErasureResult:
    """What one erasure removed. Counts only: it is audited and returned to DSR callers."""

    persons_erased: int
    identifiers_erased: int
    facts_deleted: int
    consents_deleted: int
    links_deleted: int
    keys_shredded: int
    identifiers_suppressed: int


class ErasureService:
    """Erases the persons some identifiers resolve to; see the module docstring."""

    def __init__(
        self, store: GraphStore, vault: Vault, keyring: Keyring, audit: SqliteAuditLog
    ) -> None:
        self._store = store
        self._vault = vault
        self._keyring = keyring
        self._audit = audit

    def erase(
        self, identifiers: Sequence[NormalizedIdentifier], request_id: str, actor: str
    ) -> ErasureResult:
        """Erase every person ``identifiers`` resolve to and suppress the identifiers."""
        raise NotImplementedError("erasure store support is landing (issue 6); not usable yet")

    def recover(self) -> int:
        """Finish erasures interrupted after their graph commit; returns how many."""
        return 0
