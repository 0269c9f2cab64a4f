"""Audience-membership change events: through the policy engine, audited, pseudonymous only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bootstrap.container import Container
from identity import outbound
from identity.model import ConsentInput, ConsentSignal, FactInput, FactKind, IdentityEvent
from privacy.access.audiences import AudienceRules
from privacy.access.policy_engine import Caller
from tests.conftest import REPO
from tests.support.containers import opened_container

NOW = datetime.now(UTC)


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    with opened_container(tmp_path / "data", outbound_events=True) as built:
        yield built


def _ingest(container: Container, email: str, *, city: str | None, granted: bool | None) -> str:
    at = NOW - timedelta(hours=1)
    facts = (
        (FactInput(FactKind.ATTRIBUTE, "city", "location", at, json.dumps(city).encode()),)
        if city is not None
        else ()
    )
    consents = (
        (ConsentInput("ad_targeting", granted, at, ConsentSignal.DIRECT, "consent", "0" * 64),)
        if granted is not None
        else ()
    )
    ids = (container.identity_policy.normalize("email", email, "GB"),)
    (outcome,) = container.engine.ingest([IdentityEvent(ids, "test", at, facts, consents)])
    assert outcome.person_id is not None
    return outcome.person_id


def _changes(container: Container) -> list[dict[str, Any]]:
    """The audience events in the outbox (removed, as the relay would after publishing)."""
    page = container.store.read(lambda tx: tx.outbound_page(1000))
    container.store.write(lambda tx: tx.delete_outbound([e.event_id for e in page]))
    return [json.loads(e.payload) for e in page if e.kind == outbound.AUDIENCE_MEMBERSHIP]


def test_members_who_join_and_leave_an_audience_are_published_by_consumer_pseudonym(
    container: Container,
) -> None:
    ann = _ingest(container, "ann@aud.example", city="Lisbon", granted=True)
    _ingest(container, "bo@aud.example", city="Lisbon", granted=None)  # never consented
    owner = Caller("key-1", frozenset({"ad_targeting"}), "dsp-one")
    audience = container.reads.define_audience(
        owner,
        "lisbon",
        "ad_targeting",
        AudienceRules.from_json(
            {"attributes": [{"attribute": "city", "op": "eq", "value": "Lisbon"}]}
        ),
    )
    _changes(container)  # the consent events of the set-up

    first = container.audience_changes.run_once()
    assert (first.audiences, first.joined, first.left) == (1, 1, 0)
    (joined,) = _changes(container)
    schema = json.loads(
        (REPO / "docs/schemas/events/audience.membership.changed.v1.json").read_text()
    )
    jsonschema.validate(joined, schema)
    pseudonym = container.pseudonyms.pseudonym("dsp-one", ann)
    assert (joined["member_id"], joined["change"], joined["consumer"]) == (
        pseudonym,
        "joined",
        "dsp-one",
    )
    assert ann not in json.dumps(joined)  # never the person id
    # Nothing changed: nothing written.
    assert container.audience_changes.run_once().joined == 0
    assert _changes(container) == []

    # Ann withdraws; Cy joins.
    _ingest(container, "ann@aud.example", city=None, granted=False)
    _ingest(container, "cy@aud.example", city="Lisbon", granted=True)
    second = container.audience_changes.run_once()
    assert (second.joined, second.left) == (1, 1)
    changes = {(c["change"], c["member_id"]) for c in _changes(container)}
    assert ("left", pseudonym) in changes
    assert len(changes) == 2

    # Every pass read the members through the policy engine and is audited as a member read.
    reads = [
        e
        for e in container.audit.entries(limit=10_000)
        if e.action == "read.audience" and e.details.get("changes") is True
    ]
    assert reads
    assert {e.actor for e in reads} == {"system:audience-events"}
    assert any(e.details.get("denied_no_consent") for e in reads)
    assert audience.audience_id in json.dumps([dict(e.details) for e in reads])


def test_an_erased_member_leaves_and_their_queued_join_is_dropped(container: Container) -> None:
    dee = _ingest(container, "dee@aud.example", city="Porto", granted=True)
    owner = Caller("key-2", frozenset({"ad_targeting"}), "dsp-two")
    container.reads.define_audience(
        owner,
        "porto",
        "ad_targeting",
        AudienceRules.from_json(
            {"attributes": [{"attribute": "city", "op": "eq", "value": "Porto"}]}
        ),
    )
    _changes(container)
    container.audience_changes.run_once()  # dee joins; the event waits in the outbox
    container.erasure.erase(
        [container.identity_policy.normalize("email", "dee@aud.example", None)], "r-9", "cli"
    )
    queued = container.store.read(lambda tx: tx.outbound_page(1000))
    assert [e.kind for e in queued] == [outbound.PERSON_ERASED]
    assert dee not in json.dumps([e.payload for e in queued if e.kind != outbound.PERSON_ERASED])
    report = container.audience_changes.run_once()
    assert (report.joined, report.left) == (0, 1)
