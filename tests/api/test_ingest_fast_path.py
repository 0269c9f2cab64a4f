"""``POST /v1/ingest`` answers a plain body on its fast path, exactly as FastAPI's handler would.

:func:`api.routing.fast_path` lets a route answer the requests it can certify without FastAPI's
dependency solving; every other request goes to FastAPI's handler untouched. These tests hold
the ingest route to that: a plain body takes the fast path (FastAPI's body reading is never
asked), a body the model must judge takes FastAPI's path, and both answer the same status,
headers and body for the same requests, keys, rate limits and ``Sec-GPC`` headers (the property
test in ``test_ingest_certified.py`` compares whole sessions of generated bodies besides).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import routing
from api.app import create_app
from bootstrap.container import Container, build_container
from bootstrap.settings import Settings
from privacy.access.api_keys import Scope
from services import inputs
from tests.conftest import POLICY_DIR

_JSON = {"Content-Type": "application/json"}


def _event(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "identifiers": [
            {"type": "cookie_id", "value": f"ck-fast-{n}"},
            {"type": "email", "value": f"fast.{n}@shop.example.de"},
        ],
        "source": "web",
        "traits": {"city": "Berlin"},
        "events": [{"name": "purchase", "properties": {"amount": 12.5}}],
        "message_id": f"m-fast-{n}",
        **extra,
    }


# A valid body that the certification leaves to the model: a timestamp with a space for "T".
_MODEL_ONLY = {"events": [_event(90, timestamp="2026-01-05 08:00:00Z")]}


@contextmanager
def _served(
    work: Path, *, rate_limit: int = 0, burst: int = 10
) -> Iterator[tuple[TestClient, Container, dict[str, dict[str, str]]]]:
    container = build_container(
        Settings(
            env="test",
            data_dir=work / "data",
            policy_dir=POLICY_DIR,
            default_region="GB",
            max_batch_events=3,
            pii_scan=False,
            rate_limit_per_minute=rate_limit,
            rate_limit_burst=burst,
        )
    )
    try:
        keys = {}
        for name, scopes in (("ingest", {Scope.INGEST}), ("resolve", {Scope.RESOLVE})):
            _, token = container.api_keys.create(name, frozenset(scopes))
            keys[name] = {"Authorization": f"Bearer {token}"}
        keys["unknown"] = {"Authorization": "Bearer idg_not-a-key-that-exists"}
        keys["basic"] = {"Authorization": "Basic dXNlcjpwYXNz"}
        with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
            yield client, container, keys
    finally:
        container.close()


@pytest.fixture
def fastapi_body_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How often FastAPI's handler asked for a request's JSON body (the fast path never does)."""
    reads: list[int] = []
    original = routing.DecodedJsonRequest.json

    async def counted(self: routing.DecodedJsonRequest) -> Any:
        reads.append(1)
        return await original(self)

    monkeypatch.setattr(routing.DecodedJsonRequest, "json", counted)
    return reads


def _answer(response: Any) -> tuple[int, str, Any]:
    document = response.json()
    if isinstance(document, dict):
        document.pop("instance", None)  # the request id
    return response.status_code, response.headers["content-type"], document


def test_plain_batch_is_answered_on_the_fast_path_when_certified(
    tmp_path: Path, fastapi_body_reads: list[int]
) -> None:
    with _served(tmp_path) as (client, container, keys):
        plain = client.post("/v1/ingest", json={"events": [_event(1)]}, headers=keys["ingest"])
        assert plain.status_code == 200, plain.text
        assert fastapi_body_reads == []  # FastAPI's handler never saw it

        model_only = client.post("/v1/ingest", json=_MODEL_ONLY, headers=keys["ingest"])
        assert model_only.status_code == 200, model_only.text
        assert fastapi_body_reads == [1]  # the model judged this one
        assert plain.json()["outcomes"] == model_only.json()["outcomes"] == {"created": 1}
        assert container.store.stats().identifiers == 4


@pytest.mark.parametrize(
    ("key", "sec_gpc", "body"),
    [
        ("ingest", None, {"events": [_event(1), _event(2)]}),
        ("ingest", "1", {"events": [_event(1), _event(2)]}),  # GPC opt-outs recorded
        ("ingest", "0", {"events": [_event(1)]}),
        ("ingest", None, {"events": [_event(1)] * 2}),  # the second is a duplicate message
        ("ingest", None, {"events": [_event(n) for n in range(4)]}),  # over the batch limit
        ("ingest", None, {"events": [_event(1, identifiers=[{"type": "email", "value": "x"}])]}),
        ("resolve", None, {"events": [_event(1)]}),  # 403: the key lacks the scope
        ("unknown", None, {"events": [_event(1)]}),  # 401: no such key
        ("basic", None, {"events": [_event(1)]}),  # 401: not a bearer key
    ],
)
def test_ingest_answers_as_fastapis_handler_when_the_fast_path_takes_the_request(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    sec_gpc: str | None,
    body: dict[str, Any],
) -> None:
    answers = []
    written = []
    for fast in (True, False):
        with monkeypatch.context() as patch, _served(tmp_path / str(fast)) as served:
            client, container, keys = served
            if not fast:  # nothing certified: FastAPI's handler answers every request
                patch.setattr(inputs, "ingest_inputs", lambda _document: None)
            headers = keys[key] | ({"Sec-GPC": sec_gpc} if sec_gpc is not None else {})
            response = client.post("/v1/ingest", json=body, headers=headers)
            answers.append(_answer(response))
            stats = container.store.stats()
            written.append((stats.persons, stats.identifiers))
    assert answers[0] == answers[1]
    assert written[0] == written[1]


def test_rate_limit_is_taken_once_per_request_when_the_model_path_answers(
    tmp_path: Path, fastapi_body_reads: list[int]
) -> None:
    # A burst of two: if the fast path took a token before leaving a body to FastAPI's handler,
    # the second request would already be refused.
    with _served(tmp_path, rate_limit=1, burst=2) as (client, _, keys):
        first = client.post("/v1/ingest", json=_MODEL_ONLY, headers=keys["ingest"])
        second = client.post("/v1/ingest", json={"events": [_event(2)]}, headers=keys["ingest"])
        third = client.post("/v1/ingest", json={"events": [_event(3)]}, headers=keys["ingest"])
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
    assert third.headers["content-type"].startswith("application/problem+json")
    assert fastapi_body_reads == [1]


def test_body_is_validated_by_the_model_when_the_app_has_dependency_overrides(
    tmp_path: Path, fastapi_body_reads: list[int]
) -> None:
    with _served(tmp_path) as (client, _, keys):
        client.app.dependency_overrides[lambda: None] = lambda: None  # type: ignore[attr-defined]
        response = client.post("/v1/ingest", json={"events": [_event(1)]}, headers=keys["ingest"])
    assert response.status_code == 200, response.text
    assert fastapi_body_reads == [1]


# -- the mechanism on a route of its own ---------------------------------------------------------


class _Item(BaseModel):
    n: int


def _app() -> FastAPI:
    router = APIRouter(route_class=routing.DecodedJsonRoute)

    async def small_numbers(request: Request) -> Response | None:
        document = routing.decoded_json(request)
        if isinstance(document, dict) and type(document.get("n")) is int and document["n"] < 10:
            return JSONResponse({"n": document["n"], "path": "fast"})
        return None

    @router.post("/items")
    @routing.fast_path(small_numbers)
    def items(item: _Item) -> dict[str, Any]:
        return {"n": item.n, "path": "fastapi"}

    app = FastAPI()
    app.include_router(router)

    @app.middleware("http")
    async def decode(request: Request, call_next: Any) -> Response:
        # What api.middleware.ApiMiddleware does for every JSON body.
        request.scope.setdefault("state", {})[routing.DECODED_JSON] = json.loads(
            await request.body()
        )
        return await call_next(request)  # type: ignore[no-any-return]

    return app


def test_fast_path_answers_what_it_certifies_and_leaves_the_rest_to_fastapi() -> None:
    with TestClient(_app()) as client:
        assert client.post("/items", json={"n": 3}).json() == {"n": 3, "path": "fast"}
        assert client.post("/items", json={"n": 12}).json() == {"n": 12, "path": "fastapi"}
        refused = client.post("/items", json={"n": "x"})
    assert refused.status_code == 422  # FastAPI's own validation error
    assert refused.json()["detail"][0]["loc"] == ["body", "n"]
