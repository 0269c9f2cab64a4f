"""Ingest naming an identifier whose data key was shredded while its node is still in the graph
(an operator's shred, an interrupted erasure, a graph backup restored after an erasure).

The vault never makes a new key for a shredded owner (shredding is irreversible), so such a node
can take no new sealed value. Ingest answers as for a suppressed identifier: that identifier is
refused (reason ``shredded``), the event's other identifiers are processed as usual, its facts go
to the next accepted identifier or are dropped, and nothing is half-written. Never a 500.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from bootstrap.container import build_container
from bootstrap.settings import Settings
from identity.model import FactKind, FactStatus
from privacy.access.api_keys import Scope
from services import bulk
from tests.conftest import TEST_STORE, Api

ANN = [{"type": "customer_id", "value": "C-shred-1"}, {"type": "cookie_id", "value": "ck-shred-1"}]


def _identify(api: Api, **extra: Any) -> Any:
    body = {"identifiers": extra.pop("identifiers", ANN), "source": "web", **extra}
    return api.client.post("/v1/identify", json=body, headers=api.ingest)


def _person(api: Api, identifier: dict[str, str]) -> str | None:
    response = api.client.post("/v1/resolve", json={"identifier": identifier}, headers=api.resolve)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    person: str = response.json()["person_id"]
    return person


def _shred_anchor(api: Api, identifier: dict[str, str]) -> str:
    """Shred the data key of the node of ``identifier`` (its graph left as it is)."""
    person = _person(api, identifier)
    assert person is not None
    nodes = api.container.store.read(lambda tx: tx.cluster(person)).nodes
    hub = next(n.node_id for n in nodes if n.hashed.type == identifier["type"])
    assert api.container.vault.shred([hub]) == 1
    return hub


def _facts(api: Api, person: str) -> list[Any]:
    kinds = (FactKind.ATTRIBUTE, FactKind.EVENT, FactKind.RAW_IDENTIFIER)
    return list(
        api.container.store.read(lambda tx: tx.person_facts(person, kinds, FactStatus.ACTIVE))
    )


def test_identify_refuses_a_shredded_anchor_with_a_reason_when_it_carries_traits(
    api: Api, log_stream: io.StringIO
) -> None:
    assert _identify(api, traits={"city": "Lisbon"}).status_code == 200
    hub = _shred_anchor(api, ANN[0])
    person = _person(api, ANN[0])
    assert person is not None
    before = len(_facts(api, person))

    response = _identify(api, traits={"city": "Porto"})

    assert response.status_code == 200, response.text
    body = response.json()
    refused = {r["pointer"]: r["reason"] for r in body["refused"]}
    assert refused["#/identifiers/0"] == "shredded"
    # The facts went to the next accepted identifier (the cookie's node), sealed under its key.
    assert body["facts"] == {"stored": 1, "quarantined": 0, "dropped": 0}
    facts = _facts(api, person)
    assert len(facts) == before + 1
    assert all(f.node_id != hub for f in facts[before:])
    opened = api.container.vault.decrypt_readable(
        [(f.node_id, f.seal_field, f.sealed) for f in facts]
    )
    assert b'"Porto"' in opened
    # The shredded node never got a key again.
    assert api.container.vault.decrypt_readable([(hub, "attribute:city", facts[0].sealed)]) == [
        None
    ]
    # The service's own log lines (a debug-level Neo4j driver logs its Bolt records itself).
    ours = [line for line in log_stream.getvalue().splitlines() if '"logger": "idgraph' in line]
    assert ours
    assert not [line for line in ours if "data-key-destroyed" in line or hub in line]


def test_identify_drops_the_facts_when_every_identifier_is_shredded(api: Api) -> None:
    only = [ANN[0]]
    assert _identify(api, identifiers=only, traits={"city": "Lisbon"}).status_code == 200
    _shred_anchor(api, ANN[0])
    person = _person(api, ANN[0])
    assert person is not None
    before = _facts(api, person)

    response = _identify(api, identifiers=only, traits={"city": "Porto"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["outcome"] == "refused"
    assert body["facts"]["dropped"] == 1
    assert [r["reason"] for r in body["refused"]] == ["shredded"]
    assert len(_facts(api, person)) == len(before)


def test_a_fact_less_event_naming_a_shredded_anchor_neither_links_it_nor_records_consent(
    api: Api,
) -> None:
    # No value would be sealed under the node, so the sealer never saw it: the old code linked
    # the new email to the shredded node's person and recorded the consent on that person.
    assert _identify(api, traits={"city": "Lisbon"}).status_code == 200
    _shred_anchor(api, ANN[0])
    person = _person(api, ANN[0])
    email = {"type": "email", "value": "fresh.shred@mailbox-shred.net"}

    linked = _identify(api, identifiers=[ANN[0], email])

    assert linked.status_code == 200, linked.text
    refused = {r["pointer"]: r["reason"] for r in linked.json()["refused"]}
    assert refused == {"#/identifiers/0": "shredded"}
    assert _person(api, email) not in (None, person)

    _, token = api.container.api_keys.create("cmp", frozenset({Scope.CONSENT}))
    consents = api.container.store.stats().consents
    consent = api.client.post(
        "/v1/consent",
        json={"identifiers": [ANN[0]], "decisions": {"analytics": True}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert consent.status_code == 200, consent.text
    assert consent.json()["recorded"] == []
    assert api.container.store.stats().consents == consents
    # The cookie (not shredded) still takes what is sent to it.
    assert _identify(api, identifiers=[ANN[1]]).json()["refused"] == []


def test_a_batch_with_a_shredded_anchor_applies_its_other_events_when_ingested(api: Api) -> None:
    assert _identify(api, traits={"city": "Lisbon"}).status_code == 200
    _shred_anchor(api, ANN[0])
    other = {"type": "email", "value": "other.shred@mailbox-shred.net"}
    events = [
        {"identifiers": [other], "source": "web", "traits": {"city": "Faro"}},
        {"identifiers": [ANN[0]], "source": "web", "traits": {"city": "Porto"}},
    ]
    response = api.client.post("/v1/ingest", json={"events": events}, headers=api.ingest)

    assert response.status_code == 200, response.text
    assert _person(api, other) is not None
    body = response.json()
    assert body["results"][1]["outcome"] == "refused"
    assert body["results"][1]["refused"][0]["reason"] == "shredded"


@pytest.mark.skipif(TEST_STORE == "neo4j", reason="the ingest journal lives in the SQLite file")
def test_an_async_job_is_applied_with_the_shredded_refusal_when_drained(settings: Settings) -> None:
    container = build_container(settings)
    try:
        # No lifespan (no applier thread): the test drains the journal itself.
        client = TestClient(create_app(container=container), raise_server_exceptions=False)
        _, token = container.api_keys.create("ingest", frozenset({Scope.INGEST}))
        key = {"Authorization": f"Bearer {token}"}
        event = {"identifiers": ANN, "source": "web", "traits": {"city": "Lisbon"}}
        assert client.post("/v1/identify", json=event, headers=key).status_code == 200
        _, resolver = container.api_keys.create("resolve", frozenset({Scope.RESOLVE}))
        found = client.post(
            "/v1/resolve",
            json={"identifier": ANN[0]},
            headers={"Authorization": f"Bearer {resolver}"},
        )
        person = found.json()["person_id"]
        nodes = container.store.read(lambda tx: tx.cluster(person)).nodes
        hub = next(n.node_id for n in nodes if n.hashed.type == ANN[0]["type"])
        assert container.vault.shred([hub]) == 1
        jobs = container.async_ingest
        assert jobs is not None

        accepted = client.post(
            "/v1/ingest",
            json={"events": [event]},
            headers=key | {"Prefer": "respond-async"},
        )
        assert accepted.status_code == 202, accepted.text
        assert jobs.apply_once() == 1

        job = client.get(accepted.headers["Location"], headers=key).json()
        assert job["status"] == "applied"
        assert job["results"][0]["refused"][0]["reason"] == "shredded"
        assert jobs.queued_events() == 0
    finally:
        container.close()


def test_a_bulk_file_reports_the_shredded_refusal_and_applies_its_other_rows(
    api: Api, tmp_path: Path
) -> None:
    assert _identify(api, traits={"city": "Lisbon"}).status_code == 200
    _shred_anchor(api, ANN[0])
    other = {"type": "email", "value": "bulk.shred@mailbox-shred.net"}
    rows = [
        {"identifiers": [ANN[0]], "source": "crm", "traits": {"city": "Porto"}},
        {"identifiers": [other], "source": "crm", "traits": {"city": "Faro"}},
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))

    report = bulk.ingest_file(api.container.ingest, path, actor="test")

    assert report.rows == 2
    assert report.rejected_rows == 0
    assert report.refusals[("customer_id", "shredded")] == 1
    assert report.outcomes["refused"] == 1
    assert report.outcomes["created"] == 1
    assert _person(api, other) is not None
