"""One decode per JSON body: the routes of api.routing validate the middleware's document."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import TypeAdapter

from api.responses import ModelResponse
from api.routing import DECODED_JSON, DecodedJsonRequest
from api.schemas import IngestResponse


def _request(body: bytes, state: dict[str, Any]) -> DecodedJsonRequest:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        assert not sent
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "state": state}
    return DecodedJsonRequest(scope, receive)


def test_json_is_the_middlewares_document_when_it_decoded_the_body() -> None:
    document: dict[str, list[object]] = {"events": []}
    request = _request(b'{"events": []}', {DECODED_JSON: document})

    assert asyncio.run(request.json()) is document  # the same object: not decoded again


def test_json_decodes_the_body_when_the_middleware_did_not() -> None:
    request = _request(b'{"a": [1, 2]}', {})

    assert asyncio.run(request.json()) == {"a": [1, 2]}


def test_model_response_is_the_bytes_fastapi_would_send_when_none_fields_are_left_out() -> None:
    model = IngestResponse(
        events=1,
        outcomes={"created": 1},
        refused_identifiers=0,
        results=[
            {
                "index": 0,
                "outcome": "created",
                "new_identifiers": 3,
                "refused": [],
                "facts": {"stored": 2, "quarantined": 0, "dropped": 0},
            }
        ],
    )

    response = ModelResponse(model, exclude_none=True)

    expected = TypeAdapter(IngestResponse).dump_json(model, exclude_none=True, by_alias=True)
    assert response.body == expected
    assert response.headers["content-type"] == "application/json"
    assert "consents" not in json.loads(bytes(response.body))["results"][0]
