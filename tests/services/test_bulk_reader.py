"""A bulk file read and validated in a process of its own (services.bulk_reader): the same
report and the same graph as when the file is read on the main thread; its errors arrive
without the file's values; a reader that fails or dies stops the file with a clear error; and
no reader is ever left running when ingest_file returns or raises."""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bootstrap.container import Container, build_container
from bootstrap.settings import Settings
from identity.errors import IdGraphError, StoreUnavailableError
from services import bulk
from services.bulk import BulkFileError, BulkReport, ReaderMode, ingest_file
from services.event_validation import EventValidation
from tests.support.crash_harness import bulk_readers

RAW = "reader.secret.person@gmail.com"


@pytest.fixture
def open_container(tmp_path: Path) -> Iterator[Callable[[str], Container]]:
    """``open_container(name)``: a real container on fresh stores under ``tmp_path/name``."""
    opened: list[Container] = []

    def make(name: str) -> Container:
        container = build_container(
            Settings(env="test", data_dir=tmp_path / name, default_region="GB")
        )
        opened.append(container)
        return container

    yield make
    for container in opened:
        container.close()


def _mixed_rows() -> list[bytes]:
    """Rows of every kind: identifier-only events, traits (one with an e-mail address in a
    trait: redacted by the scanner) and an event, a rejected identifier, bad JSON, a line
    that is not an object, a blank line, a repeated row, one bridging two persons."""
    rows: list[Any] = []
    for i in range(40):
        rows.append(
            {
                "identifiers": [
                    {"type": "email", "value": f"Person.{i}@GMail.com"},
                    {"type": "phone", "value": f"+1 415 555 26{i:02d}"},
                ],
                "source": "crm",
                "timestamp": "2026-11-30T10:00:00Z",
            }
        )
    rows.append(
        {
            "identifiers": [{"type": "email", "value": "traits.one@gmail.com"}],
            "source": "web",
            "timestamp": "2026-11-30T11:00:00Z",
            "traits": {"city": "Lisbon", "favourite_category": f"write to {RAW}"},
            "events": [{"name": "page_view", "timestamp": "2026-11-30T11:00:00Z"}],
        }
    )
    rows.append({"identifiers": [{"type": "email", "value": "not an address"}], "source": "crm"})
    rows.append({"identifiers": [{"type": "phone", "value": "12"}], "source": "crm"})
    rows.append(
        {
            "identifiers": [
                {"type": "email", "value": "person.1@gmail.com"},
                {"type": "email", "value": "person.2@gmail.com"},
            ],
            "source": "crm",
            "timestamp": "2026-11-30T12:00:00Z",
        }
    )
    lines = [json.dumps(r).encode() + b"\n" for r in rows]
    lines[5:5] = [b"{not json\n", b"[1, 2]\n", b"\n", lines[3]]
    return lines


def _ingest(
    container: Container, path: Path, reader: ReaderMode, **options: Any
) -> tuple[BulkReport, int]:
    read: list[int] = []
    report = ingest_file(
        container.ingest, path, actor="test", reader=reader, progress=read.append, **options
    )
    return report, sum(read)


def _readers() -> list[int]:
    return bulk_readers(os.getpid())


@pytest.mark.parametrize("batch_size", [7, 10_000])
def test_a_file_read_in_a_process_of_its_own_gives_the_same_report_and_graph(
    open_container: Callable[[str], Container], tmp_path: Path, batch_size: int
) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"".join(_mixed_rows()))

    inline, inline_read = _ingest(open_container("inline"), path, "inline", batch_size=batch_size)
    apart_container = open_container("process")
    apart, apart_read = _ingest(apart_container, path, "process", batch_size=batch_size)

    assert dataclasses.replace(apart, reader_peak_rss_kib=None) == inline
    assert apart.rejected_rows == 4
    assert apart.facts_stored > 0
    assert apart.merged_persons == 1
    assert apart_read == inline_read == path.stat().st_size
    stats = apart_container.store.stats()
    assert (stats.persons, stats.identifiers) == (39 + 1, 80 + 1)
    assert not _readers()


def test_a_csv_file_read_in_a_process_of_its_own_gives_the_same_report(
    open_container: Callable[[str], Container], tmp_path: Path
) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(
        "email,phone,source\n"
        "a.one@gmail.com,+1 415 555 2671,crm\n"
        "a.one@gmail.com,,crm\n"
        "not an address,,crm\n"
        "b.two@gmail.com,+1 415 555 2672\n",
        encoding="utf-8",
    )
    inline, _ = _ingest(open_container("inline"), path, "inline")
    apart, read = _ingest(open_container("process"), path, "process")

    assert dataclasses.replace(apart, reader_peak_rss_kib=None) == inline
    assert (apart.rows, apart.rejected_rows) == (4, 2)
    assert read == path.stat().st_size


def test_an_unknown_csv_column_stops_the_file_with_the_same_message_from_the_reader(
    open_container: Callable[[str], Container], tmp_path: Path
) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("email,shoe_size\na.one@gmail.com,44\n", encoding="utf-8")
    container = open_container("process")
    messages = []
    for reader in ("inline", "process"):
        with pytest.raises(BulkFileError) as raised:
            ingest_file(container.ingest, path, actor="test", reader=reader)
        messages.append(str(raised.value))
    assert messages[0] == messages[1]
    assert "unknown CSV column 'shoe_size'" in messages[1]
    assert container.store.stats().identifiers == 0
    assert not _readers()


def _failing_builder() -> EventValidation:
    """A reader whose set-up fails with the raw value in its message."""
    raise ValueError(f"cannot read {RAW}")


def _dying_builder() -> EventValidation:
    """A reader that dies without a word (as when it is killed)."""
    os._exit(3)


def _read_with(
    container: Container, path: Path, builder: Callable[[], EventValidation]
) -> BulkFileError:
    """What ingesting ``path`` raises when its reader process validates with ``builder``."""
    path.write_bytes(b"".join(_mixed_rows()))
    container.ingest.validation_builder = builder
    with pytest.raises(BulkFileError) as raised:
        ingest_file(container.ingest, path, actor="test", reader="process")
    assert container.store.stats().identifiers == 0
    assert not _readers()
    return raised.value


def test_a_reader_that_fails_stops_the_file_naming_the_error_type_and_no_value(
    open_container: Callable[[str], Container],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    error = _read_with(open_container("failing"), tmp_path / "rows.jsonl", _failing_builder)

    assert "reader process failed (ValueError)" in str(error)
    assert RAW not in str(error)
    assert RAW not in "".join(capfd.readouterr())


def test_a_reader_that_dies_stops_the_file_with_its_exit_code(
    open_container: Callable[[str], Container], tmp_path: Path
) -> None:
    error = _read_with(open_container("dying"), tmp_path / "rows.jsonl", _dying_builder)

    assert "stopped before the end of the file (exit code 3)" in str(error)


def test_a_failed_commit_stops_the_reader_process(
    open_container: Callable[[str], Container],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Far more rows than the pipe holds: the reader is still reading when the commit fails.
    path = tmp_path / "rows.jsonl"
    path.write_text(
        "".join(
            json.dumps({"identifiers": [{"type": "email", "value": f"many.{i}@gmail.com"}]}) + "\n"
            for i in range(60_000)
        ),
        encoding="utf-8",
    )
    container = open_container("failed-commit")
    seen: list[int] = []

    def failing_commit(prepared: Any, actor: str) -> Any:
        seen.append(len(_readers()))
        raise StoreUnavailableError("disk gone")

    monkeypatch.setattr(container.ingest, "commit_prepared", failing_commit)
    with pytest.raises(IdGraphError, match="disk gone"):
        ingest_file(
            container.ingest,
            path,
            actor="test",
            default_source="crm",
            batch_size=1_000,
            reader="process",
        )

    assert seen == [1]  # the reader was running when the commit failed
    assert not _readers()
    assert container.store.stats().identifiers == 0


def test_auto_reads_large_files_in_a_process_and_small_ones_inline(
    open_container: Callable[[str], Container],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"".join(_mixed_rows()))
    container = open_container("auto")
    commit = container.ingest.commit_prepared
    seen: list[int] = []

    def watched_commit(prepared: Any, actor: str) -> Any:
        seen.append(len(_readers()))
        return commit(prepared, actor)

    monkeypatch.setattr(container.ingest, "commit_prepared", watched_commit)
    ingest_file(container.ingest, path, actor="test")  # far below READER_PROCESS_MIN_BYTES
    monkeypatch.setattr(bulk, "READER_PROCESS_MIN_BYTES", path.stat().st_size)
    ingest_file(container.ingest, path, actor="test", batch_size=20)

    assert seen[0] == 0
    assert 1 in seen[1:]


def test_a_process_reader_needs_a_service_that_can_build_one(
    open_container: Callable[[str], Container],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"".join(_mixed_rows()))
    container = open_container("no-builder")
    monkeypatch.setattr(container.ingest, "validation_builder", None)

    with pytest.raises(ValueError, match="validation_builder"):
        ingest_file(container.ingest, path, actor="test", reader="process")
    report = ingest_file(container.ingest, path, actor="test")  # auto: inline without one
    assert report.events > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's /proc")
def test_the_report_carries_the_reader_process_own_peak_not_the_parent_pages_at_its_start(
    open_container: Callable[[str], Container], tmp_path: Path
) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"".join(_mixed_rows()))
    container = open_container("peak")
    ballast = b"\x01" * (384 * 2**20)  # touched pages: this process is > 384 MiB resident
    report = ingest_file(container.ingest, path, actor="test", reader="process")
    inline = ingest_file(container.ingest, path, actor="test", reader="inline")
    del ballast

    assert inline.reader_peak_rss_kib is None
    assert report.reader_peak_rss_kib is not None
    # An interpreter with the policies and limits (the scanner is built: a row has traits) is
    # tens of MiB; the parent's ballast is not in it. RUSAGE_CHILDREN counts the ballast (the
    # high-water mark the kernel folds in at exec), which is why the report does not use it.
    assert 8 * 1024 < report.reader_peak_rss_kib < 384 * 1024
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss > 384 * 1024
