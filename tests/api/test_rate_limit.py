"""Per-key rate limits: the token bucket itself, and 429 problem+json through the real app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from api.ratelimit import RateLimitedError, RateLimiter
from bootstrap.container import build_container
from bootstrap.settings import Settings
from privacy.access.api_keys import Scope

RESOLVE_BODY = {"identifier": {"type": "email", "value": "nobody@shop.example.de"}}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_gets_its_burst_then_429_with_the_seconds_until_a_token() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=6, burst=3, clock=clock)  # one token every 10 s
    for _ in range(3):
        limiter.acquire("k1")
    with pytest.raises(RateLimitedError) as refused:
        limiter.acquire("k1")
    assert refused.value.retry_after == 10
    clock.now += 4
    with pytest.raises(RateLimitedError) as again:
        limiter.acquire("k1")
    assert again.value.retry_after == 6  # rounded up, never 0
    clock.now += 6
    limiter.acquire("k1")


def test_buckets_refill_only_up_to_the_burst_when_idle() -> None:
    clock = FakeClock()
    limiter = RateLimiter(per_minute=60, burst=2, clock=clock)
    limiter.acquire("k1")
    clock.now += 3600
    limiter.acquire("k1")
    limiter.acquire("k1")
    with pytest.raises(RateLimitedError):
        limiter.acquire("k1")


def test_keys_are_limited_independently() -> None:
    limiter = RateLimiter(per_minute=1, burst=1, clock=FakeClock())
    limiter.acquire("k1")
    limiter.acquire("k2")
    with pytest.raises(RateLimitedError):
        limiter.acquire("k1")


def test_zero_per_minute_turns_limiting_off() -> None:
    limiter = RateLimiter(per_minute=0, burst=1, clock=FakeClock())
    assert not limiter.enabled
    for _ in range(1000):
        limiter.acquire("k1")


@pytest.fixture
def limited(settings: Settings) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    """An app allowing each key 2 requests at once and 1 a minute after that."""
    container = build_container(
        settings.model_copy(update={"rate_limit_per_minute": 1, "rate_limit_burst": 2})
    )
    _, first = container.api_keys.create("first", frozenset({Scope.RESOLVE}))
    _, second = container.api_keys.create("second", frozenset({Scope.ADMIN}))
    with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
        yield (
            client,
            {"Authorization": f"Bearer {first}"},
            {"Authorization": f"Bearer {second}"},
        )
    container.close()


def test_a_key_over_its_rate_gets_429_problem_json_with_retry_after(
    limited: tuple[TestClient, dict[str, str], dict[str, str]],
) -> None:
    client, first, second = limited
    for _ in range(2):
        assert client.post("/v1/resolve", json=RESOLVE_BODY, headers=first).status_code == 404
    response = client.post("/v1/resolve", json=RESOLVE_BODY, headers=first)
    assert response.status_code == 429
    assert response.headers["content-type"].startswith("application/problem+json")
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit()
    assert 1 <= int(retry_after) <= 60
    body = response.json()
    assert body["status"] == 429
    assert body["type"] == "urn:idgraph:problem:rate-limited"
    # Another key is not affected, and the refusal is counted (without the key id).
    metrics = client.get("/metrics", headers=second)
    assert metrics.status_code == 200
    (family,) = [
        f for f in text_string_to_metric_families(metrics.text) if f.name == "idgraph_rate_limited"
    ]
    assert [s.value for s in family.samples if s.name == "idgraph_rate_limited_total"] == [1.0]
    assert first["Authorization"].split(".")[0].removeprefix("Bearer idg_") not in metrics.text


def test_a_key_over_its_rate_is_refused_on_endpoints_it_may_not_use_too(
    limited: tuple[TestClient, dict[str, str], dict[str, str]],
) -> None:
    client, first, _ = limited
    for _ in range(2):
        assert client.get("/metrics", headers=first).status_code == 403
    assert client.get("/metrics", headers=first).status_code == 429


def test_requests_without_a_valid_key_are_401_not_rate_limited(
    limited: tuple[TestClient, dict[str, str], dict[str, str]],
) -> None:
    client, _, _ = limited
    for _ in range(5):
        assert client.post("/v1/resolve", json=RESOLVE_BODY).status_code == 401
