"""Audience membership does not depend on how a scan is cut into pages and store reads.

``ReadService._scan`` sizes each ``member_page`` read by the pass rate seen so far (issue 14:
the old sizing took log-many reads per page). Whatever the page ``limit`` and ``max_scan``, the
members of every page together must be exactly the persons one unbounded scan returns, each once,
in person-id order; and that set must be what the rules and the consent say, person by person.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootstrap.container import Container, build_container
from bootstrap.settings import Settings
from identity.identifiers import NormalizedIdentifier
from identity.model import (
    ConsentInput,
    ConsentSignal,
    FactInput,
    FactKind,
    IdentityEvent,
)
from privacy.access.audiences import AttributeOp, AttributeRule, AudienceRules, EventRule
from privacy.access.policy_engine import Caller

POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
NOW = datetime.now(UTC)
PURPOSE = "ad_targeting"
PERSONS = 90


def _world_events(rng: random.Random) -> tuple[list[IdentityEvent], set[str]]:
    """Persons with random purchases, cities and consent; returns the events and the customer
    ids of the persons that must be members (≥ 2 purchases in 30 days, city Berlin or Lyon,
    latest consent decision a grant)."""
    events: list[IdentityEvent] = []
    expected: set[str] = set()
    for i in range(PERSONS):
        customer = f"PAGE-{i:04d}"
        recent = rng.randint(0, 3)
        old = rng.randint(0, 2)
        city = rng.choice(["Berlin", "Lyon", "Porto"])
        facts = [
            FactInput(FactKind.ATTRIBUTE, "city", "location", NOW, json.dumps(city).encode()),
            *(
                FactInput(
                    FactKind.EVENT,
                    "purchase",
                    "behavioural",
                    NOW - timedelta(days=rng.randint(0, 25)),
                    b'{"properties": {}}',
                )
                for _ in range(recent)
            ),
            *(
                FactInput(
                    FactKind.EVENT,
                    "purchase",
                    "behavioural",
                    NOW - timedelta(days=rng.randint(40, 80)),
                    b'{"properties": {}}',
                )
                for _ in range(old)
            ),
        ]
        decisions = [
            (rng.random() < 0.6, NOW - timedelta(days=rng.randint(1, 200)))
            for _ in range(rng.randint(0, 2))
        ]
        consents = tuple(
            ConsentInput(PURPOSE, granted, at, ConsentSignal.DIRECT, "consent", "0" * 64)
            for granted, at in decisions
        )
        if decisions:
            top = max(at for _, at in decisions)
            granted = all(g for g, at in decisions if at == top)  # latest wins, a tie denies
        else:
            granted = False
        if recent >= 2 and city in ("Berlin", "Lyon") and granted:
            expected.add(customer)
        events.append(
            IdentityEvent(
                (NormalizedIdentifier("customer_id", customer),),
                "web",
                NOW,
                facts=tuple(facts),
                consents=consents,
            )
        )
    return events, expected


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Container, Any, set[str]]]:
    data = tmp_path_factory.mktemp("paging")
    container = build_container(
        Settings(env="test", data_dir=data / "data", policy_dir=POLICY_DIR, store_url=None)
    )
    events, expected_customers = _world_events(random.Random(14))
    container.engine.ingest(events)
    expected = {
        person
        for customer in expected_customers
        if (person := container.engine.resolve(NormalizedIdentifier("customer_id", customer)))
    }
    caller = Caller("pagingkey", frozenset({PURPOSE}), "paging")
    rules = AudienceRules(
        attributes=(AttributeRule("city", AttributeOp.IN, ("Berlin", "Lyon")),),
        events=(EventRule("purchase", 30, 2),),
    )
    audience = container.reads.define_audience(caller, "paging", PURPOSE, rules)
    yield container, (caller, audience.audience_id), expected
    container.close()


def _members(container: Container, caller: Caller, audience_id: str, limit: int) -> list[str]:
    members: list[str] = []
    cursor = None
    for _ in range(10 * PERSONS):  # every page examines at least one person
        page = container.reads.audience_members(caller, audience_id, cursor, limit)
        assert len(page.person_ids) <= limit
        members.extend(page.person_ids)
        cursor = page.next_cursor
        if cursor is None:
            return members
    raise AssertionError("paging did not end")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(limit=st.integers(1, 40), max_scan=st.integers(1, 2 * PERSONS))
def test_members_of_all_pages_are_the_rule_and_consent_members_for_any_page_size_and_scan_bound(
    world: tuple[Container, Any, set[str]], limit: int, max_scan: int
) -> None:
    container, (caller, audience_id), expected = world
    assert expected  # the world has members (and, by construction, non-members)
    reads = container.reads
    bound = reads.max_scan
    reads.max_scan = max_scan
    try:
        members = _members(container, caller, audience_id, limit)
    finally:
        reads.max_scan = bound
    assert len(members) == len(set(members))  # nobody twice
    assert members == sorted(members)  # person-id order across pages
    assert set(members) == expected
