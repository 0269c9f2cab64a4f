"""GET /metrics: scopes, counters that move, histograms, and a scrape free of personal data."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.metrics import Metrics
from bootstrap.container import build_container
from bootstrap.settings import Settings
from privacy.access.api_keys import Scope
from tests.conftest import Api
from tests.support.ingest_samples import sample_outcomes

ANN = [
    {"type": "email", "value": "Ann.Lee@Shop.example.de"},
    {"type": "phone", "value": "+44 20 7946 0958"},
]
BOB = [
    {"type": "email", "value": "bob.stone@mail.example.org"},
    {"type": "customer_id", "value": "C-770011"},
]
IBAN = "DE89 3704 0044 0532 0130 00"


def _metrics_key(api: Api) -> dict[str, str]:
    _, token = api.container.api_keys.create("scraper", frozenset({Scope.METRICS}))
    return {"Authorization": f"Bearer {token}"}


def _scrape(api: Api, headers: dict[str, str] | None = None) -> str:
    response = api.client.get("/metrics", headers=headers or api.admin)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    text: str = response.text
    return text


def _value(text: str, sample: str, **labels: str) -> float:
    """The value of the sample named ``sample`` whose labels include ``labels`` (0 if none)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and labels.items() <= s.labels.items():
                return float(s.value)
    return 0.0


def _identify(api: Api, identifiers: list[dict[str, str]], **extra: Any) -> Any:
    response = api.client.post(
        "/v1/identify",
        json={"identifiers": identifiers, "source": "web", **extra},
        headers=api.ingest,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_metrics_is_401_without_a_key(api: Api) -> None:
    response = api.client.get("/metrics")
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")


def test_metrics_is_403_for_a_key_without_the_metrics_scope(api: Api) -> None:
    response = api.client.get("/metrics", headers=api.ingest)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")


def test_metrics_answers_a_metrics_key_and_an_admin_key(api: Api) -> None:
    assert "idgraph_http_requests_total" in _scrape(api, _metrics_key(api))
    assert "idgraph_http_requests_total" in _scrape(api, api.admin)


def test_ingest_counters_move_by_outcome_reason_and_fact_status(api: Api) -> None:
    before = _scrape(api)
    assert _value(before, "idgraph_ingest_events_total", outcome="created") == 0
    _identify(api, ANN, traits={"city": "Lisbon", "street_address": f"pay to {IBAN}"})
    _identify(api, ANN)  # unchanged
    _identify(api, [ANN[0], {"type": "cookie_id", "value": "c-1"}])  # linked
    _identify(api, [{"type": "cookie_id", "value": "c-2"}, {"type": "email", "value": "test@x.de"}])
    batch = api.client.post(
        "/v1/ingest",
        json={"events": [{"identifiers": BOB, "source": "crm"}]},
        headers=api.ingest,
    )
    assert batch.status_code == 200, batch.text
    after = _scrape(api)
    assert _value(after, "idgraph_ingest_events_total", outcome="created") == 3
    assert _value(after, "idgraph_ingest_events_total", outcome="unchanged") == 1
    assert _value(after, "idgraph_ingest_events_total", outcome="linked") == 1
    assert _value(after, "idgraph_ingest_refused_identifiers_total", reason="blocked_pattern") == 1
    assert _value(after, "idgraph_ingest_facts_total", status="stored") >= 1
    assert _value(after, "idgraph_ingest_facts_total", status="quarantined") == 1
    assert _value(after, "idgraph_store_seconds_count", operation="ingest") == 5


def test_requests_are_counted_by_route_template_with_a_latency_histogram(api: Api) -> None:
    _identify(api, ANN)
    person = api.client.post(
        "/v1/resolve", json={"identifier": ANN[0]}, headers=api.resolve
    ).json()["person_id"]
    text = _scrape(api)
    labels = {"method": "POST", "route": "/v1/identify"}
    assert _value(text, "idgraph_http_requests_total", status="200", **labels) == 1
    assert _value(text, "idgraph_http_request_duration_seconds_count", **labels) == 1
    assert _value(text, "idgraph_http_request_duration_seconds_bucket", le="+Inf", **labels) == 1
    assert _value(text, "idgraph_store_seconds_count", operation="resolve") == 1
    assert person not in text


def test_unknown_paths_count_as_unmatched_and_never_by_their_path(api: Api) -> None:
    for path in ("/v1/persons/ann.lee@shop.example.de", "/nothing/here"):
        assert api.client.get(path, headers=api.admin).status_code == 404
    text = _scrape(api)
    assert _value(text, "idgraph_http_requests_total", route="unmatched", status="404") == 2
    assert "ann.lee" not in text
    assert "/nothing/here" not in text


def test_refusals_before_routing_count_under_the_route_template(api: Api) -> None:
    oversized = b'{"pad": "' + b"a" * api.container.settings.max_body_bytes + b'"}'
    response = api.client.post(
        "/v1/ingest", content=oversized, headers={**api.admin, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert api.client.post("/v1/ingest", content=b"{").status_code == 401  # the edge guard
    unsupported = api.client.post(
        "/v1/ingest", content=b"a=1", headers={**api.admin, "Content-Type": "text/plain"}
    )
    assert unsupported.status_code == 415
    assert api.client.get("/v1/identify").status_code == 405
    text = _scrape(api)
    for status in ("401", "413", "415"):
        assert _value(text, "idgraph_http_requests_total", route="/v1/ingest", status=status) == 1
    assert _value(text, "idgraph_http_requests_total", route="/v1/identify", status="405") == 1


def test_the_scrape_holds_no_identifier_person_id_or_key_id(api: Api) -> None:
    persons = []
    for identifiers in (ANN, BOB):
        _identify(api, identifiers)
        response = api.client.post(
            "/v1/resolve", json={"identifier": identifiers[0]}, headers=api.resolve
        )
        persons.append(response.json()["person_id"])
    api.client.post(
        "/v1/links/explain", json={"a": ANN[0], "b": ANN[1]}, headers=api.admin
    ).raise_for_status()
    key_ids = [key.key_id for key in api.container.api_keys.list()]
    assert key_ids
    assert all(persons)
    text = _scrape(api, _metrics_key(api)).lower()
    forbidden = [
        "ann.lee",
        "shop.example.de",
        # The phone's national digits; a shorter fragment such as "7946" can occur by
        # chance inside a histogram value or a timestamp and would make this test flaky.
        "2079460958",
        "+442079460958",
        "bob.stone",
        "mail.example.org",
        "c-770011",
        *persons,
        *key_ids,
    ]
    assert [value for value in forbidden if value.lower() in text] == []


def test_each_app_has_its_own_registry(api: Api, settings: Settings) -> None:
    other_settings = settings.model_copy(update={"data_dir": settings.data_dir / "other"})
    container = build_container(other_settings)
    try:
        _, token = container.api_keys.create("other", frozenset({Scope.ADMIN}))
        with TestClient(create_app(container=container)) as other:
            _identify(api, ANN)
            response = other.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200
            assert _value(response.text, "idgraph_ingest_events_total", outcome="created") == 0
        assert _value(_scrape(api), "idgraph_ingest_events_total", outcome="created") == 1
    finally:
        container.close()


def test_policy_decisions_label_only_declared_purposes() -> None:
    metrics = Metrics()
    metrics.declare_purposes(["analytics", "advertising"])
    metrics.record_policy_decision("analytics", allowed=True)
    metrics.record_policy_decision("advertising", allowed=False)
    metrics.record_policy_decision("ann.lee@shop.example.de", allowed=False)
    text = metrics.exposition().decode()
    sample = "idgraph_policy_decisions_total"
    assert _value(text, sample, purpose="analytics", decision="allow") == 1
    assert _value(text, sample, purpose="advertising", decision="deny") == 1
    assert _value(text, sample, purpose="undeclared", decision="deny") == 1
    assert "ann.lee" not in text


def test_dsr_queue_gauges_show_the_last_value_set() -> None:
    metrics = Metrics()
    metrics.set_dsr_queue(3, 42.5)
    metrics.set_dsr_queue(2, 12.0)
    text = metrics.exposition().decode()
    assert _value(text, "idgraph_dsr_queue_depth") == 2
    assert _value(text, "idgraph_dsr_queue_oldest_age_seconds") == pytest.approx(12.0)


def test_an_identifier_sent_twice_and_refused_counts_once_but_is_reported_at_both_positions(
    api: Api,
) -> None:
    # The refusal is reported at each position it was sent at (a repeat must not read as
    # linked), but it is one refused identifier: counts and metrics count identifiers.
    blocked = {"type": "cookie_id", "value": "null"}
    before = _scrape(api)
    body = {"events": [{"identifiers": [ANN[0], blocked, blocked], "source": "web"}]}
    response = api.client.post("/v1/ingest", json=body, headers=api.ingest)
    assert response.status_code == 200, response.text
    result = response.json()

    assert [r["pointer"] for r in result["results"][0]["refused"]] == [
        "#/events/0/identifiers/1",
        "#/events/0/identifiers/2",
    ]
    assert result["refused_identifiers"] == 1
    after = _scrape(api)
    reason = {"reason": "blocked_value"}
    assert (
        _value(after, "idgraph_ingest_refused_identifiers_total", **reason)
        - _value(before, "idgraph_ingest_refused_identifiers_total", **reason)
        == 1
    )


def test_batch_counts_equal_the_events_counted_one_by_one_when_recorded_at_once() -> None:
    at_once, one_by_one = Metrics(), Metrics()
    outcomes = sample_outcomes()
    at_once.record_ingest(outcomes)
    for outcome in outcomes:
        one_by_one.record_ingest([outcome])
    at_once.record_ingest([])

    def ingest_series(metrics: Metrics) -> list[str]:
        text = generate_latest(metrics.registry).decode()
        return [
            line
            for line in text.splitlines()
            if line.startswith("idgraph_ingest_") and "_created" not in line
        ]

    assert ingest_series(at_once) == ingest_series(one_by_one)
    assert 'idgraph_ingest_refused_identifiers_total{reason="blocked_value"} 1.0' in (
        ingest_series(at_once)
    )
