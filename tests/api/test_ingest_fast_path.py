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
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Header
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import routing
from bootstrap.container import Container
from services import inputs
from tests.support.ingest_app import served_ingest_app

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
    with served_ingest_app(work, max_batch_events=3, rate_limit=rate_limit, burst=burst) as app:
        yield app.client, app.container, app.keys


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


class _TeapotError(Exception):
    pass


# Dependencies of every kind the fast path runs directly (module level: the route's annotations
# are resolved from here): a sub-dependency, a callable instance, a ``yield`` dependency, and one
# dependency used twice (called once per request, as FastAPI caches it). Each call is recorded
# in the app's ``state.calls``.
async def _token(request: Request) -> str:
    request.app.state.calls.append("token")
    if request.headers.get("x-token") != "ok":
        raise _TeapotError
    return "ok"


class _Checked:
    async def __call__(self, request: Request, tok: Annotated[str, Depends(_token)]) -> str:
        request.app.state.calls.append("checked")
        return f"checked:{tok}"


async def _opened(request: Request) -> AsyncIterator[str]:
    request.app.state.calls.append("opened")
    try:
        yield "session"
    finally:
        request.app.state.calls.append("closed")


def _certify(request: Request) -> int | None:
    document = routing.decoded_json(request)
    if isinstance(document, dict) and type(document.get("n")) is int and document["n"] < 10:
        return int(document["n"])
    return None


async def _answer_fast(request: Request, n: int, values: Mapping[str, Any]) -> Response:
    request.app.state.calls.append("answer")
    return JSONResponse(
        {"n": n, "path": "fast", "key": values["key"], "session": values["session"]}
    )


def _items(
    item: _Item,
    key: Annotated[str, Depends(_Checked())],
    session: Annotated[str, Depends(_opened)],
    again: Annotated[str, Depends(_token)],
) -> dict[str, Any]:
    return {"n": item.n, "path": "fastapi", "key": key, "session": session}


def _app() -> FastAPI:
    """A route with a fast path for small numbers and the dependencies above."""
    router = APIRouter(route_class=routing.DecodedJsonRoute)
    router.post("/items")(routing.fast_path(_certify, _answer_fast)(_items))
    app = FastAPI()
    app.state.calls = []
    app.include_router(router)

    @app.exception_handler(_TeapotError)
    async def teapot(request: Request, exc: _TeapotError) -> Response:
        return JSONResponse({"teapot": True}, status_code=418)

    @app.middleware("http")
    async def decode(request: Request, call_next: Any) -> Response:
        # What api.middleware.ApiMiddleware does for every JSON body.
        request.scope.setdefault("state", {})[routing.DECODED_JSON] = json.loads(
            await request.body()
        )
        return await call_next(request)  # type: ignore[no-any-return]

    return app


def test_fast_path_answers_what_it_certifies_and_leaves_the_rest_to_fastapi() -> None:
    ok = {"x-token": "ok"}
    with TestClient(_app()) as client:
        fast = client.post("/items", json={"n": 3}, headers=ok).json()
        assert fast == {"n": 3, "path": "fast", "key": "checked:ok", "session": "session"}
        slow = client.post("/items", json={"n": 12}, headers=ok).json()
        assert slow == {"n": 12, "path": "fastapi", "key": "checked:ok", "session": "session"}
        refused = client.post("/items", json={"n": "x"}, headers=ok)
    assert refused.status_code == 422  # FastAPI's own validation error
    assert refused.json()["detail"][0]["loc"] == ["body", "n"]


def test_fast_path_runs_the_routes_own_dependencies_in_fastapis_order_when_certified() -> None:
    # The route's signature is the one statement of its dependencies: the fast path derives them
    # from it (sub-dependency first, one call per request, a yield dependency closed after the
    # answer) and raises what they raise, as FastAPI's handler does.
    fast_app, slow_app = _app(), _app()
    with TestClient(fast_app) as client:
        client.post("/items", json={"n": 3}, headers={"x-token": "ok"})
        denied = client.post("/items", json={"n": 3}, headers={"x-token": "no"})
    with TestClient(slow_app) as client:
        client.post("/items", json={"n": 12}, headers={"x-token": "ok"})
    fast, slow = fast_app.state.calls, slow_app.state.calls
    assert fast[:5] == ["token", "checked", "opened", "answer", "closed"]
    assert slow[:3] == fast[:3]  # FastAPI's own order
    assert denied.status_code == 418
    assert fast[5:] == ["token"]  # nothing after the dependency that raised


def _plain() -> str:
    return "x"


async def _with_header(x_tenant: Annotated[str, Header()]) -> str:
    return x_tenant


def _needs_plain(item: _Item, value: Annotated[str, Depends(_plain)]) -> int:
    return item.n


def _needs_header(item: _Item, value: Annotated[str, Depends(_with_header)]) -> int:
    return item.n


async def _never(request: Request, certified: object, values: Mapping[str, Any]) -> Response:
    raise AssertionError("not called")


@pytest.mark.parametrize("endpoint", [_needs_plain, _needs_header])
def test_a_fast_path_route_refuses_to_build_when_a_dependency_needs_fastapis_solver(
    endpoint: Any,
) -> None:
    # A plain `def` dependency (FastAPI runs it on a worker thread) or one taking a header the
    # fast path would not validate: the route does not build, so the app does not start.
    router = APIRouter(route_class=routing.DecodedJsonRoute)
    with pytest.raises(routing.FastPathDependencyError, match="'value'"):
        router.post("/items")(routing.fast_path(lambda r: None, _never)(endpoint))
