"""Issue 20 gap 6: erasure follows refusals, and audit references become unlinkable.

An event whose email was refused (``limit_exceeded``: the email already belongs to a person with
another customer id) creates a separate person holding the event's other data. Erasure by that
email must reach that data too (or list it for review when that person holds other data), and
must not delete the refusal (the only link) before using it. After the erasure, the audit entries
about the erased person cannot be found from its person id any more, and the chain verifies.
Each test failed on the code before this change.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from identity.model import FactInput, FactKind, FactStatus, IdentityEvent
from tests.api.test_dsr_api import CUSTOMER, EMAIL, NOW, Dsr, dsr_settings, open_dsr
from tests.privacy.dsr.test_dsr_rights import _norm, _person


@pytest.fixture
def app(tmp_path: Path, log_stream: io.StringIO) -> Iterator[Dsr]:
    with open_dsr(dsr_settings(tmp_path)) as opened:
        yield opened


OTHER_CUSTOMER = "DSR-CUST-0777"


def _refused_event(app: Dsr, at: object) -> str:
    """The subject's email next to another customer id: the email is refused, the rest (the
    customer id and a fact) makes a person of its own. Returns that person."""
    ids = (_norm(app, "customer_id", OTHER_CUSTOMER), _norm(app, "email", EMAIL))
    fact = FactInput(FactKind.ATTRIBUTE, "city", "location", at, json.dumps("Porto").encode())  # type: ignore[arg-type]
    (outcome,) = app.container.engine.ingest([IdentityEvent(ids, "shop", at, (fact,))])  # type: ignore[arg-type]
    assert [r.reason.value for r in outcome.refusals] == ["limit_exceeded"]
    assert outcome.person_id is not None
    return outcome.person_id


def _exists(app: Dsr, person_id: str) -> bool:
    return app.container.store.read(lambda tx: tx.person(person_id)) is not None


def _erase(app: Dsr, request_id: str) -> dict[str, int]:
    response = app.submit(
        request_id=request_id,
        type="erasure",
        subject_identities=[{"type": "email", "value": EMAIL}],
    )
    assert response.status_code == 202, response.text
    app.process()
    status = app.status(request_id)
    assert status["status"] == "completed", status
    result: dict[str, int] = status["result"]
    return result


def test_erasure_reaches_the_person_made_from_an_event_whose_email_was_refused(app: Dsr) -> None:
    subject = _person(app)
    split_off = _refused_event(app, NOW - timedelta(minutes=30))
    assert split_off != subject

    result = _erase(app, "er-follow")

    assert not _exists(app, subject)
    assert not _exists(app, split_off)
    assert result["refused_persons_erased"] == 1
    assert result["refused_persons_for_review"] == 0
    # It sticks: the other customer id is suppressed like the subject's own identifiers.
    again = IdentityEvent((_norm(app, "customer_id", OTHER_CUSTOMER),), "shop", NOW)  # type: ignore[arg-type]
    (outcome,) = app.container.engine.ingest([again])
    assert outcome.person_id is None


def test_a_person_with_data_of_its_own_is_listed_for_review_not_erased(app: Dsr) -> None:
    subject = _person(app)
    split_off = _refused_event(app, NOW - timedelta(minutes=30))
    # The other customer id comes back alone later: that person has data of its own.
    alone = IdentityEvent((_norm(app, "customer_id", OTHER_CUSTOMER),), "crm", NOW)  # type: ignore[arg-type]
    app.container.engine.ingest([alone])

    result = _erase(app, "er-review")

    assert not _exists(app, subject)
    assert _exists(app, split_off)
    assert result["refused_persons_erased"] == 0
    assert result["refused_persons_for_review"] == 1
    audit = app.container.audit
    review = audit.entries(person_id=audit.person_ref(split_off))
    assert [e.action for e in review] == ["erasure.review_refused_link"]
    facts = app.container.store.read(
        lambda tx: tx.person_facts(split_off, [FactKind.ATTRIBUTE], FactStatus.ACTIVE)
    )
    assert len(facts) == 1  # kept until someone decides


def test_audit_entries_of_an_erased_person_cannot_be_linked_to_its_id(app: Dsr) -> None:
    subject = _person(app)
    reader = app.reader("fraud_prevention")
    for _ in range(3):
        response = app.client.get(
            f"/v1/profiles/{subject}", params={"purpose": "fraud_prevention"}, headers=reader
        )
        assert response.status_code == 200, response.text
    audit = app.container.audit
    before = audit.person_ref(subject)
    assert len(audit.mentioning(before)) >= 3

    _erase(app, "er-unlink")

    # Whoever holds the person id (and even the service's own keys) computes another reference.
    assert audit.person_ref(subject) != before
    assert audit.mentioning(audit.person_ref(subject)) == []
    assert audit.verify().ok
    assert CUSTOMER not in json.dumps([e.details for e in audit.entries()], default=str)
