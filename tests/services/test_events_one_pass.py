"""``IngestService.events`` completes a request of identifiers only in one pass (stop 47): one
:meth:`IdentityPolicy.normalize_valid` call per request, no per-identifier ``normalize`` call
and no second loop, when every identifier normalizes. A request with any identifier that does
not normalize takes the general path, which locates every problem as before.

``test_plain_requests_make_no_call_per_identifier_when_valid`` fails on the old code (one
``IdentityPolicy.normalize`` call per identifier); the others guard that both paths give the
same events and the same errors."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootstrap.container import Container
from identity.errors import BatchValidationError, InputLimitError
from identity.identifiers import NormalizedIdentifier
from identity.intake import normalize_all
from identity.model import IdentityEvent
from identity.policy import IdentityPolicy
from services.inputs import IdentifyInput
from tests.support.containers import opened_container

AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    with opened_container(tmp_path_factory.mktemp("one-pass") / "data", pii_scan=False) as opened:
        yield opened


def _request(
    pairs: Sequence[tuple[str, str]], traits: dict[str, Any] | None = None
) -> IdentifyInput:
    return IdentifyInput(tuple(pairs), "crm", AT, traits, (), "m-1")


def _expected(container: Container, request: IdentifyInput) -> IdentityEvent | BatchValidationError:
    """What the general path makes of ``request`` (normalize_all, located under ``#``)."""
    try:
        identifiers = normalize_all(
            request.identifiers,
            container.identity_policy,
            container.settings.default_region,
            "#/identifiers",
        )
    except BatchValidationError as exc:
        return exc
    return IdentityEvent(identifiers, request.source, AT, message_id=request.message_id)


def _errors(result: object) -> list[tuple[str, str, str]]:
    assert isinstance(result, BatchValidationError)
    return [(e.field, e.reason, e.message) for e in result.errors]


def test_plain_requests_make_no_call_per_identifier_when_valid(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    normalize = IdentityPolicy.normalize

    def counting(self: IdentityPolicy, kind: str, value: str, region: str | None) -> Any:
        calls.append(kind)
        return normalize(self, kind, value, region)

    monkeypatch.setattr(IdentityPolicy, "normalize", counting)
    requests = [
        _request([("email", " Ann@Shop.DE "), ("phone", "+4915100012345")]),
        _request([("customer_id", "C1"), ("cookie_id", "k1"), ("cookie_id", "k1")]),
    ]
    results = container.ingest.events(requests)

    assert calls == []  # old code: one call per identifier (5)
    assert results == [_expected(container, r) for r in requests]
    assert results[0].identifiers == (  # type: ignore[union-attr]
        NormalizedIdentifier("email", "ann@shop.de"),
        NormalizedIdentifier("phone", "+4915100012345"),
    )

    # A request with traits (facts to scan) still takes the general path.
    calls.clear()  # (_expected normalized the requests the general way)
    container.ingest.events([_request([("email", "b@shop.de")], {"city": "Leeds"})])
    assert calls == ["email"]


def test_plain_requests_get_every_located_error_when_one_identifier_fails(
    container: Container,
) -> None:
    bad = _request(
        [
            ("email", "c@shop.de"),
            ("fax", "123"),  # unknown type
            ("email", "not an email"),
            ("customer_id", "x" * 129),  # longer than customer_id's max_length (128)
        ]
    )
    (result,) = container.ingest.events([bad])

    assert _errors(result) == _errors(_expected(container, bad))
    assert [field for field, _, _ in _errors(result)] == [
        "#/identifiers/1/type",
        "#/identifiers/2/value",
        "#/identifiers/3/value",
    ]


def test_too_many_identifiers_are_refused_before_normalizing_when_plain(
    container: Container,
) -> None:
    limit = container.settings.max_identifiers_per_event
    (result,) = container.ingest.events(
        [_request([("cookie_id", f"k{i}") for i in range(limit + 1)])]
    )
    assert isinstance(result, InputLimitError)
    assert result.field == "#/identifiers"


# Valid and invalid values of several types: most requests normalize, some do not.
_VALUES = {
    "email": ["ann@shop.de", " Ben@Shop.DE", "not-an-email", "d@", "noreply@shop.de"],
    "phone": ["+4915100012345", "+44 20 7946 0958", "12", "+999123"],
    "customer_id": ["C1", " C2 ", "", "x" * 200],
    "cookie_id": ["k1", "null", "a\x01b"],
    "idfa": ["6D92078A-8246-4BA4-AE5B-76104861E7DC", "nope"],
    "fax": ["1"],
}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.lists(
            st.sampled_from(sorted(_VALUES)).flatmap(
                lambda kind: st.tuples(st.just(kind), st.sampled_from(_VALUES[kind]))
            ),
            min_size=1,
            max_size=5,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_events_are_the_general_paths_when_any_identifiers(
    container: Container, batches: list[list[tuple[str, str]]]
) -> None:
    requests = [_request(pairs) for pairs in batches]
    results = container.ingest.events(requests)
    for request, result in zip(requests, results, strict=True):
        expected = _expected(container, request)
        if isinstance(expected, BatchValidationError):
            assert _errors(result) == _errors(expected)
        else:
            assert result == expected
