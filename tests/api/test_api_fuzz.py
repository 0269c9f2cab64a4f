"""Property-based fuzzing of every operation in the OpenAPI schema, against the real app.

schemathesis reads ``/openapi.json`` from the app in-process (ASGI transport: no network, no
server) and generates requests that fit the schema (positive) and requests that break it
(negative) for every operation the schema lists, so routes added later are fuzzed without
touching this file. Requests carry an admin key so they reach the handlers; negative cases may
drop or mangle it. For every response:

- never a 5xx;
- every 4xx is ``application/problem+json`` with ``type``, ``title``, ``status`` and ``detail``;
- every 2xx validates against the documented response schema.

Random strings almost never form a valid email or a trait key of the policy, so positive cases
have some identifiers, traits and events swapped for valid ones; identifiers come from a small
pool, so they come back in later requests and lookups, explains and unlinks find something.

The default suite runs a bounded number of examples per operation; ``make test-slow`` runs many
more. Hypothesis is derandomized and keeps no example database: a run is reproducible.

schemathesis' own pytest integration (``from_fixture``) does not work with pytest 9, so this
drives its Python API: one Hypothesis test per operation and mode, each a pytest subtest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance

from api.app import create_app
from api.problems import PROBLEM_JSON
from bootstrap.container import build_container
from bootstrap.settings import Settings
from privacy.access.api_keys import Scope
from tests.conftest import POLICY_DIR

Case = schemathesis.Case[Any]
Operation = APIOperation[Any, Any, Any, Any]
Draw = Callable[[st.SearchStrategy[Any]], Any]

# The default run spreads a fixed budget of examples over the operations (at least 5 each), so
# its time stays bounded as routes are added; the slow run gives every operation many.
DEFAULT_EXAMPLE_BUDGET = 400
MIN_EXAMPLES = 5
SLOW_EXAMPLES = 300
PROBLEM_MEMBERS = {"type": str, "title": str, "status": int, "detail": str}
IDENTIFIER_POOL: list[dict[str, str]] = [
    *({"type": "email", "value": f"fuzz.person{i}@shop.example.de"} for i in range(6)),
    *({"type": "phone", "value": f"+4474001234{i:02d}"} for i in range(4)),
    *({"type": "phone", "value": f"+49151234567{i:02d}"} for i in range(4)),
    *({"type": "customer_id", "value": f"FUZZ-{i}"} for i in range(4)),
    {"type": "idfa", "value": "6d92078a-8246-4ba4-ae5b-76104861e7dc"},
]
VALID_TRAITS: list[dict[str, Any]] = [
    {},
    {"city": "Lisbon", "age_band": "25-34"},
    {"visit_count": 3, "interests": ["running", "tea"]},
]
VALID_EVENTS: list[list[dict[str, Any]]] = [
    [],
    [{"name": "purchase", "properties": {"order_id": "o-1", "amount": 5.5, "items": 2}}],
    [{"name": "page_view", "properties": {"path": "/shoes"}}],
]


@dataclass(frozen=True)
class FuzzTarget:
    """The app's schema (loaded through the ASGI transport) and an admin key's headers."""

    schema: schemathesis.BaseSchema
    headers: dict[str, str]


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    """One real app on a real SQLite store for the whole module (building it takes seconds)."""
    container = build_container(
        Settings(
            env="test",
            data_dir=tmp_path_factory.mktemp("fuzz") / "data",
            policy_dir=POLICY_DIR,
            default_region="GB",
            max_batch_events=50,
            max_body_bytes=256 * 1024,
            rate_limit_per_minute=0,  # hundreds of requests a second are the point here
        )
    )
    _, token = container.api_keys.create("fuzz-admin", frozenset({Scope.ADMIN}))
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(container=container))
    yield FuzzTarget(schema, {"Authorization": f"Bearer {token}"})
    container.close()


def _with_valid_values(value: Any, draw: Draw) -> Any:
    """``value`` with every identifier, trait set and event list swapped for valid ones.

    Random strings are rarely a valid email or a trait key of the policy, so without this
    almost every positive case would stop at a 422 and the 2xx paths would go unfuzzed.
    """
    if isinstance(value, list):
        return [_with_valid_values(item, draw) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"type", "value"}:
        return dict(draw(st.sampled_from(IDENTIFIER_POOL)))
    swapped = {key: _with_valid_values(item, draw) for key, item in value.items()}
    if "identifiers" in swapped:
        swapped["traits"] = draw(st.sampled_from(VALID_TRAITS))
        swapped["events"] = draw(st.sampled_from(VALID_EVENTS))
    return swapped


def _assert_clean_response(case: Case, target: FuzzTarget) -> None:
    # schemathesis adds its own headers to the dict it is given: pass copies.
    response = case.call(headers=dict(target.headers))
    label = f"{case.operation.label} -> {response.status_code}"
    assert response.status_code < 500, f"{label}: {response.text[:500]}"
    # not_a_server_error: no 5xx; response_schema_conformance: documented bodies validate.
    case.validate_response(
        response,
        checks=[not_a_server_error, response_schema_conformance],
        headers=dict(target.headers),
    )
    if 400 <= response.status_code < 500:
        content_type = response.headers.get("content-type", [""])[0]
        assert content_type.split(";")[0].strip() == PROBLEM_JSON, f"{label}: {content_type!r}"
        body: Any = response.json()
        assert isinstance(body, dict), label
        for member, kind in PROBLEM_MEMBERS.items():
            assert isinstance(body.get(member), kind), f"{label}: problem lacks {member}: {body}"
        assert body["status"] == response.status_code, label
        assert body["type"].startswith("urn:idgraph:problem:"), label


def _fuzz_test(
    operation: Operation, mode: GenerationMode, target: FuzzTarget, max_examples: int, shrink: bool
) -> Callable[[], None]:
    """A Hypothesis test of ``operation`` in ``mode``: derandomized, no example database.

    Without ``shrink`` a failure reports the first failing request as generated: shrinking
    sends hundreds of requests per failing operation, too slow for the default suite.
    """

    @settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, *([Phase.shrink] if shrink else [])],
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def run(case: Case, data: st.DataObject) -> None:
        # A quarter of the positive cases keep their random (schema-valid) values.
        swap = data.draw(st.integers(0, 3)) > 0
        if mode is GenerationMode.POSITIVE and swap and case.body is not None:
            case.body = _with_valid_values(case.body, data.draw)
        _assert_clean_response(case, target)

    return run


def _fuzz(target: FuzzTarget, subtests: pytest.Subtests, max_examples: int | None) -> set[str]:
    """Fuzz every operation in both modes, one subtest each; return the operations fuzzed.

    ``max_examples`` per operation and mode, shrinking failures; ``None`` spreads the default
    budget and reports failures unshrunk.
    """
    shrink = max_examples is not None
    operations = []
    for result in target.schema.get_all_operations():
        assert isinstance(result, Ok), f"schemathesis cannot read an operation: {result}"
        operations.append(result.ok())
    if max_examples is None:
        max_examples = max(MIN_EXAMPLES, DEFAULT_EXAMPLE_BUDGET // (2 * len(operations)))
    fuzzed: set[str] = set()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            with subtests.test(msg=f"{operation.label} [{mode.value}]"):
                try:
                    _fuzz_test(operation, mode, target, max_examples, shrink)()
                except Unsatisfiable:
                    # Nothing to negate in an operation without parameters or body (/healthz).
                    assert mode is GenerationMode.NEGATIVE, operation.label
            fuzzed.add(operation.label)
    return fuzzed


def test_every_operation_answers_cleanly_when_fuzzed(
    fuzz_target: FuzzTarget, subtests: pytest.Subtests
) -> None:
    fuzzed = _fuzz(fuzz_target, subtests, None)
    # The operations come from the app's own schema, not from a list here; check the premise.
    assert {"POST /v1/identify", "POST /v1/ingest", "POST /v1/links/unlink"} <= fuzzed


@pytest.mark.slow
def test_every_operation_answers_cleanly_when_fuzzed_at_length(
    fuzz_target: FuzzTarget, subtests: pytest.Subtests
) -> None:
    _fuzz(fuzz_target, subtests, SLOW_EXAMPLES)
