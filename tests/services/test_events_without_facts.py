"""``IngestService.events`` hands the fact intake only the requests that carry traits or events
(stop 37): a bulk row of identifiers only has no facts, and building its ``FactsOf`` and drafts
cost CPU for nothing. Rows with facts still get theirs, in order, with the same errors.
``test_requests_without_traits_or_events_reach_no_fact_intake`` fails on the old code (every
request reached ``prepare_many``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bootstrap.container import Container
from identity.errors import BatchValidationError
from identity.model import FactKind, IdentityEvent
from privacy.scanning.facts import FactIntake, FactsOf
from services.inputs import IdentifyInput
from tests.support.containers import opened_container

AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    with opened_container(tmp_path / "data", pii_scan=False) as opened:
        yield opened


def _row(value: str, traits: dict[str, Any] | None = None) -> IdentifyInput:
    return IdentifyInput((("email", value),), "crm", AT, traits, (), None)


def test_requests_without_traits_or_events_reach_no_fact_intake(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed: list[int] = []
    prepare_many = FactIntake.prepare_many

    def counting(self: FactIntake, items: Sequence[FactsOf]) -> Any:
        handed.append(len(items))
        return prepare_many(self, items)

    monkeypatch.setattr(FactIntake, "prepare_many", counting)
    rows = [
        _row("a@shop.de"),
        _row("b@shop.de", {"city": "Leeds"}),
        _row("c@shop.de", {}),
        _row("d@shop.de", {"city": 7}),  # not a string: refused, as before
        _row("e@shop.de", {"city": "York"}),
    ]
    results = container.ingest.events(rows)

    assert handed == [3]  # the three rows with traits (an empty mapping has none)
    events = [r for r in results if isinstance(r, IdentityEvent)]
    assert [len(e.facts) for e in events] == [0, 1, 0, 1]
    assert [(f.kind, f.name) for e in events for f in e.facts] == [
        (FactKind.ATTRIBUTE, "city"),
        (FactKind.ATTRIBUTE, "city"),
    ]
    assert isinstance(results[3], BatchValidationError)
    assert [e.identifiers[0].value for e in events] == [
        "a@shop.de",
        "b@shop.de",
        "c@shop.de",
        "e@shop.de",
    ]

    handed.clear()
    container.ingest.events([_row("f@shop.de"), _row("g@shop.de")])
    assert handed == []  # no request with facts: the intake is not called
