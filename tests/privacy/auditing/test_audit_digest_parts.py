"""The group commit's writer chains digests from per-group parts (``SqliteAuditLog._chained``):
the bytes hashed must stay exactly the canonical encoding ``_row_digest`` hashes (what
``verify`` and any independent verifier recompute), whatever the group mixes. And
``record_about`` records what ``append_about`` records, without handing entries back.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.auditing.log import (
    PERSON_REF_INFO,
    AuditDraft,
    AuditHead,
    AuditRef,
    SqliteAuditLog,
    _Pending,
    _row_digest,
)
from privacy.keys.vault import Vault

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PERSON = "p_5eed0f7e11a9b0c4d2e8f6a1"

_heads = st.tuples(
    st.sampled_from(["key_ops1", "key_ops2", "cli"]),
    st.sampled_from(["read.profile", "read.audience", "consent.recorded"]),
    st.sampled_from([None, "ad_targeting", "analytics"]),
    st.sampled_from([None, "allow", "deny"]),
    # Free text with quotes, backslashes, control and non-ASCII characters: escaped by the
    # encoder, and hashed as UTF-8.
    st.sampled_from(["", "consent_granted", 'a "quoted" reason', "tab\there\\", "café ☕"]),
)
_details = st.dictionaries(
    st.sampled_from(["fields_returned", "withheld_x", "consent_record", "note", "refs"]),
    st.one_of(
        st.integers(-(2**53) + 1, 2**53 - 1),
        st.none(),
        st.booleans(),
        st.sampled_from(["plain", "naïve ünïcode", 'q"uote']),
        st.just(AuditRef("c_0123456789abcdef")),
    ),
    max_size=4,
)


@pytest.fixture
def log(tmp_path: Path, vault: Vault) -> Iterator[SqliteAuditLog]:
    opened = SqliteAuditLog(
        tmp_path / "audit.sqlite3",
        clock=lambda: T0,
        person_ref_key=vault.reference_key(PERSON_REF_INFO),
    )
    yield opened
    opened.close()


@settings(max_examples=60, deadline=None)
@given(
    entries=st.lists(
        st.tuples(_heads, _details, st.sampled_from([None, "r_0123456789abcdef01234567"])),
        min_size=1,
        max_size=12,
    ),
    prev=st.sampled_from(["0" * 64, "ab" * 32]),
)
def test_chained_digests_are_the_canonical_row_digests_when_a_group_mixes_heads(
    entries: list[tuple[tuple[object, ...], dict[str, object], str | None]], prev: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = SqliteAuditLog(Path(tmp) / "chain.sqlite3", clock=lambda: T0)
        groups = []
        subjects: dict[tuple[str, bool], str] = {}
        for (actor, action, purpose, decision, reason), details, subject in entries:
            draft = AuditDraft(actor, action, purpose, None, decision, reason, details)  # type: ignore[arg-type]
            if subject is not None:
                subjects[(PERSON, True)] = subject
            groups.append(_Pending([draft], None if subject is None else PERSON, True))
        try:
            results, rows, head = log._chained(AuditHead(7, prev), groups, subjects)
        finally:
            log.close()

    previous = prev
    for seq, row in enumerate(rows, start=8):
        assert row[0] == seq
        assert row[9] == previous
        assert row[10] == _row_digest(row[:10], seq)
        previous = str(row[10])
    assert head == AuditHead(7 + len(rows), previous)
    assert [entry.digest for (entry,) in results] == [row[10] for row in rows]


def test_record_about_records_what_append_about_records_when_no_entries_are_wanted(
    log: SqliteAuditLog,
) -> None:
    draft = AuditDraft(
        "key_ops1", "read.profile", "ad_targeting", None, "allow", "consent_granted", {"n": 1}
    )
    (appended,) = log.append_about(PERSON, [draft])

    log.record_about(PERSON, [draft])  # returns None: no entries are built for it

    _, recorded = log.entries(person_id=appended.person_id)
    assert recorded.person_id == appended.person_id == log.person_ref(PERSON)
    assert (recorded.action, recorded.reason, dict(recorded.details)) == (
        appended.action,
        appended.reason,
        dict(appended.details),
    )
    assert recorded.prev_digest == appended.digest
    assert log.verify().ok


def test_a_group_commit_writes_the_bytes_single_appends_write_when_entries_are_grouped(
    tmp_path: Path,
) -> None:
    # Review finding D7 (stop 36): the group's writer encodes the parts its entries share once,
    # verification encodes each row whole; both are built from the same part functions. The
    # same drafts written as one group and as one append each (same clock, same tail) must be
    # the same rows, byte for byte, and both chains must verify.
    drafts = [
        AuditDraft("key_ops1", "read.profile", "ad_targeting", "r_0123456789abcdef01234567",
                   "allow", "consent_granted", {"fields_returned": 3, "note": "café ☕"}),
        AuditDraft("key_ops1", "read.profile", "ad_targeting", "r_0123456789abcdef01234567",
                   "allow", "consent_granted", {"fields_returned": 4}),
        AuditDraft("cli", "consent.recorded", None, None, None, 'a "quoted" reason\t\\', {}),
        AuditDraft("key_ops2", "read.audience", "analytics", None, "deny", "no_consent",
                   {"refs": [AuditRef("r_0123456789abcdef01234567")], "n": None}),
    ]  # fmt: skip
    grouped = SqliteAuditLog(tmp_path / "grouped.sqlite3", clock=lambda: T0)
    single = SqliteAuditLog(tmp_path / "single.sqlite3", clock=lambda: T0)
    try:
        grouped._append_groups(
            [_Pending(drafts[:2], None, False), _Pending(drafts[2:], None, False)]
        )
        for draft in drafts:
            single.append([draft])
        assert grouped._group.groups == 0  # written as one group, not through the committer
        assert single._group.groups == len(drafts)
        rows = [grouped._batch(0, 10), single._batch(0, 10)]
        assert grouped.verify().ok
        assert single.verify().ok
    finally:
        grouped.close()
        single.close()
    assert len(rows[0]) == len(drafts)
    assert rows[0] == rows[1]
    assert [row[10] for row in rows[0]] == [_row_digest(row[:10], row[0]) for row in rows[0]]  # type: ignore[arg-type]
