"""Traits and events through the real API: policy typing, PII actions, anchoring, encryption."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from identity.model import FactKind, FactStatus
from privacy.keys.vault import DataKeyDestroyedError, TamperedCiphertextError
from tests.conftest import Api

ANN = [{"type": "customer_id", "value": "C-1"}, {"type": "cookie_id", "value": "ck-1"}]
PHONE_TEXT = "call me on +44 20 7946 0958 please"
IBAN = "DE89 3704 0044 0532 0130 00"


def _identify(api: Api, **extra: Any) -> Any:
    body = {"identifiers": extra.pop("identifiers", ANN), "source": "web", **extra}
    return api.client.post("/v1/identify", json=body, headers=api.ingest)


def _person(api: Api, identifier: dict[str, str]) -> str:
    response = api.client.post("/v1/resolve", json={"identifier": identifier}, headers=api.resolve)
    assert response.status_code == 200, response.text
    person: str = response.json()["person_id"]
    return person


def _opened(
    api: Api, person: str, status: FactStatus = FactStatus.ACTIVE
) -> list[tuple[str, str, Any]]:
    kinds = (FactKind.ATTRIBUTE, FactKind.EVENT, FactKind.RAW_IDENTIFIER)
    facts = api.container.store.read(lambda tx: tx.person_facts(person, kinds, status))
    values = api.container.vault.decrypt_many([(f.node_id, f.seal_field, f.sealed) for f in facts])
    return [
        (f.kind.value, f.name, v.decode() if f.kind is FactKind.RAW_IDENTIFIER else json.loads(v))
        for f, v in zip(facts, values, strict=True)
    ]


def _files(api: Api) -> list[Path]:
    graph = Path(str(api.container.store.path))  # type: ignore[attr-defined]
    vault = api.container.settings.vault_keys_path
    return [p for base in (graph, vault) for p in (base, Path(f"{base}-wal")) if p.exists()]


def _assert_nowhere(api: Api, log: io.StringIO, responses: list[Any], *secrets: str) -> None:
    blobs = [p.read_bytes() for p in _files(api)] + [log.getvalue().encode()]
    blobs += [r.content for r in responses]
    for secret in secrets:
        for blob in blobs:
            assert secret.encode() not in blob


@pytest.mark.sqlite_only
def test_traits_and_events_are_stored_encrypted_and_anchored(
    api: Api, log_stream: io.StringIO
) -> None:
    response = _identify(
        api,
        traits={"city": "Lisbon", "age_band": "25-34", "visit_count": 3, "interests": ["running"]},
        events=[
            {
                "name": "purchase",
                "properties": {"order_id": "o-77", "amount": 59.9, "currency": "EUR"},
            }
        ],
    )
    assert response.status_code == 200, response.text
    assert response.json()["facts"] == {"stored": 5, "quarantined": 0, "dropped": 0}
    person = _person(api, ANN[1])
    opened = _opened(api, person)
    assert ("attribute", "city", "Lisbon") in opened
    assert ("attribute", "visit_count", 3) in opened
    assert ("attribute", "interests", ["running"]) in opened
    assert (
        "event",
        "purchase",
        {"properties": {"amount": 59.9, "currency": "EUR", "order_id": "o-77"}},
    ) in opened
    # anchored to the highest-priority identifier of the event: the customer id
    facts = api.container.store.read(
        lambda tx: tx.person_facts(person, (FactKind.ATTRIBUTE,), FactStatus.ACTIVE)
    )
    cluster = api.container.store.read(lambda tx: tx.cluster(person))
    anchor = {n.node_id: n.hashed.type for n in cluster.nodes}
    assert {anchor[f.node_id] for f in facts} == {"customer_id"}
    _assert_nowhere(api, log_stream, [response], "Lisbon", "o-77", "running")


def test_a_newer_trait_value_replaces_the_old_one(api: Api) -> None:
    _identify(api, traits={"city": "Lisbon"}, timestamp="2026-03-01T10:00:00Z")
    _identify(api, traits={"city": "Porto"}, timestamp="2026-03-02T10:00:00Z")
    _identify(api, traits={"city": "Faro"}, timestamp="2026-02-01T10:00:00Z")  # older: ignored
    cities = [v for k, n, v in _opened(api, _person(api, ANN[0])) if n == "city"]
    assert cities == ["Porto"]


@pytest.mark.sqlite_only
def test_pii_in_a_redact_category_is_replaced_before_storage(
    api: Api, log_stream: io.StringIO
) -> None:
    response = _identify(api, traits={"favourite_category": PHONE_TEXT})
    assert response.status_code == 200, response.text
    (value,) = [v for _, n, v in _opened(api, _person(api, ANN[0])) if n == "favourite_category"]
    assert value == "call me on <PHONE_NUMBER> please"
    _assert_nowhere(api, log_stream, [response], "7946 0958", "+442079460958")


@pytest.mark.sqlite_only
def test_pii_in_a_reject_category_is_a_422_naming_field_and_entity(
    api: Api, log_stream: io.StringIO
) -> None:
    before = api.container.store.stats()
    response = _identify(api, traits={"age_band": "ann.lee@shop.de", "city": "Lisbon"})
    assert response.status_code == 422
    problem = response.json()
    assert problem["errors"] == [
        {
            "pointer": "#/traits/age_band",
            "reason": "pii_not_allowed",
            "detail": "found EMAIL_ADDRESS in a demographic field, which does not accept it",
        }
    ]
    assert api.container.store.stats() == before  # identifiers not linked either
    _assert_nowhere(api, log_stream, [response], "ann.lee@shop.de")


@pytest.mark.sqlite_only
def test_pii_in_a_quarantine_category_is_hidden_until_released(
    api: Api, log_stream: io.StringIO
) -> None:
    response = _identify(api, traits={"street_address": f"pay to {IBAN}", "first_name": "Ann"})
    assert response.status_code == 200, response.text
    assert response.json()["facts"] == {"stored": 1, "quarantined": 1, "dropped": 0}
    person = _person(api, ANN[0])
    assert [n for _, n, _ in _opened(api, person) if n != "customer_id"] == ["first_name"]
    (held,) = api.container.store.read(lambda tx: tx.facts_page(FactStatus.QUARANTINED, "", 10))
    assert held.name == "street_address"
    assert "IBAN_CODE" in held.pii
    _assert_nowhere(api, log_stream, [response], "3704 0044", "DE89370400440532013000")
    api.container.store.write(lambda tx: tx.set_fact_status([held.fact_id], FactStatus.ACTIVE))
    assert ("attribute", "street_address", f"pay to {IBAN}") in _opened(api, person)


def test_unknown_attribute_and_property_are_rejected_and_unknown_event_quarantined(
    api: Api,
) -> None:
    bad = _identify(
        api, traits={"shoe_size": 42}, events=[{"name": "purchase", "properties": {"coupon": "X"}}]
    )
    assert bad.status_code == 422
    assert sorted(e["pointer"] for e in bad.json()["errors"]) == [
        "#/events/0/properties/coupon",
        "#/traits/shoe_size",
    ]
    ok = _identify(api, events=[{"name": "wishlist_add", "properties": {"sku": "s-1"}}])
    assert ok.json()["facts"] == {"stored": 0, "quarantined": 1, "dropped": 0}


def test_special_category_data_is_refused(api: Api) -> None:
    response = _identify(api, traits={"health_interest": "diabetes"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["reason"] == "special_category"
    assert "diabetes" not in response.text


@pytest.mark.parametrize(
    ("traits", "pointer"),
    [
        ({"visit_count": "3"}, "#/traits/visit_count"),
        ({"visit_count": 2.5}, "#/traits/visit_count"),
        ({"last_purchase_at": "yesterday"}, "#/traits/last_purchase_at"),
        ({"last_purchase_at": "2026-03-01T10:00:00"}, "#/traits/last_purchase_at"),
        ({"interests": "running"}, "#/traits/interests"),
        ({"country": "Portugal"}, "#/traits/country"),
    ],
)
def test_wrongly_typed_traits_are_422_with_the_pointer(
    api: Api, traits: dict[str, Any], pointer: str
) -> None:
    response = _identify(api, traits=traits)
    assert response.status_code == 422
    assert [e["pointer"] for e in response.json()["errors"]] == [pointer]
    assert api.container.store.stats().identifiers == 0


def test_facts_of_an_event_without_linkable_identifiers_are_dropped(api: Api) -> None:
    response = _identify(
        api, identifiers=[{"type": "customer_id", "value": "null"}], traits={"city": "Lisbon"}
    )
    assert response.json()["facts"] == {"stored": 0, "quarantined": 0, "dropped": 1}
    assert api.container.store.stats().facts == 0


@pytest.mark.sqlite_only
def test_kept_identifiers_are_stored_only_encrypted(api: Api, log_stream: io.StringIO) -> None:
    email = {"type": "email", "value": "Kept.Value@Shop.de"}
    response = _identify(api, identifiers=[email, {"type": "cookie_id", "value": "ck-9"}])
    assert response.status_code == 200
    opened = _opened(api, _person(api, email))
    assert ("raw_identifier", "email", "kept.value@shop.de") in opened
    assert not any(n == "cookie_id" for _, n, _ in opened)  # not keep_raw: not kept
    _assert_nowhere(api, log_stream, [response], "kept.value@shop.de", "Kept.Value@Shop.de")


@pytest.mark.sqlite_only
def test_shredding_makes_a_pre_shred_copy_of_the_graph_unreadable(api: Api, tmp_path: Path) -> None:
    _identify(api, traits={"city": "Lisbon"})
    _identify(api, identifiers=[{"type": "customer_id", "value": "C-2"}], traits={"city": "Porto"})
    store_path = Path(str(api.container.store.path))  # type: ignore[attr-defined]
    api.container.store.checkpoint()  # type: ignore[attr-defined]
    backup = tmp_path / "backup.sqlite3"
    shutil.copyfile(store_path, backup)

    victim = _person(api, ANN[0])
    nodes = [n.node_id for n in api.container.store.read(lambda tx: tx.cluster(victim)).nodes]
    assert api.container.vault.shred(nodes) >= 1

    with sqlite3.connect(backup) as old:
        rows = old.execute(
            "SELECT i.node_id, f.kind, f.name, f.sealed FROM facts f "
            "JOIN identifiers i ON i.pk = f.node"
        ).fetchall()
    assert len(rows) == 2
    readable = []
    for node_id, kind, name, sealed in rows:
        try:
            readable.append(api.container.vault.decrypt(node_id, f"{kind}:{name}", bytes(sealed)))
        except DataKeyDestroyedError:
            assert node_id in nodes
    assert readable == [b'"Porto"']  # the other person is unaffected


def test_tampered_or_swapped_ciphertext_is_refused(api: Api) -> None:
    _identify(api, traits={"city": "Lisbon", "region": "Lisboa"})
    person = _person(api, ANN[0])
    facts = api.container.store.read(
        lambda tx: tx.person_facts(person, (FactKind.ATTRIBUTE,), FactStatus.ACTIVE)
    )
    city = next(f for f in facts if f.name == "city")
    region = next(f for f in facts if f.name == "region")
    flipped = bytearray(city.sealed)
    flipped[-1] ^= 1
    with pytest.raises(TamperedCiphertextError):
        api.container.vault.decrypt(city.node_id, city.seal_field, bytes(flipped))
    with pytest.raises(TamperedCiphertextError):
        api.container.vault.decrypt(city.node_id, city.seal_field, region.sealed)
