"""The typed client (clients/python) against the live app: uvicorn on a free port (issue 19)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from idgraph_client import (
    AuthenticationError,
    ConflictError,
    ForbiddenError,
    IdGraph,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    identifier,
    parse_retry_after,
)

import api.app
from api.ratelimit import RateLimiter
from bootstrap.container import Container, build_container
from bootstrap.settings import Settings
from privacy.access.api_keys import Scope
from tests.live_server import serve

EMAIL = identifier("email", "client.person@shop.example.de")
COOKIE = identifier("cookie_id", "client-cookie-1")


@dataclass
class Live:
    url: str
    admin: str
    resolve_only: str
    container: Container


def _live(settings: Settings) -> Iterator[Live]:
    container = build_container(settings)
    _, admin = container.api_keys.create(
        "client-admin", frozenset({Scope.ADMIN}), purposes=frozenset({"*"})
    )
    _, resolve_only = container.api_keys.create("client-resolve", frozenset({Scope.RESOLVE}))
    try:
        with serve(container) as url:
            yield Live(url, admin, resolve_only, container)
    finally:
        container.close()


@pytest.fixture
def live(settings: Settings) -> Iterator[Live]:
    yield from _live(settings)


@dataclass
class ManualClock:
    """The rate limiter's clock, moved only by the client's waits: with the wall clock, a
    loaded machine that took a second between two requests refilled the bucket and the
    request the test expected refused was served."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def throttled(
    settings: Settings, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Live]:
    # One request in the bucket, refilled at 60 a minute: the second request within a second
    # gets 429 with Retry-After: 1.
    def limiter(per_minute: int, burst: int) -> RateLimiter:
        return RateLimiter(per_minute, burst, clock=clock)

    monkeypatch.setattr(api.app, "RateLimiter", limiter)
    yield from _live(
        settings.model_copy(update={"rate_limit_per_minute": 60, "rate_limit_burst": 1})
    )


def test_identify_resolve_and_explain_round_trip_when_served(live: Live) -> None:
    with IdGraph(live.url, live.admin) as idg:
        first = idg.identify([EMAIL, COOKIE], source="web", traits={"city": "Lisbon"})
        person = idg.resolve("email", EMAIL["value"])
        explained = idg.explain(EMAIL, COOKIE)

    assert first["outcome"] == "created"
    assert person.startswith("p_")
    assert explained["linked"] is True
    assert explained["person_id"] == person


def test_a_repeated_message_id_is_answered_duplicate_when_ingest_is_retried(live: Live) -> None:
    with IdGraph(live.url, live.admin) as idg:
        once = idg.identify([EMAIL], source="web", message_id="evt-42")
        again = idg.identify([EMAIL, COOKIE], source="web", message_id="evt-42")
        batch = idg.ingest([{"identifiers": [COOKIE], "source": "web", "message_id": "evt-42"}])

    assert once["outcome"] == "created"
    assert again["outcome"] == "duplicate"
    assert batch["results"][0]["outcome"] == "duplicate"
    # The duplicate changed nothing: the cookie was never linked.
    with IdGraph(live.url, live.admin) as idg, pytest.raises(NotFoundError):
        idg.resolve("cookie_id", COOKIE["value"])


def test_problems_are_raised_as_typed_exceptions_when_the_api_refuses(live: Live) -> None:
    with IdGraph(live.url, live.admin) as idg:
        with pytest.raises(NotFoundError) as not_found:
            idg.resolve("email", "nobody@shop.example.de")
        with pytest.raises(InvalidRequestError) as invalid:
            idg.identify([identifier("email", "not-an-email")], source="web")
        idg.submit_dsr("dsr-client-1", "access", [EMAIL])
        with pytest.raises(ConflictError) as conflict:
            idg.submit_dsr("dsr-client-1", "erasure", [EMAIL])
    with IdGraph(live.url, "idg_wrong") as idg, pytest.raises(AuthenticationError):
        idg.resolve("email", EMAIL["value"])
    with IdGraph(live.url, live.resolve_only) as idg, pytest.raises(ForbiddenError):
        idg.identify([EMAIL], source="web")

    assert not_found.value.name == "identifier-not-found"
    assert invalid.value.status == 422
    assert invalid.value.errors[0].pointer == "#/identifiers/0/value"
    assert "not-an-email" not in str(invalid.value)
    assert conflict.value.name == "dsr-conflict"
    assert conflict.value.instance is not None
    assert conflict.value.instance.startswith("urn:idgraph:request:")


def test_pagination_helpers_follow_the_cursors_to_the_end(live: Live) -> None:
    with IdGraph(live.url, live.admin) as idg:
        for i in range(7):
            idg.identify(
                [identifier("email", f"page.{i}@shop.example.de")],
                source="web",
                traits={"city": "Lisbon"},
            )
            idg.record_consent(
                [identifier("email", f"page.{i}@shop.example.de")], decisions={"analytics": True}
            )
        audience = idg.create_audience(
            "lisbon",
            "analytics",
            {"attributes": [{"attribute": "city", "op": "eq", "value": "Lisbon"}]},
        )
        members = list(idg.iter_audience_members(audience["id"], page_size=2))
        for i in range(5):
            idg.submit_dsr(
                f"dsr-page-{i}", "access", [identifier("email", f"page.{i}@shop.example.de")]
            )
        requests = list(idg.iter_dsr(page_size=2))

    assert len(members) == len(set(members)) == 7
    assert sorted(r["request_id"] for r in requests) == [f"dsr-page-{i}" for i in range(5)]


def test_429_is_retried_after_the_servers_retry_after_when_rate_limited(
    throttled: Live, clock: ManualClock
) -> None:
    waits: list[float] = []
    with IdGraph(throttled.url, throttled.admin, max_retries=2, sleep=waits.append) as idg:
        idg.identify([EMAIL], source="web")
        with pytest.raises(RateLimitedError) as limited:
            idg.resolve("email", EMAIL["value"])  # the waits pass no time: every retry refused
    assert waits == [1.0, 1.0]
    assert limited.value.retry_after == 1.0

    with IdGraph(throttled.url, throttled.admin, max_retries=3, sleep=clock.sleep) as idg:
        # A wait of Retry-After seconds (on the limiter's clock): the bucket has refilled.
        assert idg.resolve("email", EMAIL["value"]).startswith("p_")
    assert clock.now == 1001.0


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 02 Dec 2026 10:00:30 GMT", now=lambda: 1796205600.0) == 30.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
