"""Object ownership (issue 13, finding 1, OWASP API1): every DSR request, its export and every
audience belongs to the consumer of the key that created it. Another consumer's key with the
same scope gets 404 (never 403: that would confirm the id); an admin key sees everything.

Every object route is tried by {owner, other key of the same scope, admin}.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from privacy.access.api_keys import Scope
from tests.api.test_dsr_api import EMAIL, Dsr, _person, dsr_settings, open_dsr

Headers = dict[str, str]


@dataclass
class Keys:
    """Three keys: the owner, another consumer with the same scopes, and an admin."""

    owner: Headers
    other: Headers
    admin: Headers


@pytest.fixture
def app(tmp_path: Path, log_stream: io.StringIO) -> Iterator[Dsr]:
    with open_dsr(dsr_settings(tmp_path)) as opened:
        yield opened


def _keys(app: Dsr, scopes: frozenset[Scope], purposes: frozenset[str] = frozenset()) -> Keys:
    def token(name: str, scope_set: frozenset[Scope], consumer: str) -> Headers:
        _, secret = app.container.api_keys.create(
            name, scope_set, purposes=purposes, consumer=consumer
        )
        return {"Authorization": f"Bearer {secret}"}

    return Keys(
        owner=token("owner", scopes, "privacy-desk"),
        other=token("other", scopes, "another-team"),
        admin=token("admin", frozenset({Scope.ADMIN}), "operators"),
    )


# -- DSR requests and their exports ----------------------------------------------------------

DsrCall = Callable[[TestClient, str, Headers], Any]

DSR_READS: dict[str, DsrCall] = {
    "status": lambda c, rid, h: c.get(f"/v1/dsr/{rid}", headers=h),
    "download_json": lambda c, rid, h: c.get(f"/v1/dsr/{rid}/download?format=json", headers=h),
    "download_csv": lambda c, rid, h: c.get(f"/v1/dsr/{rid}/download?format=csv", headers=h),
}
DSR_WRITES: dict[str, DsrCall] = {
    "cancel": lambda c, rid, h: c.post(f"/v1/dsr/{rid}/cancel", headers=h),
    "extend": lambda c, rid, h: c.post(
        f"/v1/dsr/{rid}/extend",
        json={"reason": "a complex request: several systems to search"},
        headers=h,
    ),
}


def _completed_access(app: Dsr, keys: Keys, request_id: str) -> None:
    _person(app)
    body = {"request_id": request_id, "type": "access", "subject_identities": [EMAIL_ID]}
    assert app.client.post("/v1/dsr", json=body, headers=keys.owner).status_code == 202
    app.process()


EMAIL_ID = {"type": "email", "value": EMAIL}


@pytest.mark.parametrize("route", sorted(DSR_READS))
def test_dsr_read_routes_are_404_for_another_consumer_when_owner_and_admin_get_200(
    app: Dsr, route: str
) -> None:
    keys = _keys(app, frozenset({Scope.DSR}))
    _completed_access(app, keys, "acc-own")
    call = DSR_READS[route]

    owner = call(app.client, "acc-own", keys.owner)
    other = call(app.client, "acc-own", keys.other)
    admin = call(app.client, "acc-own", keys.admin)
    missing = call(app.client, "acc-nope", keys.other)

    assert owner.status_code == 200, owner.text
    assert admin.status_code == 200, admin.text
    assert other.status_code == 404, other.text
    # Indistinguishable from a request that does not exist, and nothing of it is shown.
    assert other.json()["type"] == missing.json()["type"] == "urn:idgraph:problem:dsr-not-found"
    assert EMAIL not in other.text


@pytest.mark.parametrize("route", sorted(DSR_WRITES))
def test_dsr_write_routes_are_404_for_another_consumer_and_change_nothing(
    app: Dsr, route: str
) -> None:
    keys = _keys(app, frozenset({Scope.DSR}))
    body = {"request_id": "era-own", "type": "erasure", "subject_identities": [EMAIL_ID]}
    assert app.client.post("/v1/dsr", json=body, headers=keys.owner).status_code == 202
    call = DSR_WRITES[route]

    other = call(app.client, "era-own", keys.other)
    unchanged = app.client.get("/v1/dsr/era-own", headers=keys.owner).json()
    admin = call(app.client, "era-own", keys.admin)

    assert other.status_code == 404, other.text
    assert unchanged["status"] == "pending"
    assert unchanged["extended"] is False
    assert admin.status_code == 200, admin.text


def test_dsr_write_routes_work_for_the_owner(app: Dsr) -> None:
    keys = _keys(app, frozenset({Scope.DSR}))
    body = {"request_id": "era-mine", "type": "erasure", "subject_identities": [EMAIL_ID]}
    assert app.client.post("/v1/dsr", json=body, headers=keys.owner).status_code == 202

    extended = app.client.post(
        "/v1/dsr/era-mine/extend",
        json={"reason": "a complex request: several systems to search"},
        headers=keys.owner,
    )
    cancelled = app.client.post("/v1/dsr/era-mine/cancel", headers=keys.owner)

    assert extended.status_code == 200, extended.text
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"


def test_dsr_list_shows_each_consumer_its_own_requests_and_admin_all(app: Dsr) -> None:
    keys = _keys(app, frozenset({Scope.DSR}))
    for request_id, headers in (("a-1", keys.owner), ("a-2", keys.owner), ("b-1", keys.other)):
        body = {"request_id": request_id, "type": "erasure", "subject_identities": [EMAIL_ID]}
        assert app.client.post("/v1/dsr", json=body, headers=headers).status_code == 202

    def ids(headers: Headers) -> list[str]:
        response = app.client.get("/v1/dsr", headers=headers)
        assert response.status_code == 200, response.text
        return [r["request_id"] for r in response.json()["requests"]]

    assert ids(keys.owner) == ["a-1", "a-2"]
    assert ids(keys.other) == ["b-1"]
    assert ids(keys.admin) == ["a-1", "a-2", "b-1"]


def test_keys_of_the_same_consumer_share_their_requests(app: Dsr) -> None:
    keys = _keys(app, frozenset({Scope.DSR}))
    _, rotated = app.container.api_keys.create(
        "owner-rotated", frozenset({Scope.DSR}), consumer="privacy-desk"
    )
    body = {"request_id": "rot-1", "type": "erasure", "subject_identities": [EMAIL_ID]}
    assert app.client.post("/v1/dsr", json=body, headers=keys.owner).status_code == 202

    response = app.client.get("/v1/dsr/rot-1", headers={"Authorization": f"Bearer {rotated}"})

    assert response.status_code == 200, response.text


def test_replaying_another_consumers_request_id_is_409_and_reveals_nothing(app: Dsr) -> None:
    keys = _keys(app, frozenset({Scope.DSR}))
    body = {
        "request_id": "same-id",
        "type": "erasure",
        "subject_identities": [EMAIL_ID],
        "submitted_time": "2026-03-02T10:00:00Z",
    }
    assert app.client.post("/v1/dsr", json=body, headers=keys.owner).status_code == 202

    # Identical content from another consumer: not a replay of *its* request.
    response = app.client.post("/v1/dsr", json=body, headers=keys.other)

    assert response.status_code == 409, response.text
    assert response.json()["type"] == "urn:idgraph:problem:dsr-conflict"
    assert "requester" not in response.text


# -- audiences -------------------------------------------------------------------------------

AUDIENCE = {
    "name": "lisbon",
    "purpose": "ad_targeting",
    "rules": {"attributes": [{"attribute": "city", "op": "eq", "value": "Lisbon"}]},
}
AUDIENCE_ROUTES: dict[str, str] = {
    "definition": "/v1/audiences/{id}",
    "members": "/v1/audiences/{id}/members",
    "export_csv": "/v1/audiences/{id}/export?format=csv",
    "export_jsonl": "/v1/audiences/{id}/export?format=jsonl",
}


@pytest.mark.parametrize("route", sorted(AUDIENCE_ROUTES))
def test_audience_routes_are_404_for_another_consumer_when_owner_and_admin_get_200(
    app: Dsr, route: str
) -> None:
    keys = _keys(app, frozenset({Scope.READ}), purposes=frozenset({"ad_targeting"}))
    created = app.client.post("/v1/audiences", json=AUDIENCE, headers=keys.owner)
    assert created.status_code == 201, created.text
    path = AUDIENCE_ROUTES[route].format(id=created.json()["id"])
    _, admin_token = app.container.api_keys.create(
        "admin-reader", frozenset({Scope.ADMIN}), purposes=frozenset({"*"}), consumer="ops"
    )
    admin = {"Authorization": f"Bearer {admin_token}"}

    owner = app.client.get(path, headers=keys.owner)
    other = app.client.get(path, headers=keys.other)
    unknown = app.client.get(AUDIENCE_ROUTES[route].format(id="aud_nope"), headers=keys.other)
    by_admin = app.client.get(path, headers=admin)

    assert owner.status_code == 200, owner.text
    assert by_admin.status_code == 200, by_admin.text
    assert other.status_code == 404, other.text
    assert other.json()["type"] == unknown.json()["type"]
