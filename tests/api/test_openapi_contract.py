"""The OpenAPI document is a contract (issue 19): valid OpenAPI 3.1, named operations, every
error answer declared with the problem+json schema, an example for every request body.

That the app answers only what is declared, with bodies that fit, is checked by schemathesis in
tests/api/test_api_fuzz.py (status-code, content-type and response-schema conformance)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from openapi_spec_validator import validate

from api.problems import PROBLEM_JSON
from tests.conftest import Api

METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
def document(api: Api) -> dict[str, Any]:
    response = api.client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_the_document_is_valid_openapi_3_1_when_served(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_operation_has_a_named_unique_operation_id(document: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in _operations(document)]
    assert len(ids) == len(set(ids))
    # Named by hand or by handler (camelCase), never FastAPI's `identify_v1_identify_post`.
    assert [i for i in ids if not re.fullmatch(r"[a-z]+([A-Z][a-z0-9]*)*", i)] == []
    assert {"identify", "ingest", "resolve", "recordConsent", "consentWebhook"} <= set(ids)


def test_every_error_answer_is_declared_as_a_problem_when_documented(
    document: dict[str, Any],
) -> None:
    missing: list[str] = []
    for method, path, operation in _operations(document):
        responses = operation["responses"]
        if "500" not in responses:
            missing.append(f"{method} {path}: 500")
        for status, response in responses.items():
            if int(status) < 400:
                continue
            content = response.get("content", {})
            if set(content) != {PROBLEM_JSON} or content[PROBLEM_JSON].get("schema") != {
                "$ref": "#/components/schemas/Problem"
            }:
                missing.append(f"{method} {path}: {status} {sorted(content)}")
    assert missing == []
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_routes_with_keys_and_bodies_declare_the_answers_around_them(
    document: dict[str, Any],
) -> None:
    identify = document["paths"]["/v1/identify"]["post"]["responses"]
    assert {"400", "401", "403", "413", "415", "422", "429", "500", "503"} <= set(identify)
    assert "Retry-After" in identify["429"]["headers"]
    readyz = document["paths"]["/readyz"]["get"]["responses"]
    assert {"200", "500", "503"} <= set(readyz)
    assert "401" not in readyz


def test_every_request_body_has_an_example(document: dict[str, Any]) -> None:
    without = [
        f"{method} {path}"
        for method, path, operation in _operations(document)
        for media in operation.get("requestBody", {}).get("content", {}).values()
        if "example" not in media and "examples" not in media
    ]
    assert without == []
