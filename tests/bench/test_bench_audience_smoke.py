"""Smoke test of the audience/profile policy-overhead bench at a tiny size (no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.bench_support import run_bench


def _usage_recorded(spans: dict[str, dict[str, Any]]) -> bool:
    """Every cold span of a round has its user/system CPU seconds and page faults, none
    negative, and the first-ever read used some CPU."""
    usage = ("user_seconds", "system_seconds", "minor_faults", "major_faults")
    first = spans["first_ever"]
    return (
        all(min(span[key] for key in usage) >= 0 for span in spans.values())
        and first["user_seconds"] + first["system_seconds"] > 0
    )


def test_audience_bench_prints_every_mode_and_ratio_when_run_at_tiny_scale(
    tmp_path: Path,
) -> None:
    figures = tmp_path / "bench.json"
    done = run_bench(
        "audience.py",
        "--persons",
        "600",
        "--profiles",
        "5",
        "--concurrent-reads",
        "40",
        "--sequential-reads",
        "10",
        "--rounds",
        "3",
        "--prior-refs",
        "300",
        "--json",
        str(figures),
        timeout=180,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    for mode in ("audience+policy", "audience-raw", "profile+policy", "profile-raw"):
        assert mode in done.stdout
    assert "verify ok=True" in done.stdout
    data = json.loads(figures.read_text())
    # The policy keeps a subset of the raw scan (consent filters), never more.
    assert data["audience"]["policy"]["members"] <= data["audience"]["raw"]["rows"]
    # One connection: 3 rounds of 10 reads per mode, 16 fields each (4 location/behav. attrs +
    # 12 events); the baseline does the same work without policy: the same 16 fields, not 18.
    assert data["profile"]["policy"]["fields"] == 3 * 10 * 16
    assert data["profile"]["raw"]["fields"] == 3 * 10 * 16
    sequential = data["profile"]["sequential"]
    assert sequential["reads"] == 3 * 10
    assert len(sequential["round_ratios"]) == len(sequential["round_cpu_ratios"]) == 3
    # The concurrent modes: every round of both modes counted, the same fields each.
    concurrent = data["profile"]["concurrent"]
    assert concurrent["reads"] == 3 * 40
    assert concurrent["policy"]["fields"] == concurrent["raw"]["fields"] == 3 * 40 * 16
    assert len(concurrent["round_ratios"]) == len(concurrent["round_cpu_ratios"]) == 3
    assert concurrent["reads_per_audit_commit"] >= 1
    ratios = data["ratios"]
    assert ratios["profile_policy_over_raw_concurrent"] == round(concurrent["ratio"], 4)
    # The median round and the spread of the rounds, wall and CPU, at 16 connections and on one.
    for kind, rounds in (("", "round_ratios"), ("cpu_", "round_cpu_ratios")):
        for suffix, modes in (("_concurrent", concurrent), ("", sequential)):
            each = sorted(modes[rounds])
            prefix = f"profile_{kind}policy_over_raw{suffix}"
            assert ratios[f"{prefix}_median"] == round(each[1], 4)
            assert ratios[f"{prefix}_min"] == round(each[0], 4)
            assert ratios[f"{prefix}_max"] == round(each[2], 4)
    assert "median" in done.stdout
    # Cold twice: the first-ever read makes every member's audit reference key; the first query
    # after the stores are reopened finds them (makes none) and returns the same members.
    audience = data["audience"]
    assert audience["policy_cold"]["audit_ref_keys_made"] == audience["policy"]["members"] > 0
    reopen = audience["policy_cold_reopen"]
    assert reopen["members"] == audience["policy"]["members"]
    assert reopen["audit_ref_keys_made"] == 0
    assert data["ratios"]["audience_cold_reopen_over_floor_cold"] > 0
    # Cold in rounds (default 5): each a first-ever read on a fresh copy of the build's key file
    # (every member's reference made again), a read after reopen (none made) and the floor; the
    # median round and the spread of each ratio, wall and CPU, in ``ratios``.
    rounds = audience["cold_rounds"]
    assert len(rounds) == 5
    for spans in rounds:
        assert spans["first_ever"]["audit_ref_keys_made"] == spans["first_ever"]["members"] > 0
        assert spans["reopen"]["audit_ref_keys_made"] == 0
        assert spans["reopen"]["members"] == spans["first_ever"]["members"]
        assert spans["floor"]["persons"] > 0
        # Where each cold span's CPU went (stop 37): user and system seconds, page faults.
        assert _usage_recorded(spans)
    for name in ("cold", "cold_reopen", "cpu_cold", "cpu_cold_reopen"):
        key = f"audience_{name}_over_floor_cold"
        low, median, high = (ratios[f"{key}_{end}"] for end in ("min", "median", "max"))
        assert 0 < low <= median <= high
        assert ratios[key] == median
    wall = sorted(s["reopen"]["seconds"] / s["floor"]["seconds"] for s in rounds)
    assert ratios["audience_cold_reopen_over_floor_cold_median"] == round(wall[2], 4)
    assert "median of 5 round(s)" in done.stdout
    # Each round's first-ever read started from a key file already holding 300 references of
    # other persons (a server's key file holds one per person it ever read): it still made
    # exactly its members' references, and left the others as they were.
    assert audience["prior_refs"] == 300
    assert "300 prior references stored in the runs' key file" in done.stdout
    # Raw is the policy run's scan, consent filter included (before stop 32 it loaded every
    # selected person's consent records: nothing was filtered).
    assert 0 < audience["raw"]["consent_filtered"] < audience["raw"]["rows"]
    assert "audience+policy cold after reopen" in done.stdout


def test_audience_bench_cold_run_makes_the_audit_reference_keys_when_the_graph_is_reused(
    tmp_path: Path,
) -> None:
    # With --db (bench/report.py --keep-graphs) the graph and its key file are kept; a later
    # run's cold audience must still make its members' keys, as a fresh graph's does.
    made = []
    for run in ("first", "reused"):
        figures = tmp_path / f"{run}.json"
        done = run_bench(
            "audience.py",
            "--persons",
            "600",
            "--profiles",
            "5",
            "--concurrent-reads",
            "10",
            "--sequential-reads",
            "5",
            "--rounds",
            "1",
            "--db",
            str(tmp_path / "graph.sqlite3"),
            "--json",
            str(figures),
            timeout=180,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        # After a build the reads are timed in a fresh process that reuses the graph.
        assert ("building" in done.stdout) == (run == "first")
        assert ("timing the reads in a fresh process" in done.stdout) == (run == "first")
        assert "reusing" in done.stdout
        cold = json.loads(figures.read_text())["audience"]["policy_cold"]
        made.append(cold["audit_ref_keys_made"])
        assert made[-1] == cold["members"] > 0
    assert made[0] == made[1]


def test_audience_bench_refuses_a_db_built_for_other_sizes_and_keeps_it(tmp_path: Path) -> None:
    # Until stop 34 a --db built with other --persons/--profiles/--seed was deleted and rebuilt
    # without a word (minutes at 1M); a file the bench did not finish building went the same way.
    db = tmp_path / "graph.sqlite3"
    db.write_bytes(b"not a graph this bench built")
    refused = run_bench("audience.py", "--persons", "600", "--db", str(db), timeout=60)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "did not finish building it" in refused.stderr
    assert db.read_bytes() == b"not a graph this bench built"

    marker = tmp_path / "graph.sqlite3.built"
    marker.write_text("600:5:5")
    for asked, named in (
        (("--persons", "600", "--profiles", "6"), "--profiles 6"),
        (("--persons", "700", "--profiles", "5"), "--persons 700"),
        (("--persons", "600", "--profiles", "5", "--seed", "6"), "--seed 6"),
    ):
        refused = run_bench("audience.py", *asked, "--db", str(db), timeout=60)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "was built with --persons 600 --profiles 5 --seed 5" in refused.stderr
        assert "this run asks for" in refused.stderr
        assert named in refused.stderr
        assert db.read_bytes() == b"not a graph this bench built"
        assert marker.read_text() == "600:5:5"


def test_audience_bench_times_only_the_profile_modes_when_profile_only(tmp_path: Path) -> None:
    figures = tmp_path / "bench.json"
    done = run_bench(
        "audience.py",
        "--persons",
        "300",
        "--profiles",
        "4",
        "--concurrent-reads",
        "32",
        "--sequential-reads",
        "4",
        "--rounds",
        "2",
        "--profile-only",
        "--json",
        str(figures),
        timeout=180,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "audience+policy" not in done.stdout
    assert "audience-raw" not in done.stdout
    assert "verify ok=True" in done.stdout
    data = json.loads(figures.read_text())
    assert "audience" not in data
    concurrent = data["profile"]["concurrent"]
    assert concurrent["policy"]["fields"] == concurrent["raw"]["fields"] == 2 * 32 * 16
    # The judged concurrent figure is driven as the API serves profile reads (tasks of one event
    # loop, each read on a worker thread of its pool, since stop 43); the thread mode of stops
    # 34-42 runs too, the same reads, with its own ratios (median and spread of its rounds).
    assert concurrent["driver"] == "loop"
    assert f"x{concurrent['connections']} loop" in done.stdout
    threads = data["profile"]["concurrent_threads"]
    assert threads["driver"] == "threads"
    assert threads["policy"]["fields"] == threads["raw"]["fields"] == 2 * 32 * 16
    ratios = data["ratios"]
    assert ratios["profile_policy_over_raw_threads"] == round(threads["ratio"], 4)
    for kind, rounds in (("", "round_ratios"), ("cpu_", "round_cpu_ratios")):
        for suffix, modes in (("_concurrent", concurrent), ("_threads", threads)):
            assert ratios[f"profile_{kind}policy_over_raw{suffix}_min"] == round(
                min(modes[rounds]), 4
            )
            assert ratios[f"profile_{kind}policy_over_raw{suffix}_max"] == round(
                max(modes[rounds]), 4
            )
    # Only the profile ratios, the goal's among them.
    assert "profile_policy_over_raw_concurrent_median" in data["ratios"]
    assert not any(key.startswith("audience") for key in data["ratios"])
    # The collector's work per mode: collections per generation and their CPU per read.
    for mode in ("policy", "raw"):
        tally = concurrent["gc"][mode]
        assert len(tally["collections"]) == len(tally["cpu_seconds"]) == 3
        assert min(tally["collections"]) >= 0
        assert tally["us_per_read"] >= 0
    assert "garbage collections (policy)" in done.stdout
