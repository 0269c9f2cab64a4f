"""The HTTP API through the real app: happy paths, auth, and bad input (4xx, store unchanged)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Api

ANN = [{"type": "email", "value": "Ann@Shop.de"}, {"type": "phone", "value": "+44 20 7946 0958"}]


def _identify(api: Api, identifiers: list[dict[str, str]], source: str = "web") -> Any:
    return api.client.post(
        "/v1/identify", json={"identifiers": identifiers, "source": source}, headers=api.ingest
    )


def _assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("urn:idgraph:problem:")
    assert body["title"]
    assert body["detail"]
    return body


def test_identify_then_resolve_returns_the_same_person(api: Api) -> None:
    response = _identify(api, ANN)
    assert response.status_code == 200
    assert response.json() == {
        "outcome": "created",
        "new_identifiers": 2,
        "refused": [],
        "facts": {"stored": 0, "quarantined": 0, "dropped": 0},
    }
    assert "person_id" not in response.json()  # ingest keys do not learn person ids
    by_email = api.client.post(
        "/v1/resolve",
        json={"identifier": {"type": "email", "value": "ann@shop.de"}},
        headers=api.resolve,
    )
    by_phone = api.client.post(
        "/v1/resolve",
        json={"identifier": {"type": "phone", "value": "020 7946 0958"}},
        headers=api.resolve,
    )
    assert by_email.status_code == by_phone.status_code == 200
    assert by_email.json()["person_id"] == by_phone.json()["person_id"]
    assert by_email.json()["person_id"].startswith("p_")


def test_identify_reports_refused_identifiers_with_their_pointer(api: Api) -> None:
    response = _identify(
        api, [{"type": "cookie_id", "value": "c1"}, {"type": "email", "value": "test@shop.de"}]
    )
    assert response.status_code == 200
    (refused,) = response.json()["refused"]
    assert refused == {
        "pointer": "#/identifiers/1",
        "type": "email",
        "reason": "blocked_pattern",
        "detail": "value is blocked by policy",
    }


def test_batch_ingest_reports_each_event_and_the_totals(api: Api) -> None:
    events = [
        {
            "identifiers": [
                {"type": "email", "value": "ann@shop.de"},
                {"type": "cookie_id", "value": "c1"},
            ],
            "source": "web",
        },
        {
            "identifiers": [
                {"type": "phone", "value": "+442079460958"},
                {"type": "cookie_id", "value": "c1"},
            ],
            "source": "app",
            "timestamp": "2026-03-01T10:00:00+01:00",
        },
        {"identifiers": [{"type": "customer_id", "value": "null"}], "source": "crm"},
    ]
    response = api.client.post("/v1/ingest", json={"events": events}, headers=api.ingest)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["events"] == 3
    assert body["outcomes"] == {"created": 1, "linked": 1, "refused": 1}
    assert body["refused_identifiers"] == 1
    assert body["results"][2]["refused"][0]["pointer"] == "#/events/2/identifiers/0"
    assert api.container.store.stats().persons == 1


def test_explain_and_unlink_through_the_api(api: Api) -> None:
    _identify(api, ANN)
    pair = {
        "a": {"type": "email", "value": "ann@shop.de"},
        "b": {"type": "phone", "value": "+442079460958"},
    }
    explained = api.client.post("/v1/links/explain", json=pair, headers=api.admin)
    assert explained.status_code == 200
    (hop,) = explained.json()["hops"]
    assert hop["sources"] == ["web"]
    assert {hop["from_type"], hop["to_type"]} == {"email", "phone"}
    unlinked = api.client.post("/v1/links/unlink", json=pair, headers=api.admin)
    assert unlinked.status_code == 200
    assert unlinked.json()["split"] is True
    again = api.client.post("/v1/links/unlink", json=pair, headers=api.admin)
    _assert_problem(again, 409)


def test_resolve_of_unknown_identifier_is_404_problem(api: Api) -> None:
    response = api.client.post(
        "/v1/resolve",
        json={"identifier": {"type": "email", "value": "ghost@shop.de"}},
        headers=api.resolve,
    )
    body = _assert_problem(response, 404)
    assert "ghost" not in json.dumps(body)


# -- auth --------------------------------------------------------------------------------------

ENDPOINTS = [
    ("/v1/identify", {"identifiers": ANN, "source": "web"}, "ingest"),
    ("/v1/ingest", {"events": [{"identifiers": ANN, "source": "web"}]}, "ingest"),
    ("/v1/resolve", {"identifier": ANN[0]}, "resolve"),
    ("/v1/links/explain", {"a": ANN[0], "b": ANN[1]}, "admin"),
    ("/v1/links/unlink", {"a": ANN[0], "b": ANN[1]}, "admin"),
]


@pytest.mark.parametrize(("path", "body", "scope"), ENDPOINTS)
def test_every_endpoint_needs_a_key(api: Api, path: str, body: dict[str, Any], scope: str) -> None:
    assert scope
    missing = _assert_problem(api.client.post(path, json=body), 401)
    assert missing["type"] == "urn:idgraph:problem:unauthenticated"
    wrong = api.client.post(path, json=body, headers={"Authorization": "Bearer idg_nope.nope"})
    _assert_problem(wrong, 401)
    assert api.container.store.stats().identifiers == 0


@pytest.mark.parametrize(("path", "body", "scope"), ENDPOINTS)
def test_keys_without_the_scope_get_403(
    api: Api, path: str, body: dict[str, Any], scope: str
) -> None:
    others = {"ingest": api.ingest, "resolve": api.resolve}
    for name, headers in others.items():
        if name != scope:
            _assert_problem(api.client.post(path, json=body, headers=headers), 403)
    assert api.container.store.stats().identifiers == 0


def test_revoked_key_is_refused(api: Api) -> None:
    key, token = api.container.api_keys.create("temp", frozenset({"ingest"}))  # type: ignore[arg-type]
    headers = {"Authorization": f"Bearer {token}"}
    assert _identify_with(api, headers).status_code == 200
    assert api.container.api_keys.revoke(key.key_id)
    _assert_problem(_identify_with(api, headers), 401)


def _identify_with(api: Api, headers: dict[str, str]) -> Any:
    return api.client.post(
        "/v1/identify", json={"identifiers": ANN, "source": "web"}, headers=headers
    )


def test_health_needs_no_key(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    assert api.client.get("/readyz").json() == {"status": "ready"}


def test_openapi_is_3_1_and_documents_the_endpoints(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    assert {
        "/v1/identify",
        "/v1/ingest",
        "/v1/resolve",
        "/v1/links/explain",
        "/v1/links/unlink",
    } <= set(spec["paths"])


# -- bad input: 4xx problem+json, never 500, store unchanged ----------------------------------

BAD_BODIES: list[tuple[str, bytes | dict[str, Any], int, str]] = [
    ("malformed json", b'{"identifiers": [', 400, "malformed-json"),
    ("invalid utf-8", b'{"identifiers": "\xff\xfe"}', 400, "malformed-json"),
    ("not an object", b"[1, 2, 3]", 422, "invalid-request"),
    ("wrong types", {"identifiers": "ann@shop.de", "source": 5}, 422, "invalid-request"),
    ("missing source", {"identifiers": ANN}, 422, "invalid-request"),
    ("empty identifiers", {"identifiers": [], "source": "web"}, 422, "invalid-request"),
    (
        "extra field",
        {"identifiers": ANN, "source": "web", "person_id": "p_1"},
        422,
        "invalid-request",
    ),
    ("bad source", {"identifiers": ANN, "source": "web shop; DROP TABLE"}, 422, "invalid-request"),
    (
        "naive timestamp",
        {"identifiers": ANN, "source": "web", "timestamp": "2026-01-01T00:00:00"},
        422,
        "invalid-request",
    ),
    (
        "future timestamp",
        {"identifiers": ANN, "source": "web", "timestamp": "2099-01-01T00:00:00Z"},
        422,
        "invalid-request",
    ),
    (
        "10k-character value",
        {"identifiers": [{"type": "customer_id", "value": "x" * 10_000}], "source": "web"},
        422,
        "invalid-request",
    ),
    (
        "over type max_length",
        {"identifiers": [{"type": "customer_id", "value": "x" * 300}], "source": "web"},
        422,
        "invalid-batch",
    ),
    (
        "unknown type",
        {"identifiers": [{"type": "passport", "value": "X1"}], "source": "web"},
        422,
        "invalid-batch",
    ),
    (
        "one bad of two",
        {"identifiers": [ANN[0], {"type": "email", "value": "nope"}], "source": "web"},
        422,
        "invalid-batch",
    ),
    (
        "too many identifiers",
        {
            "identifiers": [{"type": "cookie_id", "value": f"c{i}"} for i in range(21)],
            "source": "web",
        },
        422,
        "input-limit-exceeded",
    ),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "slug"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES]
)
def test_bad_identify_input_gets_a_problem_and_writes_nothing(
    api: Api, case: str, body: bytes | dict[str, Any], status: int, slug: str
) -> None:
    _identify(api, [{"type": "cookie_id", "value": "existing"}])
    before = api.container.store.stats()
    if isinstance(body, bytes):
        response = api.client.post(
            "/v1/identify", content=body, headers=api.ingest | {"content-type": "application/json"}
        )
    else:
        response = api.client.post("/v1/identify", json=body, headers=api.ingest)
    problem = _assert_problem(response, status)
    assert problem["type"] == f"urn:idgraph:problem:{slug}", case
    assert api.container.store.stats() == before


def test_invalid_identifier_error_points_at_the_field_without_the_value(api: Api) -> None:
    response = _identify(api, [ANN[0], {"type": "phone", "value": "+44 12"}])
    problem = _assert_problem(response, 422)
    assert problem["errors"] == [
        {
            "pointer": "#/identifiers/1/value",
            "detail": "not a valid phone number for its region",
            "reason": "invalid_phone",
        }
    ]
    assert "+44 12" not in response.text


def test_one_invalid_event_refuses_the_whole_batch(api: Api) -> None:
    events = [
        {"identifiers": [{"type": "cookie_id", "value": f"c{i}"}], "source": "web"}
        for i in range(5)
    ]
    events[3]["identifiers"] = [{"type": "email", "value": "broken"}]
    response = api.client.post("/v1/ingest", json={"events": events}, headers=api.ingest)
    problem = _assert_problem(response, 422)
    assert [e["pointer"] for e in problem["errors"]] == ["#/events/3/identifiers/0/value"]
    assert api.container.store.stats().identifiers == 0


def test_oversize_batch_is_refused(api: Api) -> None:
    events = [
        {"identifiers": [{"type": "cookie_id", "value": f"c{i}"}], "source": "web"}
        for i in range(51)
    ]
    response = api.client.post("/v1/ingest", json={"events": events}, headers=api.ingest)
    problem = _assert_problem(response, 422)
    assert "IDGRAPH_MAX_BATCH_EVENTS" in problem["errors"][0]["detail"]
    assert api.container.store.stats().identifiers == 0


def test_oversize_body_is_413(api: Api) -> None:
    big = {"identifiers": ANN, "source": "web", "pad": "x" * 300_000}
    _assert_problem(api.client.post("/v1/identify", json=big, headers=api.ingest), 413)
    chunked = api.client.post(
        "/v1/identify",
        content=iter([b'{"identifiers": "', b"x" * 200_000, b"x" * 200_000, b'"}']),
        headers=api.ingest | {"content-type": "application/json"},
    )
    _assert_problem(chunked, 413)
    assert api.container.store.stats().identifiers == 0


def test_deeply_nested_json_is_refused_cleanly(api: Api) -> None:
    nested = b'{"identifiers": ' + b"[" * 5000 + b"]" * 5000 + b', "source": "web"}'
    response = api.client.post(
        "/v1/identify", content=nested, headers=api.ingest | {"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"].startswith("application/problem+json")


def test_sql_looking_identifiers_are_just_hashed_values(api: Api) -> None:
    hostile = "x'); DROP TABLE identifiers; --"
    response = _identify(
        api, [{"type": "customer_id", "value": hostile}, {"type": "cookie_id", "value": "c1"}]
    )
    assert response.status_code == 200
    resolved = api.client.post(
        "/v1/resolve",
        json={"identifier": {"type": "customer_id", "value": hostile}},
        headers=api.resolve,
    )
    assert resolved.status_code == 200
    assert api.container.store.stats().identifiers == 2


def test_unknown_route_and_method_are_problems(api: Api) -> None:
    _assert_problem(api.client.get("/v1/nothing", headers=api.admin), 404)
    _assert_problem(api.client.get("/v1/identify", headers=api.admin), 405)


def test_store_unavailable_is_a_503_problem(api: Api) -> None:
    api.container.store.close()
    response = api.client.get("/readyz")
    problem = _assert_problem(response, 503)
    assert problem["type"] == "urn:idgraph:problem:store-unavailable"
    identify = _identify(api, ANN)
    _assert_problem(identify, 503)
