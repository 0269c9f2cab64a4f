"""The audit details' fast path (counts, nulls and references) against the general encoder."""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.auditing.log import (
    _DETAIL_KEYS_SEEN,
    MAX_DETAILS_BYTES,
    AuditDraft,
    AuditRef,
    AuditRefs,
    SqliteAuditLog,
    _checked_details,
    _dumps,
    _freeze_details,
    _simple_details,
)

_KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
_REFS = st.one_of(
    st.from_regex(r"[A-Za-z][A-Za-z0-9_.:\-]{0,40}", fullmatch=True),
    st.from_regex(r"[0-9a-f]{32,64}", fullmatch=True),
    st.from_regex(r"20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])-[0-9]{1,8}", fullmatch=True),
).map(AuditRef)
_VALUES = st.one_of(
    st.integers(-(2**53) + 1, 2**53 - 1),
    st.none(),
    _REFS,
    st.lists(_REFS, max_size=3),  # an audience page's person refs (short: under the size bound)
    st.tuples(_REFS, _REFS),
)


def _plain(value: object) -> object:
    if isinstance(value, AuditRef):
        return str.__str__(value)
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    assert not isinstance(value, Enum)
    return value


@contextmanager
def _seen(keys: Iterable[str]) -> Iterator[None]:
    """``keys`` counted as checked before (the fast path's premise), for the block only."""
    before = set(_DETAIL_KEYS_SEEN)
    _DETAIL_KEYS_SEEN.update(keys)
    try:
        yield
    finally:
        _DETAIL_KEYS_SEEN.clear()
        _DETAIL_KEYS_SEEN.update(before)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _VALUES, max_size=12))
def test_the_fast_path_writes_what_the_encoder_writes_when_details_are_counts_and_refs(
    details: dict[str, int | AuditRef | list[AuditRef] | tuple[AuditRef, ...] | None],
) -> None:
    with _seen(details):
        fast = _simple_details(details)
        draft = AuditDraft("key_1", "read.profile", details=details)
        general = _checked_details(details)

    assert fast is not None
    frozen, text = fast
    expected = {k: _plain(v) for k, v in details.items()}
    assert text == _dumps(expected) == general[1]
    assert dict(frozen) == dict(general[0])
    assert list(frozen.items()) == list(expected.items())  # the caller's order kept
    assert json.loads(text) == {
        k: list(v) if isinstance(v, tuple) else v for k, v in expected.items()
    }
    assert draft._details_json == text


@pytest.mark.parametrize(
    "details",
    [
        {"never_seen_key_zz": 1},  # a key not checked yet: the general path checks it
        {"fields_returned": True},  # a bool is not a count
        {"fields_returned": 2**53},  # out of range: the general path names the problem
        {"fields_returned": "free text"},  # text goes through the PII backstop
        {"fields_returned": [1, 2]},
        {"fields_returned": ["free text"]},  # list items that are not references: checked
        {"fields_returned": [AuditRef("r_1"), "free text"]},
        {"fields_returned": [AuditRef("r_1")] * 101},  # too long: the general path says so
    ],
)
def test_the_general_path_takes_details_when_they_are_not_counts_and_refs(
    details: dict[str, object],
) -> None:
    _DETAIL_KEYS_SEEN.discard("never_seen_key_zz")
    with _seen(["fields_returned"]):
        assert _simple_details(details) is None


def test_details_too_large_are_refused_when_they_are_counts_and_refs() -> None:
    keys = [f"k_{c}{d}" for c in string.ascii_lowercase for d in string.ascii_lowercase][:32]
    details = {k: AuditRef("r" + "a" * 127) for k in keys}

    with _seen(keys):
        assert _simple_details(details) is None
        with pytest.raises(ValueError, match=str(MAX_DETAILS_BYTES)):
            _freeze_details(details)


def test_person_refs_listed_as_references_so_an_audience_page_skips_the_text_backstop(
    tmp_path: Path,
) -> None:
    log = SqliteAuditLog(tmp_path / "audit.sqlite3", person_ref_key=b"k" * 32)
    try:
        refs = log.person_refs(["p_one", "p_two"])
    finally:
        log.close()

    # Plain strings of the reference shape (since stop 45), listed as one AuditRefs.
    assert all(type(ref) is str and AuditRef(ref) == ref for ref in refs.values())
    with _seen(["refs"]):
        assert _simple_details({"refs": AuditRefs([refs["p_one"], refs["p_two"]])}) is not None


def test_an_entry_about_a_person_names_it_by_a_plain_string_reference(tmp_path: Path) -> None:
    log = SqliteAuditLog(tmp_path / "audit.sqlite3", person_ref_key=b"k" * 32)
    try:
        (entry,) = log.append_about("p_one", [AuditDraft("key_1", "read.profile")])
        (stored,) = log.entries()
    finally:
        log.close()

    assert type(entry.person_id) is str
    assert entry == stored
