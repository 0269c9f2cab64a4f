"""``SqliteAuditLog.append_about``: entries about a person get the person's reference from the
log (made by the group commit's writer), the same reference ``person_ref`` gives, and the person
id itself is never written.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from identity.errors import ConfigurationError
from privacy.auditing.log import PERSON_REF_INFO, AuditDraft, SqliteAuditLog, person_ref
from privacy.keys.vault import Vault
from tests.support.audit_support import CountingRefKeys

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PERSON = "p_5eed0f7e11a9b0c4d2e8f6a1"


def _draft(reason: str = "consent_granted") -> AuditDraft:
    return AuditDraft("key_ops1", "read.profile", "ad_targeting", None, "allow", reason, {"n": 1})


@pytest.fixture
def ref_keys(vault: Vault) -> CountingRefKeys:
    return CountingRefKeys(vault)


@pytest.fixture
def log(tmp_path: Path, vault: Vault, ref_keys: CountingRefKeys) -> Iterator[SqliteAuditLog]:
    opened = SqliteAuditLog(
        tmp_path / "audit.sqlite3",
        clock=lambda: T0,
        person_ref_key=vault.reference_key(PERSON_REF_INFO),
        person_keys=ref_keys,
    )
    yield opened
    opened.close()


def test_entries_appended_about_a_person_carry_its_reference_when_written(
    tmp_path: Path, log: SqliteAuditLog
) -> None:
    (entry,) = log.append_about(PERSON, [_draft()])

    assert entry.person_id == log.person_ref(PERSON)
    assert [e.seq for e in log.entries(person_id=entry.person_id)] == [entry.seq]
    assert log.verify().ok
    # The person id itself is in no file of the log (the reference is keyed: it is not either).
    for path in tmp_path.glob("audit.sqlite3*"):
        assert PERSON.encode() not in path.read_bytes(), path.name


def test_append_about_makes_no_key_without_create_when_the_person_has_none(
    vault: Vault, log: SqliteAuditLog, ref_keys: CountingRefKeys
) -> None:
    (entry,) = log.append_about(PERSON, [_draft()], create=False)

    shared = person_ref(PERSON, vault.reference_key(PERSON_REF_INFO))
    assert entry.person_id == shared
    assert ref_keys.refs([PERSON], create=False) == {}  # still no reference of its own
    (later,) = log.append_about(PERSON, [_draft()])  # a known person: its own key is made
    assert later.person_id == log.person_ref(PERSON) != shared


def test_append_about_an_erased_person_uses_the_shared_key_when_its_key_was_shredded(
    vault: Vault, log: SqliteAuditLog
) -> None:
    (before,) = log.append_about(PERSON, [_draft()])
    vault.shred(log.person_ref_owners([PERSON]))

    (after,) = log.append_about(PERSON, [_draft()])

    # Entries written after the erasure do not link to the ones before it (privacy.audit_refs).
    assert after.person_id == person_ref(PERSON, vault.reference_key(PERSON_REF_INFO))
    assert after.person_id != before.person_id
    assert after.person_id == log.person_ref(PERSON)


def test_append_about_refuses_drafts_that_name_a_person_when_given(log: SqliteAuditLog) -> None:
    draft = AuditDraft("key_ops1", "read.profile", "ad_targeting", "r_0", "allow", "x")

    with pytest.raises(ValueError, match="name no person"):
        log.append_about(PERSON, [draft])
    assert log.head().seq == 0


def test_append_about_is_refused_when_the_log_has_no_reference_key(tmp_path: Path) -> None:
    log = SqliteAuditLog(tmp_path / "audit.sqlite3")
    try:
        with pytest.raises(ConfigurationError, match="person-ref key"):
            log.append_about(PERSON, [_draft()])
    finally:
        log.close()
