"""Issue 20 gap 3: recipients are told (GDPR Art. 17(2), 19).

Who received a person's data is derived from the reads' audit; each recipient gets a Standard
Webhooks signed notice carrying only the key it holds (the person id, its feature pseudonym, or
the SHA-256 of the identifiers an audience export sent it), through the outbox with retries, and
the delivery shows in the request's status. The receiver is a real HTTP server on 127.0.0.1.
Each test failed on the code before this change (no recipient was ever notified).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_dsr_api import EMAIL, PHONE, Dsr, dsr_settings, open_dsr
from tests.privacy.dsr.test_dsr_rights import _norm, _rich_person, shred_out_of_band
from tests.privacy.dsr.test_dsr_webhooks import Receiver, _secret


@pytest.fixture
def secret() -> str:
    return _secret()


@pytest.fixture
def receiver(secret: str) -> Iterator[Receiver]:
    opened = Receiver(secret, fail_first=1)
    yield opened
    opened.close()


@pytest.fixture
def app(tmp_path: Path, receiver: Receiver, secret: str, log_stream: io.StringIO) -> Iterator[Dsr]:
    recipients = {
        "adtech-partner": {"url": receiver.url + "/adtech", "secret": secret},
        "ml-team": {"url": receiver.url + "/ml", "secret": secret},
    }
    settings = dsr_settings(
        tmp_path,
        dsr_recipients=json.dumps(recipients),
        dsr_webhook_backoff_seconds=0,
        dsr_webhook_max_attempts=3,
        outbound_allow_private=True,  # the receiver listens on 127.0.0.1
    )
    with open_dsr(settings) as opened:
        yield opened


def _reads(app: Dsr, person: str) -> str:
    """adtech-partner reads the audience and exports it, ml-team reads features, bi-tool reads
    the profile (it has no notice endpoint). Returns ml-team's pseudonym of the person."""
    ads = app.reader("ad_targeting", consumer="adtech-partner")
    models = app.reader("model_training", consumer="ml-team")
    body = {
        "name": "lisbon",
        "purpose": "ad_targeting",
        "rules": {"attributes": [{"attribute": "city", "op": "eq", "value": "Lisbon"}]},
    }
    audience = app.client.post("/v1/audiences", json=body, headers=ads).json()["id"]
    assert app.client.get(f"/v1/audiences/{audience}/members", headers=ads).status_code == 200
    assert app.client.get(f"/v1/audiences/{audience}/export", headers=ads).status_code == 200
    features = app.client.get("/v1/features", params={"purpose": "model_training"}, headers=models)
    assert features.status_code == 200, features.text
    bi = app.reader("ad_targeting", consumer="bi-tool")
    profile = app.client.get(
        f"/v1/profiles/{person}", params={"purpose": "ad_targeting"}, headers=bi
    )
    assert profile.status_code == 200, profile.text
    (row,) = features.json()["rows"]
    pseudonym: str = row["pseudonym"]
    return pseudonym


def _by_path(receiver: Receiver) -> dict[str, dict[str, Any]]:
    return {r["path"]: r["body"] for r in receiver.received}


def _sha(app: Dsr, type_: str, value: str) -> str:
    return hashlib.sha256(_norm(app, type_, value).value.encode()).hexdigest()  # type: ignore[attr-defined]


def test_erasure_tells_each_recipient_with_only_the_key_it_holds(
    app: Dsr, receiver: Receiver
) -> None:
    person = _rich_person(app)
    pseudonym = _reads(app, person)

    app.submit(
        request_id="er-rec",
        type="erasure",
        subject_identities=[{"type": "email", "value": EMAIL}],
    )
    app.process()  # erases; the first notice attempt gets a 500
    app.process()  # the retry (backoff 0) is delivered

    assert receiver.rejected == 0
    got = _by_path(receiver)
    assert set(got) == {"/adtech", "/ml"}
    adtech, ml = got["/adtech"], got["/ml"]
    assert adtech["type"] == ml["type"] == "recipient.erasure"
    assert adtech["data"]["request_id"] == "er-rec"
    # adtech got the person id (audience members) and the hashed identifiers (the export).
    assert adtech["data"]["subjects"] == [
        {
            "person_id": person,
            "hashed_identifiers": sorted(
                [
                    {"type": "email", "sha256": _sha(app, "email", EMAIL)},
                    {"type": "phone", "sha256": _sha(app, "phone", PHONE)},
                ],
                key=lambda h: (h["type"], h["sha256"]),
            ),
        }
    ]
    # ml-team only ever saw its pseudonym: that is all it is told.
    (ml_subject,) = ml["data"]["subjects"]
    assert set(ml_subject) == {"pseudonym"}
    assert ml_subject["pseudonym"]["value"] == pseudonym
    for raw in receiver.bodies:
        assert EMAIL.encode() not in raw
        assert b"Lisbon" not in raw
    assert person.encode() not in json.dumps(ml).encode()

    status = app.status("er-rec")
    deliveries = {d["destination"]: d for d in status["deliveries"]}
    assert deliveries["recipient:adtech-partner"]["state"] == "delivered"
    assert deliveries["recipient:ml-team"]["state"] == "delivered"
    assert (
        deliveries["recipient:ml-team"]["attempts"]
        + deliveries["recipient:adtech-partner"]["attempts"]
        == 3
    )  # one of them got the failing first answer
    # A recipient without an endpoint is listed as not told, for an operator to follow up.
    assert deliveries["recipient:bi-tool"]["state"] == "failed"
    assert deliveries["recipient:bi-tool"]["last_error"] == "destination_not_configured"
    assert status["result"]["recipients_notified"] == 3

    # The outbox holds nothing of the person once the notices are done (sealed, then cleared).
    app.container.dsr.store.checkpoint()
    data_dir = Path(app.container.settings.data_dir)
    for path in data_dir.glob("dsr.sqlite3*"):
        content = path.read_bytes()
        assert person.encode() not in content
        assert _sha(app, "email", EMAIL).encode() not in content


def test_restriction_and_objection_notices_reach_the_recipients_concerned(
    app: Dsr, receiver: Receiver
) -> None:
    receiver.fail_first = 0
    person = _rich_person(app)
    _reads(app, person)

    app.submit(
        request_id="obj-rec",
        type="objection",
        purposes=["model_training"],
        subject_identities=[{"type": "email", "value": EMAIL}],
    )
    app.process()
    app.process()
    # Only the recipient that received data for the objected purpose is told.
    assert [r["path"] for r in receiver.received] == ["/ml"]
    (notice,) = [r["body"] for r in receiver.received]
    assert notice["type"] == "recipient.objection"
    assert notice["data"]["purposes"] == ["model_training"]
    assert notice["data"]["action"] == "apply"

    app.submit(
        request_id="res-rec",
        type="restriction",
        subject_identities=[{"type": "phone", "value": PHONE}],
    )
    app.process()
    app.process()
    restriction = [r for r in receiver.received if r["body"]["type"] == "recipient.restriction"]
    assert sorted(r["path"] for r in restriction) == ["/adtech", "/ml"]
    states = {d["destination"]: d["state"] for d in app.status("res-rec")["deliveries"]}
    assert states == {
        "recipient:adtech-partner": "delivered",
        "recipient:ml-team": "delivered",
        "recipient:bi-tool": "failed",
    }


def test_a_subject_nobody_received_sends_no_notice(app: Dsr, receiver: Receiver) -> None:
    _rich_person(app)
    app.submit(
        request_id="er-none", type="erasure", subject_identities=[{"type": "email", "value": EMAIL}]
    )
    app.process()
    assert receiver.received == []
    assert app.status("er-none")["deliveries"] == []
    assert app.status("er-none")["result"]["recipients_notified"] == 0


def test_a_rectification_tells_every_recipient_what_was_corrected(
    app: Dsr, receiver: Receiver
) -> None:
    receiver.fail_first = 0
    person = _rich_person(app)
    _reads(app, person)

    missing = app.submit(
        request_id="rect-0",
        type="rectification",
        subject_identities=[{"type": "email", "value": EMAIL}],
    )
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["pointer"] == "#/rectified"
    valued = app.submit(
        request_id="rect-0",
        type="rectification",
        rectified=["city", EMAIL],
        subject_identities=[{"type": "email", "value": EMAIL}],
    )
    assert valued.status_code == 422  # a value is never a name
    assert EMAIL not in valued.text

    response = app.submit(
        request_id="rect-1",
        type="rectification",
        rectified=["city"],
        subject_identities=[{"type": "email", "value": EMAIL}],
    )
    assert response.status_code == 202, response.text
    app.process()
    app.process()

    got = _by_path(receiver)
    assert set(got) == {"/adtech", "/ml"}
    for notice in got.values():
        assert notice["type"] == "recipient.rectification"
        assert notice["data"]["rectified"] == ["city"]
    assert got["/adtech"]["data"]["subjects"][0]["person_id"] == person
    assert set(got["/ml"]["data"]["subjects"][0]) == {"pseudonym"}
    status = app.status("rect-1")
    assert status["rectified"] == ["city"]
    assert status["result"]["recipients_notified"] == 3
    assert app.profile(person, "ad_targeting") == 200  # a rectification restricts nothing


@pytest.mark.parametrize(
    ("kind", "shredded", "subject_type", "subject_value"),
    [("restriction", "phone", "email", EMAIL), ("erasure", "email", "phone", PHONE)],
)
def test_recipients_are_told_what_is_readable_when_a_data_key_was_shredded(
    app: Dsr, receiver: Receiver, kind: str, shredded: str, subject_type: str, subject_value: str
) -> None:
    # One identifier's data key is gone while the person still exists: the notice keys that
    # need its kept value (the SHA-256 adtech got in the export) cannot be made. The request
    # still completes, each recipient gets the keys that are readable, the rest is counted in
    # the result and the audit entry. It used to fail the request (data-key-destroyed); for an
    # erasure, which makes its notices before its graph transaction, every attempt failed, so
    # the person could never be erased.
    receiver.fail_first = 0
    person = _rich_person(app)
    _reads(app, person)
    shred_out_of_band(app, person, shredded)

    app.submit(
        request_id=f"{kind}-shred",
        type=kind,
        subject_identities=[{"type": subject_type, "value": subject_value}],
    )
    app.process()
    app.process()

    status = app.status(f"{kind}-shred")
    assert status["status"] == "completed", status
    assert status["result"]["recipients_notified"] == 3
    assert status["result"]["recipient_keys_unreadable"] == 1
    got = _by_path(receiver)
    assert set(got) == {"/adtech", "/ml"}
    assert got["/adtech"]["data"]["subjects"] == [
        {
            "person_id": person,
            "hashed_identifiers": [
                {"type": subject_type, "sha256": _sha(app, subject_type, subject_value)}
            ],
        }
    ]
    if kind == "erasure":
        assert status["result"]["persons_erased"] == 1
        assert app.profile(person, "ad_targeting") == 404
    entries = app.container.audit.entries()
    (completed,) = [e for e in entries if e.action == "dsr.completed"]
    assert completed.details["recipient_keys_unreadable"] == 1
    assert [e for e in entries if e.action == "dsr.failed"] == []
    assert app.container.audit.verify().ok
