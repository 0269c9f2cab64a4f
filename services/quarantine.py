"""Review of values the PII scanner quarantined: list, reveal, release, drop.

A quarantined fact is stored sealed and is invisible to every read until an operator releases
it. Reviewing one means looking at it, so **revealing a value is itself audited**
(``quarantine.revealed``, with the fact id and the operator): a value is never shown as a side
effect of listing. Release and drop are audited too. Listing shows ids, field, category and the
entity types found, never values. Used by the console and the CLI alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from identity.errors import IdGraphError
from identity.model import Fact, FactStatus
from identity.store.port import GraphStore
from privacy.access.policy_engine import ReadDenied
from privacy.auditing.log import AuditDraft, AuditLog
from privacy.keys.vault import Vault

MAX_LIST = 10_000
_FACT_ID = re.compile(r"f_[0-9a-f]{24}")


class QuarantinedFactNotFoundError(IdGraphError):
    """No quarantined value with that id (already released, dropped or erased)."""

    code = "quarantined-fact-not-found"

    def __init__(self) -> None:
        super().__init__("no quarantined value with that id")


class QuarantinedValueUnreadableError(IdGraphError):
    """The quarantined value's data key was destroyed (shredded): it can never be shown."""

    code = "quarantined-value-unreadable"

    def __init__(self) -> None:
        super().__init__("the value can no longer be read: its data key was destroyed")


@dataclass(frozen=True, slots=True)
class RevealedValue:
    """A quarantined value shown to a reviewer (after an audited reveal)."""

    fact: Fact
    value: Any


class QuarantineReview:
    """List, reveal (audited), release and drop quarantined values."""

    def __init__(self, store: GraphStore, vault: Vault, audit: AuditLog) -> None:
        self._store = store
        self._vault = vault
        self._audit = audit

    def pending(self, limit: int = 100, after: str = "") -> list[Fact]:
        """Quarantined values in id order (sealed: no value is decrypted here)."""
        if not 1 <= limit <= MAX_LIST:
            raise ValueError(f"limit must be between 1 and {MAX_LIST}")
        return self._store.read(lambda tx: tx.facts_page(FactStatus.QUARANTINED, after, limit))

    def _find(self, fact_id: str) -> Fact:
        if not _FACT_ID.fullmatch(fact_id):
            raise QuarantinedFactNotFoundError
        found = self._store.read(
            lambda tx: tx.facts_page(FactStatus.QUARANTINED, _before(fact_id), 1)
        )
        if not found or found[0].fact_id != fact_id:
            raise QuarantinedFactNotFoundError
        return found[0]

    def reveal(self, actor: str, fact_id: str) -> RevealedValue:
        """Decrypt one quarantined value for review; the reveal is audited before the value is
        returned. A value whose data key was shredded while the graph still holds it is never
        shown: the attempt is audited as a denial (``data_keys_destroyed``) and
        :class:`QuarantinedValueUnreadableError` raised (a 410 in the console, not a 500)."""
        fact = self._find(fact_id)
        (plain,) = self._vault.decrypt_readable([(fact.node_id, fact.seal_field, fact.sealed)])
        self._audit.append(
            [
                AuditDraft(
                    actor,
                    "quarantine.revealed",
                    decision="allow" if plain is not None else "deny",
                    reason="value revealed for review"
                    if plain is not None
                    else ReadDenied.DATA_KEYS_DESTROYED.value,
                    details={"fact": fact_id, "field": fact.seal_field, "pii": list(fact.pii)},
                )
            ]
        )
        if plain is None:
            raise QuarantinedValueUnreadableError
        return RevealedValue(fact, json.loads(plain))

    def release(self, actor: str, fact_ids: Sequence[str]) -> int:
        """Make quarantined values visible to reads; returns how many were released."""
        wanted = self._quarantined(fact_ids)
        changed = self._store.write(lambda tx: tx.set_fact_status(wanted, FactStatus.ACTIVE))
        self._record(actor, "quarantine.released", wanted, changed)
        return changed

    def drop(self, actor: str, fact_ids: Sequence[str]) -> int:
        """Delete quarantined values; returns how many were deleted."""
        wanted = self._quarantined(fact_ids)
        dropped = self._store.write(lambda tx: tx.delete_facts(wanted))
        self._record(actor, "quarantine.dropped", wanted, dropped)
        return dropped

    def _quarantined(self, fact_ids: Sequence[str]) -> list[str]:
        """Those of ``fact_ids`` that are quarantined now (active facts are never touched)."""
        found = []
        for fact_id in dict.fromkeys(fact_ids):
            try:
                found.append(self._find(fact_id).fact_id)
            except QuarantinedFactNotFoundError:
                continue
        return found

    def _record(self, actor: str, action: str, fact_ids: list[str], count: int) -> None:
        for start in range(0, max(len(fact_ids), 1), 100):  # the audit's list limit
            self._audit.append(
                [
                    AuditDraft(
                        actor,
                        action,
                        reason="quarantine review",
                        details={"facts": fact_ids[start : start + 100], "count": count},
                    )
                ]
            )


def _before(fact_id: str) -> str:
    """A string just below ``fact_id`` (ids are ``f_`` + hex), so a page after it starts there.

    ``f_…0`` becomes ``f_…/`` (the character before ``0``) and ``f_…a`` becomes ``f_…9``
    followed by ``~``: every id of the same shape sorts after it, none between it and ``fact_id``.
    """
    last = fact_id[-1]
    below = "9" if last == "a" else chr(ord(last) - 1)
    return fact_id[:-1] + below + "~"


__all__ = ["QuarantineReview", "QuarantinedFactNotFoundError", "RevealedValue"]
