"""Issue 13 (build list): personal-data responses are not cacheable, a 429 carries the
RateLimit-* fields, and idgraph_policy_decisions_total counts the policy engine's decisions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from bootstrap.container import build_container
from bootstrap.settings import Settings
from privacy.access.api_keys import Scope
from tests.api.test_reads_api import World
from tests.api.test_reads_api import world as _world_fixture
from tests.conftest import Api

world = _world_fixture
RESOLVE_BODY = {"identifier": {"type": "customer_id", "value": "C-NONE"}}


def test_personal_data_responses_say_no_store(world: World) -> None:
    api = world.api
    reader = world.key("ad_targeting")
    profile = api.client.get(
        f"/v1/profiles/{world.a}", params={"purpose": "ad_targeting"}, headers=reader
    )
    resolved = api.client.post(
        "/v1/resolve",
        json={"identifier": {"type": "customer_id", "value": "C-1"}},
        headers=api.resolve,
    )
    refused = api.client.get(f"/v1/profiles/{world.b}", params={"purpose": "ad_targeting"})

    for response in (profile, resolved, refused):
        assert response.headers["cache-control"] == "no-store", response.request.url


def test_probes_stay_cacheable(api: Api) -> None:
    assert "cache-control" not in api.client.get("/healthz").headers


@pytest.fixture
def limited(settings: Settings) -> Iterator[tuple[TestClient, dict[str, str]]]:
    container = build_container(
        settings.model_copy(update={"rate_limit_per_minute": 1, "rate_limit_burst": 2})
    )
    _, token = container.api_keys.create("first", frozenset({Scope.RESOLVE}))
    with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
        yield client, {"Authorization": f"Bearer {token}"}
    container.close()


def test_429_carries_ratelimit_fields(limited: tuple[TestClient, dict[str, str]]) -> None:
    client, key = limited
    for _ in range(2):
        client.post("/v1/resolve", json=RESOLVE_BODY, headers=key)

    response = client.post("/v1/resolve", json=RESOLVE_BODY, headers=key)

    assert response.status_code == 429
    assert response.headers["ratelimit-limit"] == "2"
    assert response.headers["ratelimit-remaining"] == "0"
    assert response.headers["ratelimit-reset"] == response.headers["retry-after"]
    assert response.headers["ratelimit-policy"] == "2;w=60"


def _decisions(api: Api) -> dict[tuple[str, str], float]:
    scrape = api.client.get("/metrics", headers=api.admin)
    assert scrape.status_code == 200, scrape.text
    (family,) = [
        f
        for f in text_string_to_metric_families(scrape.text)
        if f.name == "idgraph_policy_decisions"
    ]
    return {
        (s.labels["purpose"], s.labels["decision"]): s.value
        for s in family.samples
        if s.name == "idgraph_policy_decisions_total"
    }


def test_policy_decisions_are_counted_for_reads(world: World) -> None:
    api = world.api
    reader = world.key("ad_targeting")
    for person in (world.a, world.b):
        api.client.get(f"/v1/profiles/{person}", params={"purpose": "ad_targeting"}, headers=reader)
    api.client.get(
        f"/v1/profiles/{world.a}", params={"purpose": "analytics"}, headers=reader
    )  # not in the key's purposes: a deny too

    counted = _decisions(api)

    assert counted[("ad_targeting", "allow")] == 1.0
    assert counted[("ad_targeting", "deny")] == 1.0
    assert counted[("analytics", "deny")] == 1.0
