"""``POST /v1/ingest`` bodies are certified without a model per event, and answer as the model.

:class:`services.inputs.IngestBatch` validates a batch body against :class:`IngestRequest`'s
schema, but certifies bodies in the plain shape event by event (:func:`ingest_inputs`, the bulk
rows' :func:`identify_input`) instead of building the model. The properties below hold it to
that: whatever it accepts, the model accepts with the same values; whatever the model refuses,
it refuses with the model's errors at the model's locations; the HTTP answers (status, body,
pointers, what is written) are the same with and without the certified path; and the OpenAPI
document still names the model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from identity.strict_json import loads_strict
from services import inputs
from services.inputs import IdentifyInput, IngestBatch, IngestRequest, ingest_inputs
from tests.conftest import Api
from tests.services.test_bulk_validation import (
    _mutated_rows,
    _plain_valid_rows,
    _rows,
    _same,
)
from tests.support.ingest_app import served_ingest_app

BATCH = TypeAdapter(IngestBatch)
MODEL = TypeAdapter(IngestRequest)


def _realistic_events() -> st.SearchStrategy[dict[str, Any]]:
    """Events the shipped policies accept (and some they refuse): 200s, merges, refusals and
    message-id duplicates, not only 422s."""
    identifier = st.one_of(
        st.builds(lambda n: {"type": "cookie_id", "value": f"ck-{n}"}, st.integers(0, 5)),
        st.builds(lambda n: {"type": "email", "value": f"p{n}@shop.example.de"}, st.integers(0, 5)),
        st.builds(lambda n: {"type": "customer_id", "value": f"C{n}"}, st.integers(0, 3)),
        st.just({"type": "customer_id", "value": "null"}),  # a blocked value: refused
        st.just({"type": "email", "value": "not-an-email"}),  # invalid: 422
    )
    return st.fixed_dictionaries(
        {
            "identifiers": st.lists(identifier, min_size=1, max_size=3),
            "source": st.sampled_from(["web", "crm:sf"]),
        },
        optional={
            "traits": st.fixed_dictionaries(
                {},
                optional={"city": st.sampled_from(["Berlin", "Lyon"]), "visit_count": st.just(3)},
            ),
            "events": st.just([{"name": "purchase", "properties": {"amount": 12.5}}]),
            "message_id": st.sampled_from(["m-1", "m-2", "m-3"]),
            "timestamp": st.just("2026-01-05T08:00:00Z"),
        },
    )


def _bodies() -> st.SearchStrategy[Any]:
    """Batch bodies: lists of valid, mutated and arbitrary rows, and shapes around them."""
    events = st.lists(
        st.one_of(_plain_valid_rows(), _mutated_rows(), _rows()), min_size=0, max_size=6
    )
    return st.one_of(
        st.lists(_realistic_events(), min_size=1, max_size=6).map(lambda e: {"events": e}),
        events.map(lambda e: {"events": e}),
        st.lists(_plain_valid_rows(), min_size=1, max_size=6).map(lambda e: {"events": e}),
        events.map(lambda e: {"events": e, "extra": 1}),
        events.map(lambda e: {"Events": e}),
        st.lists(_plain_valid_rows(), min_size=1, max_size=2).map(lambda e: {"events": e[0]}),
        st.sampled_from([{}, [], None, 5, "events", {"events": None}, {"events": {}}]),
    )


def _decoded(body: Any) -> Any:
    """``body`` as the API's middleware hands it on: JSON text read by the strict reader."""
    return loads_strict(json.dumps(body))


def _errors(exc: ValidationError) -> list[tuple[Any, ...]]:
    return [(e["type"], e["loc"], e["msg"]) for e in exc.errors(include_url=False)]


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_bodies())
def test_batch_is_validated_as_the_model_validates_it_when_any_body(body: Any) -> None:
    decoded = _decoded(body)
    refused: list[tuple[Any, ...]] | None = None
    try:
        expected = MODEL.validate_python(decoded)
    except ValidationError as exc:
        refused = _errors(exc)
    if refused is not None:
        with pytest.raises(ValidationError) as caught:
            BATCH.validate_python(decoded)
        assert _errors(caught.value) == refused
        return
    batch = BATCH.validate_python(decoded)
    model_events = [IdentifyInput.of(e) for e in expected.events]
    assert len(batch.events) == len(model_events)
    for mine, theirs in zip(batch.events, model_events, strict=True):
        _same(mine, theirs)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(_plain_valid_rows(), min_size=1, max_size=8))
def test_plain_batches_are_certified_without_the_model_when_valid(
    events: list[dict[str, Any]],
) -> None:
    decoded = _decoded({"events": events})
    certified = ingest_inputs(decoded)
    assert certified is not None, "a plain valid batch went to the model"
    model_events = [IdentifyInput.of(e) for e in MODEL.validate_python(decoded).events]
    for mine, theirs in zip(certified, model_events, strict=True):
        _same(mine, theirs)


def test_batches_over_the_schemas_bound_are_left_to_the_model() -> None:
    event = {"identifiers": [{"type": "cookie_id", "value": "c1"}], "source": "web"}
    assert ingest_inputs({"events": [event] * inputs.MAX_BODY_EVENTS}) is not None
    assert ingest_inputs({"events": [event] * (inputs.MAX_BODY_EVENTS + 1)}) is None
    assert ingest_inputs({"events": []}) is None
    with pytest.raises(ValidationError) as caught:
        BATCH.validate_python({"events": [event] * (inputs.MAX_BODY_EVENTS + 1)})
    assert [e["loc"] for e in caught.value.errors()] == [("events",)]


def test_openapi_request_body_is_the_models_when_the_route_takes_a_certified_batch(
    api: Api,
) -> None:
    document = api.client.get("/openapi.json").json()
    body = document["paths"]["/v1/ingest"]["post"]["requestBody"]
    assert body["required"] is True
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/IngestRequest"
    }
    events = document["components"]["schemas"]["IngestRequest"]["properties"]["events"]
    assert events["items"] == {"$ref": "#/components/schemas/IdentifyRequest"}
    assert (events["minItems"], events["maxItems"]) == (1, inputs.MAX_BODY_EVENTS)
    assert "IngestBatch" not in document["components"]["schemas"]


# -- over HTTP: the same answers with and without the certified path ---------------------------


@contextmanager
def _client(work: Path) -> Iterator[tuple[TestClient, dict[str, str], Any]]:
    with served_ingest_app(work, max_batch_events=5) as app:
        yield app.client, app.keys["ingest"], app.container


def _answer(client: TestClient, headers: dict[str, str], body: Any) -> tuple[int, Any]:
    response = client.post("/v1/ingest", content=json.dumps(body), headers=headers | _JSON)
    document = response.json()
    if isinstance(document, dict):
        document.pop("instance", None)  # the request id
    return response.status_code, document


_JSON = {"Content-Type": "application/json"}


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batches=st.lists(_bodies(), min_size=1, max_size=3))
def test_ingest_answers_as_the_model_path_when_batches_are_certified(
    batches: list[Any],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = []
    counts = []
    for certified in (True, False):
        with monkeypatch.context() as patch, _client(tmp_path_factory.mktemp("api")) as opened:
            client, headers, container = opened
            if not certified:
                patch.setattr(inputs, "ingest_inputs", lambda _document: None)
            answers.append([_answer(client, headers, body) for body in batches])
            stats = container.store.stats()
            counts.append((stats.persons, stats.identifiers))
    mine, theirs = answers
    assert mine == theirs
    assert counts[0] == counts[1]


def test_invalid_event_is_located_as_before_when_the_others_are_certifiable(api: Api) -> None:
    events: list[dict[str, Any]] = [
        {"identifiers": [{"type": "cookie_id", "value": f"c{i}"}], "source": "web"}
        for i in range(4)
    ]
    events[2]["traits"] = {"City": "Berlin"}  # not a policy-shaped name
    events[3]["identifiers"][0]["value"] = ""
    response = api.client.post("/v1/ingest", json={"events": events}, headers=api.ingest)
    assert response.status_code == 422, response.text
    pointers = [e["pointer"] for e in response.json()["errors"]]
    assert pointers == ["#/events/2/traits", "#/events/3/identifiers/0/value"]
    assert api.container.store.stats().identifiers == 0
