"""AuditRefs: a list of references typed once (an audience page's person references), stored
exactly as a list of AuditRef was, with no object of a Python class per reference."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.auditing.log import (
    _DETAIL_KEYS_SEEN,
    MAX_DETAIL_LIST,
    AuditDraft,
    AuditRef,
    AuditRefs,
    SqliteAuditLog,
    _checked_details,
    _dumps,
    _simple_details,
)

_PERSON_REFS = st.from_regex(r"r_[0-9a-f]{24}", fullmatch=True)
_OTHER_REFS = st.one_of(
    st.from_regex(r"[A-Za-z][A-Za-z0-9_.:\-]{0,40}", fullmatch=True),
    st.from_regex(r"[0-9a-f]{32,64}", fullmatch=True),
)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[SqliteAuditLog]:
    opened = SqliteAuditLog(tmp_path / "audit.sqlite3", person_ref_key=b"k" * 32)
    yield opened
    opened.close()


def test_person_refs_are_plain_untracked_strings_when_made_or_remembered(
    log: SqliteAuditLog,
) -> None:
    # Before, every reference handed out was an AuditRef (a Python class: tracked by the cyclic
    # collector), ~25k per warm 1M audience read, copied back to str for the entry.
    persons = [f"p_{i:04d}" for i in range(50)]
    made = log.person_refs(persons)
    again = log.person_refs(persons)
    gc.collect()

    assert made == again
    assert all(type(ref) is str for ref in (*made.values(), *again.values()))
    assert not any(gc.is_tracked(ref) for ref in (*made.values(), *again.values()))
    assert all(AuditRef(ref) == ref for ref in made.values())  # still reference-shaped


def test_a_reference_list_is_stored_as_a_list_of_references_was_when_appended(
    log: SqliteAuditLog,
) -> None:
    refs = list(log.person_refs([f"p_{i:04d}" for i in range(MAX_DETAIL_LIST)]).values())

    typed_once, typed_each = log.append(
        [
            AuditDraft("key_1", "read.audience", "ads", None, "allow", "members", {"refs": r})
            for r in (AuditRefs(refs), [AuditRef(r) for r in refs])
        ]
    )
    stored = log.entries()

    assert typed_once.details == typed_each.details == {"refs": tuple(refs)}
    assert [e.details for e in stored] == [{"refs": tuple(refs)}] * 2
    with log._transaction("BEGIN") as conn:  # the stored text, as an independent verifier reads it
        texts = [row[0] for row in conn.execute("SELECT details FROM audit_log ORDER BY seq")]
    assert texts[0] == texts[1] == json.dumps({"refs": refs}, separators=(",", ":"))
    assert log.verify().ok
    assert [e.seq for e in log.mentioning(refs[37])] == [1, 2]


@pytest.mark.parametrize(
    "values",
    [
        ["r_0123456789abcdef01234567", "someone@example.com"],
        ["+44 20 7946 0958"],
        ["442079460958"],  # a bare digit run could be a phone number
        [""],
        ["r_0123456789abcdef01234567", "1234"],
        ["a" * 129],
        ["caf\u00e9"],
        ['r_"quoted"'],
        [12345],
        [None],
    ],
)
def test_a_reference_list_is_refused_when_a_value_lacks_the_reference_shape(
    values: list[object],
) -> None:
    with pytest.raises(ValueError, match="audit reference"):
        AuditRefs(values)  # type: ignore[arg-type]


def test_a_reference_list_holds_plain_strings_when_made_of_typed_references() -> None:
    refs = AuditRefs([AuditRef("key_1"), "r_0123456789abcdef01234567", "hk-20261202-355274"])

    assert refs == ("key_1", "r_0123456789abcdef01234567", "hk-20261202-355274")
    assert all(type(ref) is str for ref in refs)
    assert AuditRefs() == ()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(_PERSON_REFS, _OTHER_REFS), max_size=MAX_DETAIL_LIST),
    st.integers(0, 2**53 - 1),
)
def test_a_reference_list_encodes_as_the_general_encoder_does_when_fast(
    refs: list[str], count: int
) -> None:
    details = {"refs": AuditRefs(refs), "members": count}
    before = set(_DETAIL_KEYS_SEEN)
    _DETAIL_KEYS_SEEN.update(details)
    try:
        fast = _simple_details(details)
    finally:
        _DETAIL_KEYS_SEEN.clear()
        _DETAIL_KEYS_SEEN.update(before)

    assert fast is not None
    frozen, text = fast
    expected = _dumps({"refs": list(refs), "members": count})
    assert text == expected
    assert _checked_details(details) == (frozen, expected)
    assert frozen["refs"] == tuple(refs)
    assert type(frozen["refs"]) is tuple


def test_a_reference_list_skips_the_text_backstop_when_its_ids_hold_digit_runs() -> None:
    # An id with a phone-like digit run has the reference shape; as free text it is refused.
    ids = ["hk-20261202-355274", "r_1234567890123456789abcde"]

    (draft,) = [AuditDraft("key_1", "read.audience", details={"refs": AuditRefs(ids)})]
    assert draft.details == {"refs": tuple(ids)}
    with pytest.raises(ValueError, match="email address or phone number"):
        AuditDraft("key_1", "read.audience", details={"refs": ids})
