"""Issue 13, finding 7: an erasure reaches the person's access exports.

Before: an access export made before an erasure could still be downloaded after it, with the
erased person's email and phone, until its TTL. Now the erasure destroys it (blob deleted, key
shredded), says so in the request's result and the audit entry, and the DSR file holds neither
the export nor its values afterwards.
"""

from __future__ import annotations

from identity.model import IdentityEvent
from tests.api.test_dsr_api import EMAIL, NOW, OTHER_EMAIL, Dsr, _person, _subject
from tests.api.test_dsr_api import dsr as _dsr_fixture

dsr = _dsr_fixture


def test_erasure_destroys_the_persons_exports_and_reports_it(dsr: Dsr) -> None:
    _person(dsr)
    dsr.submit(request_id="acc-before", type="access", subject_identities=_subject())
    dsr.process()
    link = dsr.status("acc-before")["export"]["downloads"]["json"]
    before = dsr.client.get(link, headers=dsr.dsr)
    assert before.status_code == 200
    assert EMAIL in before.text

    dsr.submit(request_id="era-after", type="erasure", subject_identities=_subject())
    dsr.process()
    after = dsr.client.get(link, headers=dsr.dsr)
    erasure = dsr.status("era-after")
    export = dsr.status("acc-before")["export"]

    assert after.status_code == 410, after.text
    assert export["expired"] is True
    assert export["downloads"] == {}
    assert erasure["result"]["exports_destroyed"] == 1
    completed = [e for e in dsr.container.audit.entries() if e.action == "dsr.completed"][-1]
    assert completed.details["exports_destroyed"] == 1
    blob, _ = dsr.container.dsr.store.export_blob("acc-before") or (b"x", None)
    assert blob is None
    # The byte scan: no file of the data dir (DSR file and WAL included) holds the values.
    dsr.container.dsr.store.checkpoint()
    data_dir = dsr.container.settings.data_dir
    for path in data_dir.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert EMAIL.encode() not in content, path
            assert b"+442079460311" not in content, path


def test_erasure_leaves_other_persons_exports(dsr: Dsr) -> None:
    _person(dsr)
    other_policy = dsr.container.identity_policy
    (outcome,) = dsr.container.engine.ingest(
        [IdentityEvent((other_policy.normalize("email", OTHER_EMAIL, "GB"),), "shop", NOW)]
    )
    assert outcome.person_id is not None
    other = [{"type": "email", "value": OTHER_EMAIL}]
    dsr.submit(request_id="acc-other", type="access", subject_identities=other)
    dsr.process()

    dsr.submit(request_id="era-1", type="erasure", subject_identities=_subject())
    dsr.process()

    assert dsr.status("era-1")["result"]["exports_destroyed"] == 0
    link = dsr.status("acc-other")["export"]["downloads"]["json"]
    assert dsr.client.get(link, headers=dsr.dsr).status_code == 200
