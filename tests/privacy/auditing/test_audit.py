"""The hash-chained audit log: appends, verification, tamper detection, the PII guard.

Tampering is done the way an attacker with file access would: raw SQL on the file, after dropping
the append-only triggers (which only stop accidents).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import stat
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from identity.errors import ConfigurationError
from identity.model import (
    ConsentInput,
    ConsentSignal,
    new_consent_id,
    new_erasure_id,
    new_fact_id,
    new_node_id,
    new_person_id,
)
from privacy.access.audiences import new_audience_id
from privacy.auditing.log import (
    GENESIS_DIGEST,
    AuditDraft,
    AuditHead,
    AuditRef,
    AuditVerification,
    SqliteAuditLog,
    api_key_actor,
    audit_ref_or_text,
    person_ref,
)
from privacy.consent.recording import consent_audit_drafts
from privacy.dsr.erasure import ErasureService
from privacy.keys.hash_keys import new_key_id
from privacy.keys.keyprovider import new_kek_id
from privacy.scanning.redaction import redact_text
from privacy.transport.webhooks import new_webhook_id

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
OK = AuditVerification(True, 10, None, None)


def _draft(i: int, person: str | None = None) -> AuditDraft:
    return AuditDraft(
        actor="key_ops1",
        action="policy.decide",
        purpose="marketing",
        person_id=person or f"p_{i}",
        decision="allow",
        reason="consent given",
        details={"count": i, "fields": ["email_hash", "city"]},
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "audit.sqlite3"


@pytest.fixture
def log(path: Path) -> Iterator[SqliteAuditLog]:
    opened = SqliteAuditLog(path, clock=lambda: T0)
    yield opened
    opened.close()


@pytest.fixture
def ten(log: SqliteAuditLog) -> SqliteAuditLog:
    log.append([_draft(i) for i in range(1, 11)])
    return log


def _raw(path: Path) -> sqlite3.Connection:
    """A plain connection to the file, with the append-only triggers dropped."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("DROP TRIGGER audit_log_no_delete")
    return conn


def _digest(fields: dict[str, object]) -> str:
    """The documented digest, computed independently of privacy.auditing.log."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(b"idgraph-audit/1\x00" + canonical.encode()).hexdigest()


def _rehash_from(conn: sqlite3.Connection, start: int) -> None:
    """What an attacker who knows the scheme does: recompute every digest from ``start`` on."""
    rows = conn.execute(
        "SELECT seq, at, actor, action, purpose, person_id, decision, reason, details "
        "FROM audit_log WHERE seq >= ? ORDER BY seq",
        (start,),
    ).fetchall()
    prev = conn.execute("SELECT digest FROM audit_log WHERE seq = ?", (start - 1,)).fetchone()
    prev_digest = prev[0] if prev else GENESIS_DIGEST
    for seq, at, actor, action, purpose, person_id, decision, reason, details in rows:
        fields: dict[str, object] = {
            "seq": seq,
            "at": at,
            "actor": actor,
            "action": action,
            "purpose": purpose,
            "person_id": person_id,
            "decision": decision,
            "reason": reason,
            "details": json.loads(details),
            "prev_digest": prev_digest,
        }
        digest = _digest(fields)
        conn.execute(
            "UPDATE audit_log SET prev_digest = ?, digest = ? WHERE seq = ?",
            (prev_digest, digest, seq),
        )
        prev_digest = digest


# -- appending and reading ---------------------------------------------------------------------


def test_verify_is_ok_when_log_is_empty(log: SqliteAuditLog) -> None:
    assert log.verify() == AuditVerification(True, 0, None, None)
    assert log.head() == AuditHead(0, GENESIS_DIGEST)


def test_append_chains_entries_from_genesis(log: SqliteAuditLog) -> None:
    first = log.append([_draft(1), _draft(2)])
    second = log.append([_draft(3)])
    entries = [*first, *second]
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[0].prev_digest == GENESIS_DIGEST
    assert entries[1].prev_digest == entries[0].digest
    assert entries[2].prev_digest == entries[1].digest
    assert log.head() == AuditHead(3, entries[2].digest)
    assert log.verify() == AuditVerification(True, 3, None, None)


def test_a_long_append_is_stored_whole_and_in_order_when_it_spans_several_inserts(
    log: SqliteAuditLog,
) -> None:
    drafts = [_draft(i) for i in range(1, 151)]  # more entries than one INSERT statement holds

    appended = log.append(drafts)

    stored = log.entries(limit=1_000)
    assert [e.digest for e in stored] == [e.digest for e in appended]  # the digest covers all
    assert [e.seq for e in stored] == list(range(1, 151))
    assert [e.details["count"] for e in stored] == list(range(1, 151))
    assert log.verify() == AuditVerification(True, 150, None, None)


def test_digest_matches_documented_canonical_encoding(log: SqliteAuditLog) -> None:
    (entry,) = log.append([_draft(7)])
    expected = _digest(
        {
            "seq": 1,
            "at": "2026-03-01T09:00:00.000000Z",
            "actor": "key_ops1",
            "action": "policy.decide",
            "purpose": "marketing",
            "person_id": "p_7",
            "decision": "allow",
            "reason": "consent given",
            "details": {"count": 7, "fields": ["email_hash", "city"]},
            "prev_digest": GENESIS_DIGEST,
        }
    )
    assert entry.digest == expected


def test_entries_round_trip_what_was_appended(ten: SqliteAuditLog) -> None:
    stored = ten.entries()
    assert len(stored) == 10
    assert stored[0].at == T0
    assert dict(stored[0].details) == {"count": 1, "fields": ("email_hash", "city")}
    assert stored[4].decision == "allow"
    assert stored[4].person_id == "p_5"


def test_entries_filters_by_person_and_pages(log: SqliteAuditLog) -> None:
    log.append([_draft(i, person="p_a" if i % 2 else "p_b") for i in range(1, 21)])
    page1 = log.entries(person_id="p_a", limit=4)
    page2 = log.entries(person_id="p_a", after_seq=page1[-1].seq, limit=100)
    assert [e.seq for e in page1] == [1, 3, 5, 7]
    assert [e.seq for e in page2] == [9, 11, 13, 15, 17, 19]
    assert log.entries(person_id="p_nobody") == []


def test_entries_refuses_unbounded_limit(log: SqliteAuditLog) -> None:
    with pytest.raises(ValueError, match="limit"):
        log.entries(limit=0)
    with pytest.raises(ValueError, match="limit"):
        log.entries(limit=1_000_000)


def test_append_of_nothing_writes_nothing(log: SqliteAuditLog) -> None:
    assert log.append([]) == []
    assert log.head().seq == 0


def test_log_survives_reopen(path: Path, ten: SqliteAuditLog) -> None:
    head = ten.head()
    ten.close()
    reopened = SqliteAuditLog(path)
    assert reopened.head() == head
    assert reopened.verify(anchor=head).ok
    reopened.close()


def test_log_file_is_owner_only(path: Path, log: SqliteAuditLog) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_log_refuses_group_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.sqlite3"
    path.touch()
    path.chmod(0o640)
    with pytest.raises(ConfigurationError):
        SqliteAuditLog(path)


def test_append_refuses_naive_clock(tmp_path: Path) -> None:
    naive = SqliteAuditLog(tmp_path / "a.sqlite3", clock=lambda: datetime(2026, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="timezone-aware"):
        naive.append([_draft(1)])
    assert naive.head().seq == 0
    naive.close()


def test_triggers_refuse_update_and_delete_through_plain_sql(
    path: Path, ten: SqliteAuditLog
) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit_log SET reason = 'x' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit_log WHERE seq = 1")
    conn.close()


# -- tamper detection --------------------------------------------------------------------------

EDITS = {
    "at": "'2020-01-01T00:00:00.000000Z'",
    "actor": "'key_other'",
    "action": "'consent.record'",
    "purpose": "'analytics'",
    "person_id": "'p_someone_else'",
    "decision": "'deny'",
    "reason": "'no reason'",
    "details": """'{"count":999,"fields":["email_hash","city"]}'""",
    "prev_digest": "'" + "f" * 64 + "'",
    "digest": "'" + "e" * 64 + "'",
    "purpose_to_null": "NULL",
}


@pytest.mark.parametrize("seq", [1, 5, 10])
@pytest.mark.parametrize("column", sorted(EDITS))
def test_verify_reports_edited_when_any_field_of_any_row_changes(
    path: Path, ten: SqliteAuditLog, column: str, seq: int
) -> None:
    conn = _raw(path)
    target = "purpose" if column == "purpose_to_null" else column
    conn.execute(f"UPDATE audit_log SET {target} = {EDITS[column]} WHERE seq = ?", (seq,))  # noqa: S608 - test constants
    conn.close()
    assert ten.verify() == AuditVerification(False, seq - 1, seq, "edited")


def test_verify_reports_edited_when_details_are_not_json(path: Path, ten: SqliteAuditLog) -> None:
    conn = _raw(path)
    conn.execute("UPDATE audit_log SET details = 'not json' WHERE seq = 4")
    conn.execute("UPDATE audit_log SET actor = x'00ff' WHERE seq = 2")
    conn.close()
    assert ten.verify() == AuditVerification(False, 1, 2, "edited")


def test_verify_reports_edited_when_text_is_not_utf8(path: Path, ten: SqliteAuditLog) -> None:
    conn = _raw(path)
    conn.execute("UPDATE audit_log SET reason = CAST(x'ff20' AS TEXT) WHERE seq = 3")
    conn.close()
    assert ten.verify() == AuditVerification(False, 2, 3, "edited")


def test_verify_reports_edited_when_one_row_is_rehashed_alone(
    path: Path, ten: SqliteAuditLog
) -> None:
    conn = _raw(path)
    conn.execute("UPDATE audit_log SET decision = 'deny' WHERE seq = 6")
    row = conn.execute(
        "SELECT at, actor, action, purpose, person_id, decision, reason, details, prev_digest "
        "FROM audit_log WHERE seq = 6"
    ).fetchone()
    keys = ["at", "actor", "action", "purpose", "person_id", "decision", "reason"]
    fields: dict[str, object] = dict(zip(keys, row[:7], strict=True))
    fields.update(seq=6, details=json.loads(row[7]), prev_digest=row[8])
    conn.execute("UPDATE audit_log SET digest = ? WHERE seq = 6", (_digest(fields),))
    conn.close()
    # Row 6 is self-consistent now, but row 7 still links to the original row 6.
    assert ten.verify() == AuditVerification(False, 6, 6, "edited")


def test_anchor_detects_a_full_rewrite(path: Path, ten: SqliteAuditLog) -> None:
    anchor = ten.head()
    conn = _raw(path)
    conn.execute("UPDATE audit_log SET decision = 'deny' WHERE seq = 3")
    _rehash_from(conn, 3)
    conn.close()
    assert ten.verify().ok  # without an anchor a consistent rewrite is invisible
    assert ten.verify(anchor=anchor) == AuditVerification(False, 9, 10, "edited")


@pytest.mark.parametrize("seq", [1, 5, 9])
def test_verify_reports_deleted_when_a_row_is_removed(
    path: Path, ten: SqliteAuditLog, seq: int
) -> None:
    conn = _raw(path)
    conn.execute("DELETE FROM audit_log WHERE seq = ?", (seq,))
    conn.close()
    assert ten.verify() == AuditVerification(False, seq - 1, seq, "deleted")


def test_verify_reports_deleted_when_later_rows_are_renumbered(
    path: Path, ten: SqliteAuditLog
) -> None:
    conn = _raw(path)
    conn.execute("DELETE FROM audit_log WHERE seq = 4")
    for seq in range(5, 11):
        conn.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (seq - 1, seq))
    conn.close()
    assert ten.verify() == AuditVerification(False, 3, 4, "deleted")


def test_tail_truncation_needs_the_anchor(path: Path, ten: SqliteAuditLog) -> None:
    anchor = ten.head()
    conn = _raw(path)
    conn.execute("DELETE FROM audit_log WHERE seq > 7")
    conn.close()
    assert ten.verify() == AuditVerification(True, 7, None, None)  # the documented limit
    assert ten.verify(anchor=anchor) == AuditVerification(False, 7, 8, "deleted")


def test_verify_with_current_anchor_is_ok(ten: SqliteAuditLog) -> None:
    anchor = ten.head()
    ten.append([_draft(11)])
    assert ten.verify(anchor=anchor) == AuditVerification(True, 11, None, None)


@pytest.mark.parametrize(("a", "b"), [(3, 4), (1, 2), (2, 9)])
def test_verify_reports_reordered_when_two_rows_swap_seq(
    path: Path, ten: SqliteAuditLog, a: int, b: int
) -> None:
    conn = _raw(path)
    conn.execute("UPDATE audit_log SET seq = -1 WHERE seq = ?", (a,))
    conn.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (a, b))
    conn.execute("UPDATE audit_log SET seq = ? WHERE seq = -1", (b,))
    conn.close()
    assert ten.verify() == AuditVerification(False, a - 1, a, "reordered")


def test_verify_reports_reordered_when_a_row_is_moved_past_the_end(
    path: Path, ten: SqliteAuditLog
) -> None:
    conn = _raw(path)
    conn.execute("UPDATE audit_log SET seq = 1000 WHERE seq = 5")
    conn.close()
    assert ten.verify() == AuditVerification(False, 4, 5, "reordered")


def test_verify_reports_reordered_when_a_row_is_moved_before_the_start(
    path: Path, ten: SqliteAuditLog
) -> None:
    conn = _raw(path)
    conn.execute("UPDATE audit_log SET seq = -7 WHERE seq = 3")
    conn.close()
    assert ten.verify() == AuditVerification(False, 0, -7, "reordered")


@pytest.mark.parametrize("batch_size", [1, 3, 4, 5000])
def test_verify_finds_the_same_problem_whatever_the_batch_size(
    path: Path, ten: SqliteAuditLog, batch_size: int
) -> None:
    assert ten.verify(batch_size=batch_size) == OK
    conn = _raw(path)
    conn.execute("UPDATE audit_log SET reason = 'x' WHERE seq = 4")
    conn.close()
    assert ten.verify(batch_size=batch_size) == AuditVerification(False, 3, 4, "edited")


# -- concurrency and size ----------------------------------------------------------------------


def test_concurrent_appenders_chain_correctly(path: Path) -> None:
    logs = [SqliteAuditLog(path), SqliteAuditLog(path)]  # two connections, like two processes
    errors: list[BaseException] = []

    def work(log: SqliteAuditLog, worker: int) -> None:
        try:
            for batch in range(50):
                log.append([_draft(worker * 1000 + batch * 10 + i) for i in range(10)])
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(log, n)) for n, log in enumerate(logs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert logs[0].verify() == AuditVerification(True, 1000, None, None)
    assert logs[1].head().seq == 1000
    counts = {e.details["count"] for e in logs[0].entries(limit=1000)}
    assert len(counts) == 1000
    for log in logs:
        log.close()


def test_verify_streams_fifty_thousand_entries(path: Path) -> None:
    clock_ticks = iter(T0 + timedelta(seconds=n) for n in range(100))
    log = SqliteAuditLog(path, clock=lambda: next(clock_ticks))
    draft = _draft(1)  # validated once; the log hashes each copy at its own seq
    for _ in range(10):
        log.append([draft] * 5_000)
    assert log.verify() == AuditVerification(True, 50_000, None, None)
    log.close()


# -- the PII guard -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "details",
    [
        {"note": "ann.p0000123@bench-mail.de"},
        {"note": "contact +44 20 7946 0958 please"},
        {"note": "(650) 253-0000"},
        {"hashes": ["ok", "someone@example.org"]},
        {"phone": "+14155550123"},
        {"Email": "x"},  # keys are snake_case tokens
        {"score": 0.5},  # floats do not encode identically everywhere
        {"nested": {"a": 1}},
        {"nested": [[1]]},
        {"huge": 2**60},
        {"long": "x" * 201},
        {f"k{i}": i for i in range(33)},
    ],
)
def test_draft_refuses_details_that_are_not_small_and_pii_free(details: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="audit"):
        AuditDraft(actor="cli", action="erasure.completed", details=details)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reason": "sent to ann@example.com"},
        {"reason": "called 0049 30 1234567"},
        {"person_id": "ann@example.com"},
        {"actor": "ann@example.com"},
        {"actor": ""},
        {"action": "Policy Decide"},
        {"purpose": "Marketing!"},
        {"decision": "maybe"},
        {"reason": "r" * 501},
        {"reason": "lone \ud800 surrogate"},
    ],
)
def test_draft_refuses_bad_fields(kwargs: dict[str, str]) -> None:
    fields = {"actor": "cli", "action": "consent.record", **kwargs}
    with pytest.raises(ValueError, match="audit"):
        AuditDraft(**fields)  # type: ignore[arg-type]


def test_draft_accepts_counts_ids_dates_and_digests() -> None:
    draft = AuditDraft(
        actor="key_2024.ops:reader",
        action="erasure.completed",
        person_id="p_01HZX3K9Q2",
        details={
            "identifiers_removed": 4,
            "requested_on": "2026-03-01",
            "proof_digest": hashlib.sha256(b"x").hexdigest(),
            "request_id": "dsr_8f14e45f",
            "stores": ["graph", "vault"],
            "dry_run": False,
            "note": None,
        },
    )
    assert draft.details["identifiers_removed"] == 4


def test_draft_details_cannot_be_changed_after_validation(log: SqliteAuditLog) -> None:
    details: dict[str, object] = {"count": 1, "ids": ["a"]}
    draft = AuditDraft(actor="cli", action="consent.record", details=details)  # type: ignore[arg-type]
    details["note"] = "ann@example.com"
    assert "note" not in draft.details
    with pytest.raises(TypeError):
        draft.details["note"] = "x"  # type: ignore[index]
    (entry,) = log.append([draft])
    assert dict(entry.details) == {"count": 1, "ids": ("a",)}


def test_api_key_actors_are_never_refused_as_phone_numbers() -> None:
    # About 1 in 256 random 12-hex-digit key ids is all decimal digits: bare, the personal-data
    # guard refuses it (a read then failed with a 500); prefixed, it is always accepted.
    digits = "338623751281"
    with pytest.raises(ValueError, match="phone number"):
        AuditDraft(digits, "read.profile")
    assert AuditDraft(api_key_actor(digits), "read.profile").actor == "key_338623751281"


# -- ids are typed, free text is scanned (issue 21) --------------------------------------------

# Every id generator of idgraph whose output can reach an audit entry, with the exact shape of
# what it can produce: the property test below draws from these shapes (so it covers the ids a
# generator makes once in millions too), and the first test keeps the shapes honest.
ID_GENERATORS: dict[str, tuple[Callable[[], str], str]] = {
    "person": (new_person_id, r"p_[0-9a-f]{24}"),
    "node": (new_node_id, r"n_[0-9a-f]{34}"),
    "consent": (new_consent_id, r"c_[0-9a-f]{24}"),
    "fact": (new_fact_id, r"f_[0-9a-f]{24}"),
    "erasure": (new_erasure_id, r"e_[0-9a-f]{24}"),
    "hash_key": (new_key_id, r"hk-[0-9]{8}-[0-9a-f]{6}"),
    "kek": (new_kek_id, r"kek-[0-9]{8}-[0-9a-f]{6}"),
    "audience": (new_audience_id, r"aud_[0-9a-f]{20}"),
    "webhook_message": (new_webhook_id, r"msg_[A-Za-z0-9_\-]{22}"),
    "api_key": (lambda: secrets.token_hex(6), r"[0-9a-f]{12}"),  # api.auth.ApiKeyStore.create
}


@pytest.mark.parametrize("kind", sorted(ID_GENERATORS))
def test_every_id_generator_makes_ids_of_its_declared_shape(kind: str) -> None:
    generate, shape = ID_GENERATORS[kind]
    for _ in range(200):
        assert re.fullmatch(shape, generate()), kind


def test_generated_key_ids_never_end_in_a_phone_like_digit_run() -> None:
    # One random 6-hex suffix in 17 is all digits; 3,000 draws without one is the new rule
    # (the old generator fails this with probability 1 - (15/16)**(6*3000)... in practice 1).
    for generate in (new_key_id, new_kek_id):
        for _ in range(3_000):
            key_id = generate()
            assert not key_id.rsplit("-", 1)[1].isdigit(), key_id
            assert redact_text(key_id) == key_id


def _ids(kind: str) -> st.SearchStrategy[str]:
    return st.from_regex(ID_GENERATORS[kind][1], fullmatch=True)


@pytest.fixture(scope="module")
def shared_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteAuditLog]:
    opened = SqliteAuditLog(tmp_path_factory.mktemp("ids") / "audit.sqlite3")
    yield opened
    opened.close()


@settings(max_examples=150, deadline=None)
@example(  # the key id of the issue: a features read answered 500 with it
    person="p_000000000000000000000000",
    erasure="e_000000000000000000000000",
    hash_key="hk-20261202-355274",
    audience="aud_00000000000000000000",
    api_key="338623751281",
    message="msg_0000000000000000000000",
)
@given(
    person=_ids("person"),
    erasure=_ids("erasure"),
    hash_key=_ids("hash_key") | _ids("kek"),
    audience=_ids("audience"),
    api_key=_ids("api_key"),
    message=_ids("webhook_message"),
)
def test_every_generated_id_passes_every_audit_path(
    shared_log: SqliteAuditLog,
    person: str,
    erasure: str,
    hash_key: str,
    audience: str,
    api_key: str,
    message: str,
) -> None:
    actor = api_key_actor(api_key)
    ref = person_ref(person, b"\x01" * 32)  # the vault's reference key in production
    consent = ConsentInput("analytics", True, T0, ConsentSignal.WEBHOOK, "consent", "0" * 64)
    drafts = [
        # a read decision (privacy.access.reads: _record)
        AuditDraft(actor, "read.profile", "analytics", ref, "deny", "no_consent"),
        # a page of features / audience members (privacy.access.reads: _audit_page, define)
        AuditDraft(
            actor,
            "read.features",
            "analytics",
            None,
            "allow",
            "page",
            {"pseudonym_key": AuditRef(hash_key), "audience": AuditRef(audience), "members": 1},
        ),
        AuditDraft(
            actor,
            "read.audience",
            "analytics",
            None,
            "allow",
            "members",
            {"refs": [ref], "audience": AuditRef(audience)},
        ),
        # erasure and lifting suppression (privacy.dsr.erasure), with the DSR's request id
        ErasureService._draft(actor, message, erasure, {"identifiers": 2}, 2),
        ErasureService._lift_draft(actor, message, 1),
        # consent recorded from a webhook message (privacy.consent.recording)
        *consent_audit_drafts(actor, ref, message, [consent]),
    ]

    entries = shared_log.append(drafts)

    assert entries[1].details["pseudonym_key"] == hash_key
    assert entries[1].details["audience"] == audience
    assert entries[3].details["erasure_id"] == erasure
    assert entries[5].details["source"] == message  # an id is not redacted as a phone number


@pytest.mark.parametrize(
    "value",
    [
        "+442079460958",
        "02079460958",
        "020-7946-0958",
        "2026-1302-355274",  # no month 13: a digit run, not a date-stamped id
        "2026-1202",  # a date alone, without the id's digit groups after it
        "ann@shop.de",
        "(650) 253-0000",
        "",
        "x" * 129,
    ],
)
def test_an_audit_ref_cannot_hold_an_email_or_phone_number(value: str) -> None:
    with pytest.raises(ValueError, match="audit reference"):
        AuditRef(value)


@pytest.mark.parametrize(
    "value", ["2026-1202-355274", "20261202-0042", "2026.12.02-17", "2026-12-02:4:7"]
)
def test_a_date_stamped_id_is_an_audit_ref_though_free_text_would_be_refused(value: str) -> None:
    assert AuditRef(value) == value
    assert audit_ref_or_text(value) == value
    assert isinstance(audit_ref_or_text(value), AuditRef)
    assert not isinstance(audit_ref_or_text("0042"), AuditRef)


def test_ids_are_checked_by_shape_enums_by_value_and_only_free_text_by_the_pii_backstop(
    log: SqliteAuditLog,
) -> None:
    key_id = "hk-20261202-355274"
    with pytest.raises(ValueError, match="phone number"):  # as free text: refused
        AuditDraft("cli", "read.features", details={"pseudonym_key": key_id})
    draft = AuditDraft(
        "cli",
        "read.features",
        details={
            "pseudonym_key": AuditRef(key_id),
            "signal": ConsentSignal.GPC,
            "keys": [AuditRef(key_id), 3, ConsentSignal.TCF],
        },
    )
    (entry,) = log.append([draft])
    assert dict(entry.details) == {
        "pseudonym_key": key_id,
        "signal": "gpc",
        "keys": (key_id, 3, "tcf"),
    }
    assert type(entry.details["pseudonym_key"]) is str


def test_appended_entries_equal_what_is_read_back_when_the_clock_is_not_utc(
    tmp_path: Path,
) -> None:
    # The recorded time is returned without parsing the stored text back: it must be the same
    # instant, in UTC, to the microsecond, as what a later read gives.
    berlin = timezone(timedelta(hours=1))
    clock = datetime(2026, 3, 1, 13, 4, 5, 678901, tzinfo=berlin)
    log = SqliteAuditLog(tmp_path / "audit.sqlite3", clock=lambda: clock)
    appended = log.append([_draft(i) for i in range(1, 4)])
    assert log.entries() == appended
    assert appended[0].at == datetime(2026, 3, 1, 12, 4, 5, 678901, tzinfo=UTC)
    assert appended[0].at.tzinfo is UTC
    log.close()
