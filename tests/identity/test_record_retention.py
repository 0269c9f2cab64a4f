"""Issue 20: retention of DSR records, delivery logs, refusals, kept raw identifiers and consent
proofs, declared in ``policies/retention.yaml`` (validated) and swept by the retention job.

Each test failed on the code before this change (nothing declared them, nothing swept them).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from identity.errors import PolicyFileError
from identity.model import (
    ConsentInput,
    ConsentRecord,
    ConsentSignal,
    FactKind,
    FactStatus,
    IdentityEvent,
)
from privacy.dsr.retention import RetentionSweeper, load_retention_policy
from tests.api.test_dsr_api import EMAIL, NOW, Dsr, dsr_settings, open_dsr
from tests.conftest import POLICY_DIR
from tests.identity.test_dsr_refusals import _refused_event
from tests.privacy.dsr.test_dsr_rights import _norm, _person


@pytest.fixture
def app(tmp_path: Path, log_stream: io.StringIO) -> Iterator[Dsr]:
    with open_dsr(dsr_settings(tmp_path)) as opened:
        yield opened


def _consents(app: Dsr, person: str) -> list[ConsentRecord]:
    return app.container.store.read(lambda tx: tx.person_consents(person, ["analytics"]))


def test_the_shipped_policy_declares_every_record_kind() -> None:
    policy = load_retention_policy(POLICY_DIR / "retention.yaml")
    assert policy.records.dsr_requests >= 365  # proof the request was answered
    assert set(type(policy.records).model_fields) == {
        "dsr_requests",
        "dsr_deliveries",
        "refusals",
        "kept_raw_identifiers",
        "consent_proofs",
    }


def test_an_invalid_retention_policy_names_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "retention.yaml"
    path.write_text("version: 1\nrecords:\n  refusals: 0\n", encoding="utf-8")
    with pytest.raises(PolicyFileError) as caught:
        load_retention_policy(path)
    assert "retention.yaml" in str(caught.value)
    assert "records.refusals" in str(caught.value)
    path.write_text("version: 1\nrecords:\n  refusal: 10\n", encoding="utf-8")
    with pytest.raises(PolicyFileError):
        load_retention_policy(path)


def test_the_sweep_deletes_old_records_and_keeps_the_consent_state(app: Dsr) -> None:
    person = _person(app)
    _refused_event(app, NOW - timedelta(minutes=5))
    email = _norm(app, "email", EMAIL)
    # A grant, then a denial of the same purpose by the same signal: the grant is superseded.
    for granted, minutes in ((True, 20), (False, 10)):
        consent = ConsentInput(
            "analytics",
            granted,
            NOW - timedelta(minutes=minutes),
            ConsentSignal.DIRECT,
            "consent",
            ("a" if granted else "b") * 64,
        )
        app.container.engine.ingest([IdentityEvent((email,), "cmp", NOW, consents=(consent,))])  # type: ignore[arg-type]
    assert len(_consents(app, person)) == 2
    response = app.submit(
        request_id="acc-old", type="access", subject_identities=[{"type": "email", "value": EMAIL}]
    )
    assert response.status_code == 202
    app.process()
    assert app.status("acc-old")["status"] == "completed"
    raw = app.container.store.read(
        lambda tx: tx.person_facts(person, [FactKind.RAW_IDENTIFIER], FactStatus.ACTIVE)
    )
    assert raw  # the email's (and phone's) kept values

    sweeper = app.container.retention
    assert sweeper.records is not None
    later = RetentionSweeper(
        app.container.store,
        app.container.audit,
        sweeper.rules,
        clock=lambda: NOW + timedelta(days=4 * 365),
        records=sweeper.records,
        dsr_records=app.container.dsr.store,
    )
    report = later.run()

    assert report.records_deleted["refusals"] == 1
    assert report.records_deleted["consent_proofs"] == 1
    assert report.records_deleted["kept_raw_identifiers"] >= len(raw)
    assert report.records_deleted["dsr_requests"] == 1
    remaining = _consents(app, person)
    assert [c.granted for c in remaining] == [False]
    assert app.client.get("/v1/dsr/acc-old", headers=app.dsr).status_code == 404
    assert app.container.store.stats().refusals == 0
    assert not app.container.store.read(
        lambda tx: tx.person_facts(person, [FactKind.RAW_IDENTIFIER], FactStatus.ACTIVE)
    )
    # The person still resolves (the keyed hashes stay); the sweep is audited with counts.
    assert app.container.engine.resolve(email) == person  # type: ignore[arg-type]
    (entry,) = [e for e in app.container.audit.entries() if e.action == "retention.swept"]
    assert entry.details["refusals_deleted"] == 1
    assert json.dumps(dict(entry.details)).count(EMAIL) == 0

    # Nothing is due today: a sweep now deletes none of these records.
    assert all(v == 0 for v in app.container.retention.run().records_deleted.values())
