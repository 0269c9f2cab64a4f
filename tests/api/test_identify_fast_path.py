"""``POST /v1/identify`` answers a plain body on its fast path, exactly as FastAPI's handler would.

The identify route takes :func:`api.routing.fast_path` as the ingest route does: a body that
:func:`services.inputs.identify_input` certifies is answered without FastAPI's dependency solving
and body model; every other body goes to FastAPI's handler untouched. Both must answer the same
status, headers and body, and write the same, for the same requests, keys and ``Sec-GPC``
headers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import routing
from bootstrap.container import Container
from services import inputs
from tests.support.ingest_app import served_ingest_app


def _event(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "identifiers": [
            {"type": "cookie_id", "value": f"ck-ident-{n}"},
            {"type": "email", "value": f"ident.{n}@shop.example.de"},
        ],
        "source": "web",
        "traits": {"city": "Berlin"},
        "events": [{"name": "purchase", "properties": {"amount": 12.5}}],
        "message_id": f"m-ident-{n}",
        **extra,
    }


@contextmanager
def _served(work: Path) -> Iterator[tuple[TestClient, Container, dict[str, dict[str, str]]]]:
    with served_ingest_app(work, max_batch_events=3) as app:
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


def test_plain_identify_is_answered_on_the_fast_path_when_certified(
    tmp_path: Path, fastapi_body_reads: list[int]
) -> None:
    with _served(tmp_path) as (client, container, keys):
        plain = client.post("/v1/identify", json=_event(1), headers=keys["ingest"])
        assert plain.status_code == 200, plain.text
        assert fastapi_body_reads == []  # FastAPI's handler never saw it

        # Valid, but the certification leaves it to the model: a space for the "T".
        model_only = client.post(
            "/v1/identify", json=_event(2, timestamp="2026-01-05 08:00:00Z"), headers=keys["ingest"]
        )
        assert model_only.status_code == 200, model_only.text
        assert fastapi_body_reads == [1]  # the model judged this one
        assert plain.json()["outcome"] == model_only.json()["outcome"] == "created"
        assert container.store.stats().identifiers == 4


@pytest.mark.parametrize(
    ("key", "sec_gpc", "bodies"),
    [
        ("ingest", None, [_event(1)]),
        ("ingest", "1", [_event(1)]),  # GPC opt-outs recorded, consents answered
        ("ingest", "0", [_event(1)]),
        ("ingest", None, [_event(1), _event(1)]),  # the second is a duplicate message
        ("ingest", None, [_event(1), _event(2, identifiers=_event(1)["identifiers"])]),
        ("ingest", None, [_event(1, identifiers=[{"type": "email", "value": "x"}])]),  # 422
        ("ingest", None, [_event(1, traits={"ssn": "123-45-6789"})]),  # a trait the policy refuses
        ("ingest", None, [{**_event(1), "extra": 1}]),  # the model's own 422
        ("resolve", None, [_event(1)]),  # 403: the key lacks the scope
        ("unknown", None, [_event(1)]),  # 401: no such key
        ("basic", None, [_event(1)]),  # 401: not a bearer key
    ],
)
def test_identify_answers_as_fastapis_handler_when_the_fast_path_takes_the_request(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    sec_gpc: str | None,
    bodies: list[dict[str, Any]],
) -> None:
    answers = []
    written = []
    for fast in (True, False):
        with monkeypatch.context() as patch, _served(tmp_path / str(fast)) as served:
            client, container, keys = served
            if not fast:  # nothing certified: FastAPI's handler answers every request
                patch.setattr(inputs, "identify_input", lambda _document: None)
            headers = keys[key] | ({"Sec-GPC": sec_gpc} if sec_gpc is not None else {})
            answers.append(
                [_answer(client.post("/v1/identify", json=b, headers=headers)) for b in bodies]
            )
            stats = container.store.stats()
            written.append((stats.persons, stats.identifiers))
    assert answers[0] == answers[1]
    assert written[0] == written[1]


def test_identify_body_is_validated_by_the_model_when_the_app_has_dependency_overrides(
    tmp_path: Path, fastapi_body_reads: list[int]
) -> None:
    with _served(tmp_path) as (client, _, keys):
        client.app.dependency_overrides[lambda: None] = lambda: None  # type: ignore[attr-defined]
        response = client.post("/v1/identify", json=_event(1), headers=keys["ingest"])
    assert response.status_code == 200, response.text
    assert fastapi_body_reads == [1]
