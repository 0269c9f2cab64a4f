"""Smoke test of the ingest benchmark: it runs and prints its table (no timing is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.bench_support import run_bench


def test_bench_prints_every_mode_and_the_median_ratios_of_alternating_rounds(
    tmp_path: Path,
) -> None:
    figures = tmp_path / "bench.json"
    done = run_bench(
        "ingest.py",
        "--identifiers",
        "400",
        "--rounds",
        "3",
        "--tmp-dir",
        str(tmp_path),
        "--json",
        str(figures),
        timeout=120,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    # Table rows: mode, identifiers, seconds, identifiers/s, peak RSS MiB.
    rows = {
        cells[0]: cells
        for cells in (line.split() for line in done.stdout.splitlines())
        if len(cells) == 5 and cells[0] in {"floor", "same-work", "real"}
    }
    assert "mode" in done.stdout.split()
    assert rows.keys() == {"floor", "same-work", "real"}
    # Every mode processed the same identifier values.
    assert rows["floor"][1] == rows["same-work"][1] == rows["real"][1]
    assert "ratio real/floor throughput:" in done.stdout
    assert "ratio real/same-work floor throughput:" in done.stdout
    assert "rejected rows=0" in done.stdout
    # The generated data forces merges and refusals, and the graph ends as the generator predicts.
    assert "merged=4" in done.stdout
    assert "store after real run: persons=100, identifiers=400, links=300, refusals=1" in (
        done.stdout
    )
    assert "EXPECTED" not in done.stdout
    doc = json.loads(figures.read_text(encoding="utf-8"))
    assert {"ratio_real_over_floor", "ratio_real_over_same_work_floor"} <= doc.keys()
    assert {"load_before", "load_after", "cpu_ratio_real_over_same_work_floor"} <= doc.keys()
    for mode in doc["modes"].values():  # wall and CPU seconds, bytes written, load, per mode
        assert {"seconds", "cpu_seconds", "bytes_written", "load_before", "load_after"} <= (
            mode.keys()
        )
        assert mode["cpu_seconds"] > 0
    # The same-work floor wrote the real schema: every identifier, each person's star of links
    # (it merges the one conflict event the real path refuses), the kept raw values as facts.
    assert doc["same_work_store"]["identifiers"] == 400
    assert doc["same_work_store"]["facts"] == 200  # email and phone of 100 persons
    # Every row's message id recorded, as the bulk path records it.
    assert doc["same_work_store"]["seen_messages"] == doc["events"]
    # Three alternating rounds: each mode runs first once, on a fresh store every time (the
    # store counts above are the last round's; its real run found none of round 2's rows).
    assert doc["rounds"] == 3
    rounds = doc["round_figures"]
    assert [r["order"] for r in rounds] == [
        ["floor", "same-work", "real"],
        ["same-work", "real", "floor"],
        ["real", "floor", "same-work"],
    ]
    assert [
        line.split(":")[0] for line in done.stdout.splitlines() if line.startswith("round ")
    ] == [
        "round 1",
        "round 2",
        "round 3",
    ]
    for key in (
        "ratio_real_over_floor",
        "cpu_ratio_real_over_floor",
        "ratio_real_over_same_work_floor",
        "cpu_ratio_real_over_same_work_floor",
    ):
        each = sorted(r["ratios"][key] for r in rounds)
        # The figure of record is the median round, its spread the rounds' min and max.
        assert doc[key] == doc[f"{key}_median"] == each[1]
        assert (doc[f"{key}_min"], doc[f"{key}_max"]) == (each[0], each[2])
    for name, mode in doc["modes"].items():  # each mode's seconds: the median of its rounds
        assert mode["seconds"] == sorted(r["modes"][name]["seconds"] for r in rounds)[1]
    for r in rounds:  # every run started on a settled disk (settle_disk, untimed)
        for mode in r["modes"].values():
            assert set(mode["settled"]) == {
                "seconds",
                "unwritten_kib_before",
                "unwritten_kib_after",
            }
            # The whole process's CPU split into user and system, and its context switches.
            assert mode["process"]["user_seconds"] > 0
            assert mode["process"]["voluntary_switches"] >= 0
    assert "ratio real/same-work floor throughput: median " in done.stdout
    assert "over 3 rounds)" in done.stdout


def test_bench_with_attributes_runs_three_modes_and_prints_the_scan_cost(tmp_path: Path) -> None:
    figures = tmp_path / "bench.json"
    done = run_bench(
        "ingest.py",
        "--identifiers",
        "400",
        "--attributes",
        "5",
        "--tmp-dir",
        str(tmp_path),
        "--json",
        str(figures),
        timeout=300,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    # Table rows: mode, identifiers, attr values, seconds, identifiers/s, attr values/s, RSS.
    modes = {"floor", "same-work", "real-noscan", "real"}
    rows = {
        cells[0]: cells
        for cells in (line.split() for line in done.stdout.splitlines())
        if len(cells) == 7 and cells[0] in modes
    }
    assert rows.keys() == modes
    # Every mode processed the same identifier and attribute values: 100 persons x 5 traits.
    assert {(cells[1], cells[2]) for cells in rows.values()} == {("410", "500")}
    assert "ratio real-noscan/floor throughput:" in done.stdout
    assert "ratio real/floor throughput:" in done.stdout
    assert "scan cost per value: (t_real - t_noscan) / string values =" in done.stdout
    assert "scan cost per distinct value:" in done.stdout
    # Clean values (and one redacted phone number): every trait is stored, none quarantined.
    assert "real-noscan facts: stored=500, quarantined=0" in done.stdout
    assert "real facts: stored=500, quarantined=0" in done.stdout
    assert done.stdout.count("rejected rows=0") == 2
    assert "EXPECTED" not in done.stdout
    doc = json.loads(figures.read_text(encoding="utf-8"))
    assert doc["modes"].keys() == modes
    assert {"string_values", "distinct_string_values"} <= doc["scan_cost"].keys()
