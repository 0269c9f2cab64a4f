"""The message-id window (issue 13, finding 5): one window for every ingest path, on every backend.

The engine forgets ids older than the window inside the ingest transaction, so the window holds
exactly without a scheduler. Runs on SQLite and, with ``NEO4J_URI``, on Neo4j.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from identity.hashing import Keyring
from identity.model import FactInput, FactKind, FactStatus, IdentityEvent, Outcome
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store.port import GraphStore
from privacy.keys.vault import Vault
from tests.conftest import Ids

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _engine(
    store: GraphStore, keyring: Keyring, policy: IdentityPolicy, vault: Vault, days_later: float
) -> ResolutionEngine:
    # The store stamps ids with the real time; the engine's clock says how much later it is.
    later = datetime.now(UTC) + timedelta(days=days_later)
    return ResolutionEngine(
        store,
        keyring,
        policy,
        clock=lambda: later,
        sealer=vault,
        message_window=timedelta(days=7),
    )


def _purchase(ids: Ids, message_id: str) -> IdentityEvent:
    return IdentityEvent(
        (ids("email", "win@window.example"),),
        "web",
        T0,
        facts=(FactInput(FactKind.EVENT, "purchase", "behaviour", T0, b"{}"),),
        message_id=message_id,
    )


def test_a_message_id_is_deduplicated_within_the_window_and_applied_again_after_it(
    store: GraphStore, keyring: Keyring, policy: IdentityPolicy, vault: Vault, ids: Ids
) -> None:
    now = _engine(store, keyring, policy, vault, 0)
    (first,) = now.ingest([_purchase(ids, "order-1")])
    assert first.outcome is Outcome.CREATED
    person = first.person_id or ""
    inside = _engine(store, keyring, policy, vault, 6.9)
    assert [o.outcome for o in inside.ingest([_purchase(ids, "order-1")])] == [Outcome.DUPLICATE]

    def purchases() -> int:
        return len(
            store.read(lambda tx: tx.person_facts(person, [FactKind.EVENT], FactStatus.ACTIVE))
        )

    assert purchases() == 1
    after = _engine(store, keyring, policy, vault, 7.1)
    (again,) = after.ingest([_purchase(ids, "order-1")])
    assert again.outcome is Outcome.UNCHANGED  # applied again: the id was forgotten
    assert purchases() == 2
    # ... and remembered afresh (stamped with the store's time): a resend is a duplicate again.
    assert [o.outcome for o in now.ingest([_purchase(ids, "order-1")])] == [Outcome.DUPLICATE]
    assert purchases() == 2


def test_without_a_window_message_ids_are_kept_until_forgotten(
    store: GraphStore, keyring: Keyring, policy: IdentityPolicy, vault: Vault, ids: Ids
) -> None:
    engine = ResolutionEngine(
        store, keyring, policy, clock=lambda: datetime.now(UTC) + timedelta(days=400), sealer=vault
    )
    engine.ingest([_purchase(ids, "order-2")])
    assert [o.outcome for o in engine.ingest([_purchase(ids, "order-2")])] == [Outcome.DUPLICATE]
