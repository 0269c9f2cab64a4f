"""The retention sweeper on the real store: category retention from purposes.yaml, counts, audit,
idempotence, resumable paging, inactive persons (restricted ones kept), and the CLI."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bootstrap.container import build_container
from bootstrap.settings import Settings
from cli.main import app as cli
from identity.model import (
    RESTRICTION_PURPOSE,
    ConsentInput,
    ConsentSignal,
    FactInput,
    FactKind,
    FactStatus,
    IdentityEvent,
)
from privacy.dsr.retention import RetentionRules, RetentionSweeper, rules_from_policies
from tests.conftest import POLICY_DIR

NOW = datetime.now(UTC)
DAY = timedelta(days=1)


def _fact(kind: FactKind, name: str, category: str, age_days: int, value: Any) -> FactInput:
    return FactInput(kind, name, category, NOW - age_days * DAY, json.dumps(value).encode())


FACTS = (
    _fact(FactKind.ATTRIBUTE, "city", "location", 800, "Lisbon"),  # location: 730 days
    _fact(FactKind.ATTRIBUTE, "visit_count", "behavioural", 800, 3),  # behavioural: 2190
    _fact(FactKind.ATTRIBUTE, "age_band", "demographic", 100, "25-34"),  # demographic: 730
    _fact(FactKind.ATTRIBUTE, "interests", "interests", 400, ["running"]),  # interests: 365
    _fact(FactKind.EVENT, "purchase", "behavioural", 2500, {"properties": {"order_id": "o"}}),
    _fact(FactKind.EVENT, "purchase", "behavioural", 10, {"properties": {"order_id": "n"}}),
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        env="test",
        data_dir=tmp_path / "data",
        policy_dir=POLICY_DIR,
        default_region="GB",
        dsr_worker_interval_seconds=0,
    )


def _ingest(container: Any, email: str, at: datetime, facts: tuple[FactInput, ...] = ()) -> str:
    identifier = container.identity_policy.normalize("email", email, "GB")
    (outcome,) = container.engine.ingest([IdentityEvent((identifier,), "shop", at, facts)])
    assert outcome.person_id is not None
    return str(outcome.person_id)


def _facts(container: Any) -> list[tuple[str, str]]:
    person_facts = []
    for status in (FactStatus.ACTIVE, FactStatus.QUARANTINED):
        page = container.store.read(lambda tx, s=status: tx.facts_page(s, "", 1000))
        person_facts += [(f.kind.value, f.name) for f in page]
    return sorted(person_facts)


def test_category_retention_is_the_longest_any_purpose_gives_and_unread_ones_get_the_default(
    settings: Settings,
) -> None:
    container = build_container(settings)
    try:
        rules = rules_from_policies(container.purposes, container.facts_policy, 30, 0)
    finally:
        container.close()

    assert rules.retention("behavioural") == 2190 * DAY  # legal_claims
    assert rules.retention("location") == 730 * DAY  # fraud_prevention, marketing_email
    assert rules.retention("interests") == 365 * DAY
    assert rules.retention("special_category") == 30 * DAY  # no purpose reads it
    assert rules.retention("unknown") == 30 * DAY  # quarantined unknown keys
    assert rules.inactive_person is None


def test_sweep_deletes_expired_facts_counts_them_audits_and_a_second_run_deletes_nothing(
    settings: Settings,
) -> None:
    container = build_container(settings)
    try:
        _ingest(container, "kept.raw@retention.example", NOW - DAY, FACTS)
        sweeper = container.retention

        first = sweeper.run(batch_size=2)  # several pages: paging by fact id
        second = sweeper.run(batch_size=2)
        remaining = _facts(container)
        audits = [e for e in container.audit.entries() if e.action == "retention.swept"]
    finally:
        container.close()

    assert first.facts_deleted == 3
    assert dict(first.deleted_by_category) == {"behavioural": 1, "interests": 1, "location": 1}
    assert first.facts_scanned == 7  # six facts and the kept raw email
    assert second.facts_deleted == 0
    assert remaining == [
        ("attribute", "age_band"),
        ("attribute", "visit_count"),
        ("event", "purchase"),
        ("raw_identifier", "email"),
    ]
    assert [a.details["facts_deleted"] for a in audits] == [3, 0]


def test_an_interrupted_sweep_resumes_where_committed_pages_left_off(settings: Settings) -> None:
    container = build_container(settings)
    try:
        for i in range(5):
            _ingest(container, f"old{i}@retention.example", NOW - DAY, FACTS)
        sweeper = container.retention
        calls = 0

        def crash_after_two_pages(_: object) -> None:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            sweeper.run(batch_size=4, progress=crash_after_two_pages)
        resumed = sweeper.run(batch_size=4)
        remaining = _facts(container)
    finally:
        container.close()

    assert 0 < resumed.facts_deleted < 15  # the committed pages were not redone
    assert sum(1 for kind, name in remaining if name in {"city", "interests"}) == 0
    assert len(remaining) == 5 * 4  # age_band, visit_count, a purchase, the raw email


def test_inactive_persons_are_erased_without_suppression_but_restricted_ones_are_kept(
    settings: Settings,
) -> None:
    erased: list[str] = []

    def eraser(person_ids: Sequence[str], actor: str, run_id: str) -> Mapping[str, int]:
        erased.extend(person_ids)
        return {"persons_erased": len(person_ids), "facts_deleted": 0}

    container = build_container(settings)
    try:
        active = _ingest(container, "active@retention.example", NOW - 10 * DAY)
        stale = _ingest(container, "stale@retention.example", NOW - 800 * DAY)
        restriction = ConsentInput(
            RESTRICTION_PURPOSE,
            False,
            NOW - 900 * DAY,
            ConsentSignal.RESTRICTION,
            "legal_obligation",
            "0" * 64,
        )
        identifier = container.identity_policy.normalize("email", "held@retention.example", "GB")
        (held,) = container.engine.ingest(
            [IdentityEvent((identifier,), "dsr", NOW - 800 * DAY, consents=(restriction,))]
        )
        rules = RetentionRules(
            categories={}, unread=3650 * DAY, inactive_person=timedelta(days=365)
        )
        report = RetentionSweeper(container.store, container.audit, rules, eraser).run(batch_size=1)
    finally:
        container.close()

    assert erased == [stale]
    assert active not in erased
    assert held.person_id not in erased
    assert report.persons_scanned == 3
    assert report.persons_inactive == 2
    assert report.persons_restricted_kept == 1
    assert report.persons_erased == 1


def test_cli_retention_run_prints_the_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDGRAPH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IDGRAPH_POLICY_DIR", str(POLICY_DIR))
    monkeypatch.setenv("IDGRAPH_ENV", "development")
    settings = Settings()
    container = build_container(settings)
    try:
        _ingest(container, "cli@retention.example", NOW - DAY, FACTS)
    finally:
        container.close()

    result = CliRunner().invoke(cli, ["retention", "run"])
    again = CliRunner().invoke(cli, ["retention", "run"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["facts_deleted"] == 3
    assert json.loads(again.stdout)["facts_deleted"] == 0


def test_inactive_person_sweep_erases_through_the_erasure_service_without_suppression(
    tmp_path: Path,
) -> None:
    settings = Settings(
        env="test",
        data_dir=tmp_path / "data",
        policy_dir=POLICY_DIR,
        default_region="GB",
        dsr_worker_interval_seconds=0,
        retention_inactive_person_days=365,
    )
    container = build_container(settings)
    try:
        stale = _ingest(container, "gone@retention.example", NOW - 800 * DAY, FACTS[:1])
        active = _ingest(container, "here@retention.example", NOW - DAY)
        report = container.retention.run()
        again = container.retention.run()
        # Not suppressed: the same identifier comes back, as a new person.
        back = _ingest(container, "gone@retention.example", NOW)
        persons = container.store.stats().persons
        still_there = container.store.read(lambda tx: tx.person(active))
    finally:
        container.close()

    assert report.persons_erased == 1
    assert report.erasure_counts["persons_erased"] == 1
    assert again.persons_erased == 0
    assert back != stale
    assert still_there is not None
    assert persons == 2
