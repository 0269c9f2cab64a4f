"""How an audit append commits: one statement when the log knows its tail, a re-read of the tail
when another appender overtook it, and no per-person index (schema 2, migrated from 1).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from privacy.auditing.log import (
    SCHEMA_VERSION,
    AuditDraft,
    AuditLogUnavailableError,
    AuditVerification,
    SqliteAuditLog,
)
from tests.support.waits import lingering, wait_until

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _draft(i: int, person: str = "r_0a1b2c3d4e5f60718293a4b5") -> AuditDraft:
    return AuditDraft(
        "key_ops1", "read.profile", "ad_targeting", person, "allow", "granted", {"n": i}
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "audit.sqlite3"


@pytest.fixture
def log(path: Path) -> Iterator[SqliteAuditLog]:
    opened = SqliteAuditLog(path, clock=lambda: T0)
    yield opened
    opened.close()


def _statements(log: SqliteAuditLog) -> list[str]:
    """Every SQL statement ``log``'s connection runs from now on (first word, upper case)."""
    seen: list[str] = []
    log._conn.set_trace_callback(lambda sql: seen.append(sql.split(None, 1)[0].upper()))
    return seen


def _indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {row[1] for row in conn.execute("PRAGMA index_list(audit_log)")}
    finally:
        conn.close()


def test_an_append_is_one_insert_when_the_log_knows_its_tail(log: SqliteAuditLog) -> None:
    log.append([_draft(1)])  # the first append reads the tail under the write lock
    seen = _statements(log)
    log.append([_draft(2), _draft(3)])
    assert seen == ["INSERT"]  # no BEGIN, tail SELECT or COMMIT: an autocommit statement
    assert log.verify() == AuditVerification(True, 3, None, None)


def test_an_append_reads_the_tail_again_when_another_appender_overtook_it(path: Path) -> None:
    first, second = SqliteAuditLog(path, clock=lambda: T0), SqliteAuditLog(path, clock=lambda: T0)
    try:
        first.append([_draft(1)])
        second.append([_draft(2), _draft(3)])  # first's remembered tail (seq 1) is now stale
        seen = _statements(first)
        entries = first.append([_draft(4)])
        assert [e.seq for e in entries] == [4]
        # The stale INSERT collided on seq 2 (and wrote nothing), then the tail was read again.
        assert seen == ["INSERT", "BEGIN", "SELECT", "INSERT", "COMMIT"]
        assert second.append([_draft(5)])[0].seq == 5
        assert first.verify() == AuditVerification(True, 5, None, None)
        assert [e.details["n"] for e in first.entries()] == [1, 2, 3, 4, 5]
    finally:
        first.close()
        second.close()


def test_a_long_append_is_one_transaction_when_the_log_knows_its_tail(log: SqliteAuditLog) -> None:
    log.append([_draft(0)])
    seen = _statements(log)
    log.append([_draft(i) for i in range(1, 151)])  # three INSERTs of at most 64 rows
    assert seen == ["BEGIN", "INSERT", "INSERT", "INSERT", "COMMIT"]
    assert log.verify() == AuditVerification(True, 151, None, None)


def test_an_append_after_a_failed_one_reads_the_tail_again(path: Path, log: SqliteAuditLog) -> None:
    log.append([_draft(1)])
    locker = sqlite3.connect(path, isolation_level=None, timeout=0)
    locker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock: the append fails
    log._conn.execute("PRAGMA busy_timeout = 0")
    try:
        with pytest.raises(AuditLogUnavailableError):
            log.append([_draft(2)])
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    seen = _statements(log)
    assert log.append([_draft(3)])[0].seq == 2  # nothing of the failed append was written
    assert seen[:3] == ["BEGIN", "SELECT", "INSERT"]
    assert log.verify() == AuditVerification(True, 2, None, None)


def test_entries_keep_no_per_person_index_and_still_filter_by_person(log: SqliteAuditLog) -> None:
    log.append([_draft(i, f"r_{i % 3:024x}") for i in range(9)])
    assert "audit_log_person" not in _indexes(log.path)
    assert [e.details["n"] for e in log.entries(person_id=f"r_{1:024x}")] == [1, 4, 7]
    page = log.entries(person_id=f"r_{2:024x}", after_seq=3, limit=1)
    assert [e.details["n"] for e in page] == [5]


def test_a_schema_1_log_is_migrated_when_opened(path: Path) -> None:
    old = SqliteAuditLog(path, clock=lambda: T0)
    old.append([_draft(i) for i in range(5)])
    old.close()
    # What a file of schema 1 holds: the same table, plus the per-person index, version 1.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE INDEX audit_log_person ON audit_log (person_id, seq)")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.close()
    assert "audit_log_person" in _indexes(path)

    log = SqliteAuditLog(path, clock=lambda: T0)
    try:
        assert "audit_log_person" not in _indexes(path)
        version = log._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.fetchone()[0] == str(SCHEMA_VERSION) == "2"
        assert log.append([_draft(5)])[0].seq == 6  # chained onto the migrated file's tail
        assert log.verify() == AuditVerification(True, 6, None, None)
        assert len(log.entries(person_id=_draft(0).person_id)) == 6
    finally:
        log.close()


def test_an_append_waits_for_announced_reads_only_while_more_are_coming_than_queued(
    path: Path,
) -> None:
    # Stop 44: a writer waited for every announced read (up to group_linger_s), so at 16
    # connections it waited the whole time while the reads behind it kept coming. Now it waits
    # only while more announced reads are busy than are queued: one queued (its own) and one
    # coming, it commits at once; one queued and two coming, it waits for one more.
    log = SqliteAuditLog(path, clock=lambda: T0, person_ref_key=b"k" * 32, group_linger_s=3600.0)
    about = AuditDraft("key_ops1", "read.profile", "ad_targeting", None, "allow", "granted")
    try:
        other = log.announce()
        with ThreadPoolExecutor(2) as pool:
            alone = pool.submit(log.append, [_draft(1)])
            wait_until(lambda: alone.done() or lingering(log._group))
            lingered = lingering(log._group)
            other.withdraw()  # ends the wait the old rule made
            alone.result(30)
            assert not lingered

            second, third = log.announce(), log.announce()
            first = pool.submit(log.append, [_draft(2)])
            wait_until(lambda: lingering(log._group))  # 1 queued, 2 coming: it waits
            groups = log._group.groups
            joined = pool.submit(log.record_about, "p_second", [about], arrival=second)
            first.result(30)
            joined.result(30)
            assert log._group.groups == groups + 1  # both in one commit, not waiting for third
            third.withdraw()
        assert log.verify() == AuditVerification(True, 3, None, None)
    finally:
        log.close()
