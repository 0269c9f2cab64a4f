"""Audit-log helpers shared by tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from bootstrap.container import Container
from identity.model import ConsentInput, ConsentSignal, FactInput, FactKind, IdentityEvent
from privacy.audit_refs import VaultPersonRefKeys
from privacy.keys.vault import Vault

AUDIENCE_PURPOSE = "ad_targeting"


class CountingRefKeys:
    """The real per-person references (stored in the vault key file), counting how often the
    audit log asks for them: which persons, and whether one may be made."""

    def __init__(self, vault: Vault) -> None:
        self._keys = VaultPersonRefKeys(vault)
        self.calls: list[tuple[tuple[str, ...], bool]] = []

    def refs(
        self, person_ids: Sequence[str], *, create: bool = True, generation: int | None = None
    ) -> dict[str, str]:
        """The real references; the call is counted."""
        self.calls.append((tuple(person_ids), create))
        return self._keys.refs(person_ids, create=create, generation=generation)

    def owners(self, person_ids: Sequence[str]) -> list[str]:
        """The real owners (not counted)."""
        return self._keys.owners(person_ids)


def audience_buyers(container: Container, persons: int, consenting_every: int) -> list[str]:
    """``persons`` persons with two purchases in the last day, every ``consenting_every``-th of
    them with an ``ad_targeting`` grant (the others are left out by the consent filter): the
    buyers audience of the audit-reference tests. Their person ids, in ingest order."""
    now = datetime.now(UTC)
    policy = container.identity_policy
    events = []
    for i in range(persons):
        consents: tuple[ConsentInput, ...] = ()
        if i % consenting_every == 0:
            consents = (
                ConsentInput(
                    AUDIENCE_PURPOSE,
                    True,
                    now - timedelta(days=1),
                    ConsentSignal.DIRECT,
                    "c",
                    "0" * 64,
                ),
            )
        events.append(
            IdentityEvent(
                (policy.normalize("customer_id", f"AHEAD-{i:05d}", "GB"),),
                "test",
                now - timedelta(hours=1),
                tuple(
                    FactInput(
                        FactKind.EVENT,
                        "purchase",
                        "behavioural",
                        now - timedelta(hours=h),
                        b'{"properties":{}}',
                    )
                    for h in (2, 3)
                ),
                consents,
            )
        )
    ids: list[str] = []
    for start in range(0, len(events), 200):
        for outcome in container.engine.ingest(events[start : start + 200]):
            assert outcome.person_id is not None
            ids.append(outcome.person_id)
    return ids
