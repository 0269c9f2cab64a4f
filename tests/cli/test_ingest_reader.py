"""``idgraph ingest --reader``: the same summary whether a file is read in a process of its own or
inline; a bad choice is refused; and a killed ``idgraph ingest`` leaves no reader behind."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import POLICY_DIR
from tests.support.crash_harness import (
    SAFETY_TIMEOUT,
    bulk_readers,
    prepare_data_dir,
    running,
    start_cli,
)
from tests.support.waits import wait_until

runner = CliRunner()


def _rows(path: Path, count: int) -> Path:
    lines = [
        json.dumps(
            {
                "identifiers": [
                    {"type": "email", "value": f"reader.{i}@gmail.com"},
                    {"type": "cookie_id", "value": f"reader-cookie-{i // 2}"},
                ],
                "source": "crm",
                "timestamp": "2026-11-30T10:00:00Z",
            }
        )
        for i in range(count)
    ]
    lines[3] = '{"identifiers": [{"type": "email", "value": "not an address"}], "source": "crm"}'
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str) -> object:
    monkeypatch.setenv("IDGRAPH_DATA_DIR", str(tmp_path / reader))
    monkeypatch.setenv("IDGRAPH_POLICY_DIR", str(POLICY_DIR))
    monkeypatch.setenv("IDGRAPH_ENV", "development")
    path = _rows(tmp_path / "rows.jsonl", 50)
    result = runner.invoke(app, ["ingest", str(path), "--reader", reader, "--json"])
    assert result.exit_code == 1, result.output  # one row is rejected
    # The summary is the indented JSON document; a first run's key warnings may come before it
    # (the runner mixes standard error in, as text or as JSON lines, by the log settings).
    lines = result.stdout.splitlines()
    return json.loads("\n".join(lines[lines.index("{") :]))


def test_a_file_read_in_a_process_or_inline_gives_the_same_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apart = _summary(tmp_path, monkeypatch, "process")
    inline = _summary(tmp_path, monkeypatch, "inline")

    assert apart == inline
    assert isinstance(apart, dict)
    assert apart["rejected_rows"] == 1
    assert apart["persons_merged"] == 0
    assert apart["new_identifiers"] == 49 + 25


def test_an_unknown_reader_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDGRAPH_DATA_DIR", str(tmp_path / "data"))
    path = _rows(tmp_path / "rows.jsonl", 5)
    result = runner.invoke(app, ["ingest", str(path), "--reader", "threads"])
    assert result.exit_code == 2
    assert "--reader must be auto, process or inline" in result.output


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="child processes read from /proc")
def test_a_killed_ingest_leaves_no_reader_process_behind(tmp_path: Path) -> None:
    data = tmp_path / "data"
    prepare_data_dir(data)
    path = _rows(tmp_path / "rows.jsonl", 200_000)  # far more than the pipe holds
    process = start_cli(
        data,
        tmp_path / "ingest.log",
        "ingest",
        str(path),
        "--reader",
        "process",
        "--batch-size",
        "500",
    )
    try:
        found: list[int] = []

        def reader_started() -> bool:
            found[:] = bulk_readers(process.pid)
            return bool(found) or process.poll() is not None

        wait_until(reader_started, "the reader process", timeout_s=SAFETY_TIMEOUT)
        assert found, (tmp_path / "ingest.log").read_text()[-2000:]
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        (reader,) = found
        # Its next send finds the pipe closed: it stops instead of reading the rest of the file.
        wait_until(lambda: not running(reader), "the orphaned reader's exit", timeout_s=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
