"""The ingest bench starts every mode on an empty store and a settled disk (stop 39): a mode
must not pay, in its fsyncs, for the pages its predecessor left to write back."""

from __future__ import annotations

from pathlib import Path

from bench import ingest


def test_settle_disk_deletes_every_modes_store_and_keeps_the_data_when_modes_ran_before(
    tmp_path: Path,
) -> None:
    modes = ("floor", "same-work", "real")
    for mode in modes:
        store = tmp_path / mode
        store.mkdir()
        (store / "db.sqlite3").write_bytes(b"\0" * 65_536)
    data = tmp_path / ingest.DATA_FILE
    data.write_text("{}\n", encoding="utf-8")

    settled = ingest.settle_disk(tmp_path, modes)

    assert not any((tmp_path / mode).exists() for mode in modes)
    assert data.read_text(encoding="utf-8") == "{}\n"  # the data set stays for the next modes
    assert set(settled) == {"seconds", "unwritten_kib_before", "unwritten_kib_after"}
    assert settled["seconds"] >= 0
    assert settled["unwritten_kib_before"] >= 0
    assert settled["unwritten_kib_after"] >= 0


def test_settle_disk_is_harmless_when_no_mode_ran_yet(tmp_path: Path) -> None:
    settled = ingest.settle_disk(tmp_path, ("floor", "real"))

    assert settled["seconds"] >= 0
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_unwritten_kib_reads_dirty_and_writeback_from_meminfo() -> None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():  # pragma: no cover - every Linux has it
        assert ingest._unwritten_kib() == 0
        return
    fields = {
        name: int(rest.split()[0])
        for name, _, rest in (line.partition(":") for line in meminfo.read_text().splitlines())
        if name in ("Dirty", "Writeback")
    }
    # Both move between the two reads; the figure is their sum, bounded by the machine's memory.
    total_kib = int(
        next(
            line for line in meminfo.read_text().splitlines() if line.startswith("MemTotal:")
        ).split()[1]
    )
    assert set(fields) == {"Dirty", "Writeback"}
    assert 0 <= ingest._unwritten_kib() <= total_kib


def test_process_figures_split_a_childs_cpu_into_user_and_system_and_count_its_switches() -> None:
    import resource
    import subprocess
    import sys

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # A child that computes (user CPU), then blocks once (a sleep always gives the core up: a
    # voluntary switch; no outcome depends on how long it takes).
    subprocess.run(
        [sys.executable, "-c", "import time; sum(range(5_000_000)); time.sleep(0.001)"],
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)

    figures = ingest.process_figures(before, after)

    assert set(figures) == {
        "user_seconds",
        "system_seconds",
        "voluntary_switches",
        "involuntary_switches",
    }
    assert figures["user_seconds"] > 0
    assert figures["system_seconds"] >= 0
    assert figures["voluntary_switches"] >= 1
    assert figures["involuntary_switches"] >= 0
