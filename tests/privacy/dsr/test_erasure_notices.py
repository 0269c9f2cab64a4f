"""Every erasure path tells the recipients (GDPR Art. 17(2), 19), through the outbox.

Issue 20 built recipient notices for a data-subject erasure. A person erased because an
identifier of the subject was refused in its event (refusal following), or because it was inactive
past the retention limit, was erased without a notice. Now every erasure makes its notices before
its graph transaction (held), and the erasure's completion releases them: at least once
(``recover()`` releases the notices of an interrupted erasure), never for a rolled-back one.
The receiver is a real HTTP server on 127.0.0.1. The path tests failed on the code before.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from identity import outbound
from identity.model import IdentityEvent
from privacy.dsr.erasure import ErasureIncompleteError, HeldNotices
from privacy.dsr.model import DsrStatus
from privacy.dsr.service import NOTICE_FIELD, notice_owner
from privacy.keys.vault import Vault, VaultError
from tests.api.test_dsr_api import EMAIL, NOW, Dsr, dsr_settings, open_dsr
from tests.identity.test_dsr_refusals import _refused_event
from tests.privacy.dsr.test_dsr_rights import _norm, _person
from tests.privacy.dsr.test_dsr_webhooks import Receiver, _secret


@pytest.fixture
def secret() -> str:
    return _secret()


@pytest.fixture
def receiver(secret: str) -> Iterator[Receiver]:
    opened = Receiver(secret, fail_first=0)
    yield opened
    opened.close()


def _settings(tmp_path: Path, receiver: Receiver, secret: str, **extra: Any) -> Any:
    recipients = {"fraud-desk": {"url": receiver.url + "/fraud", "secret": secret}}
    return dsr_settings(
        tmp_path,
        dsr_recipients=json.dumps(recipients),
        dsr_webhook_backoff_seconds=0,
        outbound_allow_private=True,  # the receiver listens on 127.0.0.1
        outbound_events=True,
        **extra,
    )


@pytest.fixture
def app(tmp_path: Path, receiver: Receiver, secret: str, log_stream: io.StringIO) -> Iterator[Dsr]:
    with open_dsr(_settings(tmp_path, receiver, secret)) as opened:
        yield opened


def _read_by_fraud_desk(app: Dsr, person_id: str) -> None:
    """fraud-desk reads the person's profile (legitimate interest: no consent needed)."""
    headers = app.reader("fraud_prevention", consumer="fraud-desk")
    response = app.client.get(
        f"/v1/profiles/{person_id}", params={"purpose": "fraud_prevention"}, headers=headers
    )
    assert response.status_code == 200, response.text


def _subjects(receiver: Receiver) -> list[dict[str, Any]]:
    return [s for r in receiver.received for s in r["body"]["data"]["subjects"]]


def _notified(app: Dsr) -> list[Any]:
    return [e for e in app.container.audit.entries() if e.action == "dsr.recipients.notified"]


def _erased_events(app: Dsr) -> list[str]:
    events = app.container.store.read(lambda tx: tx.outbound_page(100))
    return [e.person_id for e in events if e.kind == outbound.PERSON_ERASED]


def test_the_recipient_of_a_person_erased_by_following_a_refusal_is_told(
    app: Dsr, receiver: Receiver
) -> None:
    subject = _person(app)
    split_off = _refused_event(app, NOW - timedelta(minutes=30))
    _read_by_fraud_desk(app, split_off)  # fraud-desk holds the split-off person's id only

    app.submit(
        request_id="er-follow-notice",
        type="erasure",
        subject_identities=[{"type": "email", "value": EMAIL}],
    )
    app.process()

    status = app.status("er-follow-notice")
    assert status["status"] == "completed", status
    assert status["result"]["refused_persons_erased"] == 1
    assert status["result"]["recipients_notified"] == 1
    (notice,) = receiver.received
    assert notice["path"] == "/fraud"
    assert notice["body"]["type"] == "recipient.erasure"
    assert notice["body"]["data"]["request_id"] == "er-follow-notice"
    assert _subjects(receiver) == [{"person_id": split_off}]
    (delivery,) = [d for d in status["deliveries"] if d["destination"] == "recipient:fraud-desk"]
    assert delivery["state"] == "delivered"
    # Downstream tools on the Kafka outbound topic hear of both persons too.
    assert sorted(_erased_events(app)) == sorted([subject, split_off])


def test_the_recipient_of_a_person_erased_by_retention_is_told(
    tmp_path: Path, receiver: Receiver, secret: str, log_stream: io.StringIO
) -> None:
    settings = _settings(tmp_path, receiver, secret, retention_inactive_person_days=365)
    with open_dsr(settings) as app:
        old = NOW - timedelta(days=800)
        email = _norm(app, "email", EMAIL)
        (outcome,) = app.container.engine.ingest([IdentityEvent((email,), "shop", old)])  # type: ignore[arg-type]
        person = outcome.person_id
        assert person is not None
        _read_by_fraud_desk(app, person)

        report = app.container.retention.run()
        assert report.persons_erased == 1
        assert report.erasure_counts["recipients_notified"] == 1
        app.process()  # the DSR worker sends the outbox

        (notice,) = receiver.received
        assert notice["body"]["type"] == "recipient.erasure"
        assert notice["body"]["data"]["reason"] == "retention"
        assert _subjects(receiver) == [{"person_id": person}]
        assert _erased_events(app) == [person]
        # Sealed in the outbox, cleared once sent: the DSR file holds nothing of the person.
        app.container.dsr.store.checkpoint()
        for path in settings.data_dir.glob("dsr.sqlite3*"):
            assert person.encode() not in path.read_bytes()


class _ShredFailingOnce:
    """The vault, whose first shred fails (after the graph commit)."""

    def __init__(self, vault: Vault) -> None:
        self._vault = vault
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vault, name)

    def shred(self, owners: Any) -> int:
        if not self.failed:
            self.failed = True
            raise VaultError("the key store is unavailable")
        return self._vault.shred(owners)


def test_notices_of_an_interrupted_erasure_go_out_once_recover_completes_it(
    app: Dsr, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    person = _person(app)
    _read_by_fraud_desk(app, person)
    eraser = app.container.erasure
    monkeypatch.setattr(eraser, "_vault", _ShredFailingOnce(eraser._vault))

    with pytest.raises(ErasureIncompleteError):
        eraser.erase([_norm(app, "email", EMAIL)], "er-interrupted", "cli")  # type: ignore[list-item]
    app.container.dsr.deliver_due()
    assert receiver.received == []  # held: the keys are not shredded yet

    app.process()  # the worker's pass runs recover(), which releases them, then sends

    assert _subjects(receiver) == [{"person_id": person}]
    app.process()
    assert len(receiver.received) == 1  # once


def test_no_notice_goes_out_for_an_erasure_whose_graph_transaction_failed(
    app: Dsr, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    person = _person(app)
    _read_by_fraud_desk(app, person)
    eraser = app.container.erasure

    def failing(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("the graph transaction failed")

    monkeypatch.setattr(eraser, "_erase_in_graph", failing)
    with pytest.raises(RuntimeError):
        eraser.erase([_norm(app, "email", EMAIL)], "er-rolled-back", "cli")  # type: ignore[list-item]
    monkeypatch.undo()

    app.process()
    assert receiver.received == []
    assert app.container.store.read(lambda tx: tx.person(person)) is not None
    assert app.container.dsr.store.held_erasures(NOW + timedelta(days=1)) == []
    assert _notified(app) == []  # the audit never says they were told (failed before)


def test_notices_held_by_an_erasure_that_never_committed_are_dropped_by_the_worker(
    app: Dsr, receiver: Receiver
) -> None:
    # A process that died between holding the notices and its graph commit leaves them held,
    # with no pending erasure to release them: the worker drops them (keys shredded) once they
    # are older than any erasure runs.
    dsr = app.container.dsr
    sealed = app.container.vault.encrypt(notice_owner("msg_orphan"), NOTICE_FIELD, b"{}")
    notice = ("recipient:fraud-desk", receiver.url + "/fraud", "msg_orphan", "ev", sealed)
    dsr.store.hold("req-gone", "e_orphan", dsr.clock() - timedelta(hours=2), [notice])

    app.process()

    assert receiver.received == []
    assert dsr.store.held_erasures(dsr.clock()) == []
    with pytest.raises(VaultError):
        app.container.vault.decrypt(notice_owner("msg_orphan"), NOTICE_FIELD, sealed)


def test_an_erasure_plans_again_when_a_person_joins_it_between_the_notices_and_the_commit(
    app: Dsr, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The notices are made from a plan read before the graph transaction; an ingest racing it
    # can add a person the transaction would erase (here: an event refusing the subject's
    # email). The transaction sees the new set, the held notices are dropped and made again.
    subject = _person(app)
    _read_by_fraud_desk(app, subject)
    dsr = app.container.dsr
    real_hold = dsr.hold
    planned: list[list[str]] = []
    joined: list[str] = []

    def racing_hold(
        erasure_id: str, request_id: str, person_ids: Any, **kwargs: Any
    ) -> HeldNotices:
        planned.append(sorted(person_ids))
        if not joined:
            joined.append(_refused_event(app, NOW - timedelta(minutes=5)))
        return real_hold(erasure_id, request_id, person_ids, **kwargs)

    eraser = app.container.erasure
    monkeypatch.setattr(eraser._notifier, "hold", racing_hold)
    result = eraser.erase([_norm(app, "email", EMAIL)], "er-race", "cli")  # type: ignore[list-item]

    assert planned == [[subject], sorted([subject, joined[0]])]
    assert result.refused_persons_erased == 1
    assert app.container.store.read(lambda tx: tx.person(joined[0])) is None
    assert dsr.store.held_erasures(dsr.clock() + timedelta(days=1)) == []  # released, not held
    app.process()
    assert _subjects(receiver) == [{"person_id": subject}]  # once: the first notices were dropped


def _refused_person(app: Dsr, customer_id: str, at: object) -> str:
    """An event pairing the subject's email with another customer id: the email is refused,
    the customer id makes a person of its own (erased with the subject by refusal following)."""
    ids = (_norm(app, "customer_id", customer_id), _norm(app, "email", EMAIL))
    (outcome,) = app.container.engine.ingest([IdentityEvent(ids, "shop", at)])  # type: ignore[arg-type]
    assert [r.reason.value for r in outcome.refusals] == ["limit_exceeded"]
    assert outcome.person_id is not None
    return outcome.person_id


def test_every_person_an_erasure_erases_is_notified_when_ingest_races_every_plan(
    app: Dsr, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An ingest adds a person to the erasure after every plan made outside the graph's write
    # transaction (here: an event refusing the subject's email, read by fraud-desk). The last
    # re-plan used to erase the person that joined it without telling its recipient.
    subject = _person(app)
    _read_by_fraud_desk(app, subject)
    dsr = app.container.dsr
    real_hold = dsr.hold
    joined: list[str] = []

    def racing_hold(
        erasure_id: str, request_id: str, person_ids: Any, **kwargs: Any
    ) -> HeldNotices:
        held = real_hold(erasure_id, request_id, person_ids, **kwargs)
        if kwargs.get("tx") is None:  # outside the write transaction: ingest can slip in
            at = NOW - timedelta(minutes=10 + len(joined))
            person = _refused_person(app, f"DSR-RACE-{len(joined):04d}", at)
            _read_by_fraud_desk(app, person)
            joined.append(person)
        return held

    eraser = app.container.erasure
    monkeypatch.setattr(eraser._notifier, "hold", racing_hold)
    result = eraser.erase([_norm(app, "email", EMAIL)], "er-race-all", "cli")  # type: ignore[list-item]

    erased = [subject, *joined]
    assert len(joined) >= 2  # it re-planned
    assert result.persons_erased == len(erased)
    still_there = app.container.store.read(lambda tx: [p for p in erased if tx.person(p)])
    assert still_there == []
    app.process()
    assert len(receiver.received) == 1  # one notice for the recipient, naming every person
    assert sorted(s["person_id"] for s in _subjects(receiver)) == sorted(erased)
    assert result.recipients_notified == 1


def test_each_retention_run_tells_recipients_under_its_own_id_recorded_in_its_audit(
    tmp_path: Path, receiver: Receiver, secret: str, log_stream: io.StringIO
) -> None:
    # The notices of every retention erasure used to carry the request id "retention": a
    # recipient could neither tell two sweeps apart nor match a notice to the sweep's audit.
    settings = _settings(tmp_path, receiver, secret, retention_inactive_person_days=365)
    with open_dsr(settings) as app:
        run_ids: list[str] = []
        for email in ("first.inactive@privacy-shop.de", "second.inactive@privacy-shop.de"):
            identifier = _norm(app, "email", email)
            event = IdentityEvent((identifier,), "shop", NOW - timedelta(days=800))  # type: ignore[arg-type]
            (outcome,) = app.container.engine.ingest([event])
            assert outcome.person_id is not None
            _read_by_fraud_desk(app, outcome.person_id)
            report = app.container.retention.run()
            assert report.persons_erased == 1
            run_ids.append(report.run_id)
            app.process()

        assert len(set(run_ids)) == 2
        assert all(run_id.startswith("retention-") for run_id in run_ids)
        assert [r["body"]["data"]["request_id"] for r in receiver.received] == run_ids
        assert [r["body"]["data"]["reason"] for r in receiver.received] == ["retention"] * 2
        entries = app.container.audit.entries()
        swept = [e.details["run_id"] for e in entries if e.action == "retention.swept"]
        erased = [e.details["request_id"] for e in entries if e.action == "dsr.erasure"]
        assert swept == run_ids
        assert erased == run_ids


def test_the_recipients_notified_entry_is_written_once_the_notices_are_queued(
    app: Dsr, receiver: Receiver
) -> None:
    # It used to be written when the notices were made and held, before the erasure's graph
    # transaction: before anything was erased, and whether or not they would ever go out.
    person = _person(app)
    _read_by_fraud_desk(app, person)
    app.submit(
        request_id="er-audited",
        type="erasure",
        subject_identities=[{"type": "email", "value": EMAIL}],
    )
    app.process()

    entries = app.container.audit.entries()
    (erasure,) = [e for e in entries if e.action == "dsr.erasure"]
    (notified,) = _notified(app)
    assert notified.seq > erasure.seq  # after the keys were shredded and the erasure audited
    assert notified.details["request_id"] == "er-audited"
    assert notified.details["erasure_id"] == erasure.details["erasure_id"]
    assert list(notified.details["recipients"]) == ["fraud-desk"]
    assert notified.details["queued"] == 1
    assert notified.details["unconfigured"] == 0
    assert "queued" in notified.reason
    assert len(receiver.received) == 1


def test_no_recipients_notified_entry_when_another_worker_finished_the_request_first(
    app: Dsr, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A restriction whose completion lost to another worker's (a stale claim taken over): its
    # notices were never queued, so the audit must not say they were.
    person = _person(app)
    _read_by_fraud_desk(app, person)
    store = app.container.dsr.store
    real_finish = store.finish

    def finish_after_the_other_worker(request_id: str, status: Any, now: Any, **kw: Any) -> bool:
        other = real_finish(request_id, status, now, from_statuses=kw["from_statuses"])
        assert other
        return real_finish(request_id, status, now, **kw)

    monkeypatch.setattr(store, "finish", finish_after_the_other_worker)
    app.submit(
        request_id="res-lost",
        type="restriction",
        subject_identities=[{"type": "email", "value": EMAIL}],
    )
    app.process()

    assert _notified(app) == []
    assert receiver.received == []
    # The other worker's completion is the one the audit holds: no second entry for this run.
    completed = [e for e in app.container.audit.entries() if e.action == "dsr.completed"]
    assert completed == []
    stored = store.get("res-lost")
    assert stored is not None
    assert stored.request.status is DsrStatus.COMPLETED


def test_no_failed_entry_when_another_worker_finished_the_request_first(
    app: Dsr, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run that fails after another worker completed the request (a stale claim taken over)
    # must not audit a failure of a request that completed.
    _person(app)
    service = app.container.dsr
    store = service.store
    real_finish = store.finish

    def boom(*_args: Any) -> Any:
        raise RuntimeError("injected failure")

    def finish_after_the_other_worker(request_id: str, status: Any, now: Any, **kw: Any) -> bool:
        assert real_finish(request_id, DsrStatus.COMPLETED, now, from_statuses=kw["from_statuses"])
        return real_finish(request_id, status, now, **kw)

    monkeypatch.setattr(service, "_run", boom)
    monkeypatch.setattr(store, "finish", finish_after_the_other_worker)
    app.submit(
        request_id="acc-lost",
        type="access",
        subject_identities=[{"type": "email", "value": EMAIL}],
    )
    report = service.run_once()

    assert [e for e in app.container.audit.entries() if e.action == "dsr.failed"] == []
    stored = store.get("acc-lost")
    assert stored is not None
    assert stored.request.status is DsrStatus.COMPLETED
    assert (report.completed, report.failed) == (1, 0)
