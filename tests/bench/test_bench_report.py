"""Smoke tests of ``bench/report.py`` (``make bench``): the report's shape, not its figures.

The whole tiny run starts every bench script (two servers, three presidio scanners) and takes
about a minute and a half on a busy two-CPU machine, so it is in the slow suite; the failure path
and one section alone run in the default suite in seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.bench_support import bench_script_module

REPO = Path(__file__).resolve().parents[2]
HEADINGS = (
    "# idgraph benchmark report",
    "## Machine",
    "## Goals",
    "## Ingest (`bench/ingest.py`)",
    "## Member scan (`bench/member_scan.py`)",
    "## Audience and profile reads (`bench/audience.py`)",
    "## Erasure (`bench/erasure.py`)",
    "## Load (`bench/load.py`)",
    "## Vault (`bench/vault.py`)",
    "## PII scanner (`bench/pii_quality.py`)",
    "## Stream ingest (`bench/stream.py`)",
    "## Runs",
)
PLOTS = ("ingest_throughput.png", "erasure_latency.png")
RUNS = {
    "ingest-400",
    "ingest-800",
    "ingest-800-attributes",
    "member_scan",
    "audience",
    "erasure",
    "load",
    "vault",
    "pii_quality",
    "stream",
}


def _report(out: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], str]:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "report.py"), "--out", str(out), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )
    report = out / "REPORT.md"
    assert report.exists(), done.stderr[-3000:]
    return done, report.read_text(encoding="utf-8")


def _assert_shape(out: Path, text: str) -> None:
    for heading in HEADINGS:
        assert heading in text, heading
    for plot in PLOTS:
        assert f"](report/{plot})" in text
        assert (out / "report" / plot).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "| Figure | Value | Same-run baseline | Baseline value | Ratio |" in text


@pytest.mark.slow
def test_tiny_scale_report_has_every_section_goal_and_plot(tmp_path: Path) -> None:
    done, text = _report(tmp_path, "--scale", "tiny", timeout=900)

    assert done.returncode == 0, done.stderr[-3000:]
    _assert_shape(tmp_path, text)
    assert "failed:" not in text
    assert "not run" not in text
    for figure in (
        # The tiny preset runs the bulk modes in 2 alternating rounds: medians with their spread.
        "real ingest, 820 identifier values (median of 2 rounds): identifiers/s",
        "over 2 rounds) |",
        "real ingest (5 traits/person, PII scan): identifiers/s",
        "PII scan cost per string value",
        "`member_page+policy-rule`",
        "audience + policy + audit",
        "800 ids: erase p99",
        "800 ids: batch of",
        "`identify`: requests/s",
        "`decrypt (warm cache)` per value",
        "`scan_many` per value",
        "| STREET_ADDRESS |",
        "consume: identifiers/s",
    ):
        assert figure in text, figure
    for goal in ("issue 3", "issue 4", "issue 5", "issue 6", "issue 8", "issue 17"):
        assert f"| {goal} |" in text
    figures = json.loads((tmp_path / "report" / "figures.json").read_text(encoding="utf-8"))
    assert figures["scale"] == "tiny"
    assert set(figures["runs"]) == RUNS
    assert all(run["ok"] for run in figures["runs"].values())


def test_a_failing_script_gets_a_failed_row_and_the_run_exits_1(tmp_path: Path) -> None:
    # A timeout no script can meet: both fail, the others are not run, the report is written.
    done, text = _report(
        tmp_path,
        "--scale",
        "tiny",
        "--only",
        "member_scan,vault",
        "--timeout",
        "0.01",
        timeout=120,
    )

    assert done.returncode == 1
    _assert_shape(tmp_path, text)
    assert "| `member_scan` | failed: timed out after 0.01 s |" in text
    assert "| `vault` | failed: timed out after 0.01 s |" in text
    assert "**Failed runs:** `member_scan`: timed out after 0.01 s; `vault`:" in text
    assert "| `erasure` | not run (--only) |" in text
    assert "failed: member_scan, vault" in done.stderr


def test_one_section_alone_renders_its_figures(tmp_path: Path) -> None:
    done, text = _report(tmp_path, "--scale", "tiny", "--only", "vault", timeout=120)

    assert done.returncode == 0, done.stderr[-3000:]
    _assert_shape(tmp_path, text)
    for mode in ("encrypt (new keys)", "encrypt (keys exist)", "decrypt (cold cache)"):
        assert f"| `{mode}` per value |" in text
    assert "failed:" not in text


def test_the_readme_link_resolves_from_where_the_report_is_written(tmp_path: Path) -> None:
    bench_report = bench_script_module("report.py")
    for out in (REPO / "bench", REPO / "bench" / "1m", REPO / "docs" / "x"):
        link = bench_report._readme_link(out)
        target = link.split("](", 1)[1].rstrip(")")
        assert (out / target).resolve() == REPO / "bench" / "README.md", (out, link)
    assert "](" not in bench_report._readme_link(tmp_path)  # outside the checkout: no dead link


def _span(seconds: float, **counts: int) -> dict[str, Any]:
    return {"seconds": seconds, "cpu_seconds": seconds * 0.9, **counts}


def _profile_data(
    ratios: dict[str, float], concurrent: dict[str, Any], **beside: dict[str, Any]
) -> dict[str, Any]:
    """The audience bench's JSON as the report reads it: an audience run, and a profile run
    (one connection at ``ratios``' median, 16 connections as ``concurrent``, ``beside`` it other
    concurrent modes)."""
    one_connection = ratios["profile_policy_over_raw_median"]
    return {
        "audience": {
            "policy": _span(0.8, members=25_000),
            "raw": _span(0.64, rows=58_000),
            "ratio": 1.25,
        },
        "profile": {
            "policy": _span(3.0 * one_connection, fields=48_000),
            "raw": _span(3.0, fields=48_000),
            "audit_append": _span(0.5, entries=200),
            "ratio": one_connection,
            "cpu_ratio": 2.4,
            "sequential": {"reads": 3_000, "rounds": 3},
            "concurrent": concurrent,
            **beside,
        },
        "ratios": ratios,
    }


def _profile_ratios(
    wall: tuple[float, float, float], cpu: tuple[float, float, float]
) -> dict[str, float]:
    """Rounds' ratios at 16 connections (median, min, max; wall and CPU), 3.0x on one."""
    return {
        "profile_policy_over_raw_concurrent_median": wall[0],
        "profile_policy_over_raw_concurrent_min": wall[1],
        "profile_policy_over_raw_concurrent_max": wall[2],
        "profile_cpu_policy_over_raw_concurrent": cpu[0],
        "profile_cpu_policy_over_raw_concurrent_median": cpu[0],
        "profile_cpu_policy_over_raw_concurrent_min": cpu[1],
        "profile_cpu_policy_over_raw_concurrent_max": cpu[2],
        "profile_policy_over_raw_median": 3.0,
        "profile_policy_over_raw_min": 2.9,
        "profile_policy_over_raw_max": 3.2,
    }


def _judged(data: dict[str, Any], source: str, goal: str) -> tuple[Any, str]:
    """The report's audience section on ``data``: the one goal row of ``source`` starting with
    ``goal``, and the section's text."""
    bench_report = bench_script_module("report.py")
    report = bench_report.Report("1m", bench_report.PRESETS["1m"])
    report.outcomes["audience"] = bench_report.Outcome("audience", [], data=data)
    text = "\n".join(bench_report.audience_section(report))
    (row,) = [g for g in report.goals if g.source == source and g.goal.startswith(goal)]
    return row, text


def test_profile_read_overhead_goal_is_judged_at_16_connections_when_rounds_were_measured() -> None:
    # Stop 33's report judged issue 5's profile-read goal on 200 reads one after another, each
    # waiting for its own audit fsync (3.14x): the disk's fsync latency, not the policy. It is
    # judged on the median round at 16 connections now, the one-connection figure shown beside.
    ratios = _profile_ratios((1.4, 1.38, 1.43), (1.46, 1.44, 1.5))
    ratios |= {"profile_policy_over_raw_median": 3.14, "profile_policy_over_raw_max": 4.6}
    concurrent = {
        "connections": 16,
        "rounds": 3,
        "ratio": 1.41,
        "policy": _span(14.1, fields=192_000),
        "raw": _span(10.0, fields=192_000),
    }

    goal, text = _judged(
        _profile_data(ratios, concurrent), "issue 5", "profile-read policy overhead"
    )

    # Inside the goal by 0.10, more than the rounds' spread (0.05): met with margin.
    assert goal.status == "met with margin"
    assert goal.figure.startswith(
        "1.40x at 16 connections (median of 3 rounds, spread 1.38-1.43x; 1.46x CPU)"
    )
    assert "one connection, each read waiting for its own audit fsync: 3.14x (not judged)" in (
        goal.figure
    )
    assert "3,000 profile reads + policy + audit on one connection" in text
    assert "3.14 (median of 3 rounds, 2.90-4.60)" in text


def test_the_judged_profile_row_is_the_one_served_as_the_api_serves_the_thread_row_beside() -> None:
    # Since stop 43 "concurrent" is driven as the API serves profile reads (tasks of one event
    # loop, each read on a worker thread of its pool); the thread mode is a row beside it.
    ratios = _profile_ratios((1.3, 1.25, 1.35), (1.32, 1.3, 1.36))
    ratios["profile_cpu_policy_over_raw_concurrent"] = 1.31
    concurrent = {"connections": 16, "rounds": 5, "reads": 20_000}
    data = _profile_data(
        ratios,
        {
            **concurrent,
            "driver": "loop",
            "ratio": 1.3,
            "policy": _span(13.0, fields=320_000),
            "raw": _span(10.0, fields=320_000),
        },
        concurrent_threads={
            **concurrent,
            "driver": "threads",
            "ratio": 1.5,
            "policy": _span(12.0, fields=320_000),
            "raw": _span(8.0, fields=320_000),
        },
    )

    goal, text = _judged(data, "issue 5", "profile-read policy overhead")

    assert "durable audit at 16 connections (as the API serves them)" in text
    assert "the same from 16 threads of their own, no event loop (not judged)" in text
    assert goal.figure.startswith("1.30x at 16 connections (median of 5 rounds")


def test_issue_14_profile_goal_needs_wall_and_cpu_within_it() -> None:
    # Issue 14: "≤ 1.5x ... wall and CPU both shown"; until stop 43 the row was judged on the
    # wall median alone, so a read 1.6x dearer in CPU was reported met.
    concurrent = {
        "connections": 16,
        "rounds": 5,
        "reads": 20_000,
        "driver": "loop",
        "ratio": 1.4,
        "policy": _span(14.0, fields=320_000),
        "raw": _span(10.0, fields=320_000),
    }

    def issue_14_status(cpu_median: float) -> str:
        ratios = _profile_ratios((1.4, 1.38, 1.43), (cpu_median, 1.55, 1.65))
        ratios["profile_cpu_policy_over_raw_concurrent"] = 1.6
        data = _profile_data(ratios, concurrent)
        goal, _ = _judged(data, "issue 14", "profile read with durable audit")
        return str(goal.status)  # the module is loaded by path (Any to mypy)

    assert "NOT met" in issue_14_status(1.6)
    assert "NOT met" not in issue_14_status(1.45)


def test_profile_read_overhead_goal_is_met_without_margin_when_the_spread_exceeds_it() -> None:
    # Stop 35's full bench: one run of rounds spread 1.42-1.67x around a median at the goal's
    # edge; whether the goal holds then is a coin toss, and the report says so.
    bench_report = bench_script_module("report.py")
    ratios = {
        "profile_policy_over_raw_concurrent_median": 1.45,
        "profile_policy_over_raw_concurrent_min": 1.37,
        "profile_policy_over_raw_concurrent_max": 1.84,
        "profile_cpu_policy_over_raw_concurrent_median": 1.5,
    }
    prof = {"ratio": 2.5, "concurrent": {"connections": 16, "rounds": 5}}

    goal = bench_report._profile_overhead_goal(prof, ratios)

    assert goal.status == "met (inside the goal by less than the spread)"
    assert "median of 5 rounds, spread 1.37-1.84x" in goal.figure


def test_load_goals_show_the_median_round_and_its_spread_when_rounds_ran() -> None:
    # One 20k-event bulk phase swung 5.3-9.2 s and decided the single-round /v1/ingest ratio;
    # the report judges the median round and shows the spread beside it.
    bench_report = bench_script_module("report.py")
    phase = {
        "requests": 100,
        "errors": 0,
        "error_statuses": {},
        "throughput": 100.0,
        "items_per_second": 100.0,
        "items_per_request": 1,
        "p50_ms": 10.0,
        "p95_ms": 20.0,
        "p99_ms": 30.0,
        "throughput_ratio_to_hello": 1.0,
    }
    data = {
        "phases": [
            {**phase, "name": "hello"},
            {**phase, "name": "identify_closed", "throughput_ratio_to_hello": 0.9},
            {**phase, "name": "ingest", "items_per_request": 50},
        ],
        "skipped": {},
        "ratios": {
            "rounds": 5.0,
            "identify_closed_throughput_over_hello": 0.55,
            "identify_closed_throughput_over_hello_min": 0.49,
            "identify_closed_throughput_over_hello_max": 0.6,
            "ingest_events_per_second_over_bulk": 0.81,
            "ingest_events_per_second_over_bulk_min": 0.76,
            "ingest_events_per_second_over_bulk_max": 0.9,
        },
        "rounds": [
            {
                "round": 1,
                "order": ["hello", "identify_closed", "ingest", "bulk"],
                "ratios": {"ingest_events_per_second_over_bulk": 0.81},
            }
        ],
    }
    report = bench_report.Report("1m", bench_report.PRESETS["1m"])
    report.outcomes["load"] = bench_report.Outcome("load", [], data=data)

    text = "\n".join(bench_report.load_section(report))

    identify, ingest = report.goals[:2]
    assert identify.figure.startswith("median 0.550x over 5 rounds (0.490-0.600, spread 0.110)")
    # The median, not the pooled phase's 0.9; above the goal by 0.05, less than the 0.11 spread.
    assert identify.status == "met (inside the goal by less than the spread)"
    assert ingest.figure == "median 0.810x over 5 rounds (0.760-0.900, spread 0.140) events/s"
    assert ingest.status == "met (inside the goal by less than the spread)"
    assert "- round 1 (hello, identify_closed, ingest, bulk): " in text
    assert "5 rounds of hello, identify_closed, ingest and bulk" in text


def test_the_async_ingest_ratio_is_reported_as_a_goal_row_beside_the_sync_one() -> None:
    bench_report = bench_script_module("report.py")
    data = {
        "phases": [
            {
                "name": "hello",
                "requests": 10,
                "errors": 0,
                "items_per_second": 100.0,
                "items_per_request": 1,
                "p50_ms": 1.0,
                "p95_ms": 2.0,
                "p99_ms": 3.0,
                "throughput_ratio_to_hello": 1.0,
            }
        ],
        "skipped": {},
        "ratios": {
            "rounds": 3.0,
            "ingest_events_per_second_over_bulk": 0.61,
            "ingest_async_over_bulk": 0.66,
            "ingest_async_over_bulk_min": 0.6,
            "ingest_async_over_bulk_max": 0.7,
        },
    }
    report = bench_report.Report("1m", bench_report.PRESETS["1m"])
    report.outcomes["load"] = bench_report.Outcome("load", [], data=data)

    bench_report.load_section(report)

    sync, queued = (g for g in report.goals if "/v1/ingest" in g.goal)
    assert sync.status == "**NOT met**"
    assert "respond-async" in queued.goal
    assert queued.figure == "median 0.660x over 3 rounds (0.600-0.700, spread 0.100) events/s"
    assert queued.status == "**NOT met**"


def _cold_data(first: list[float], reopen: list[float], floor: float) -> dict[str, Any]:
    """Audience figures with cold rounds (first-ever and after-reopen seconds per round over
    one floor), summed up as bench/audience.py's _cold_summary does."""
    audience_bench = bench_script_module("audience.py")
    rounds = [
        {"floor": _span(floor), "first_ever": _span(f), "reopen": _span(r)}
        for f, r in zip(first, reopen, strict=True)
    ]
    cold = audience_bench._cold_summary(rounds)
    return {
        "audience": {
            "policy": _span(0.8, members=25_000),
            "raw": _span(0.64, rows=58_000),
            "ratio": 1.25,
            "policy_cold": cold["spans"]["first_ever"],
            "policy_cold_reopen": cold["spans"]["reopen"],
            "floor_cold": cold["spans"]["floor"],
            "cold_rounds": rounds,
            "cold_seconds": cold["seconds"],
            "cold_over_floor_cold": cold["ratios"]["audience_cold_over_floor_cold_median"],
            "cold_reopen_over_floor_cold": cold["ratios"][
                "audience_cold_reopen_over_floor_cold_median"
            ],
        },
        "profile": {
            "policy": _span(9.42, fields=48_000),
            "raw": _span(3.0, fields=48_000),
            "audit_append": _span(0.5, entries=200),
            "ratio": 3.14,
            "cpu_ratio": 2.48,
        },
        "ratios": cold["ratios"],
    }


def _cold_goal(data: dict[str, Any]) -> tuple[Any, str]:
    bench_report = bench_script_module("report.py")
    report = bench_report.Report("1m", bench_report.PRESETS["1m"])
    report.outcomes["audience"] = bench_report.Outcome("audience", [], data=data)
    text = "\n".join(bench_report.audience_section(report))
    (goal,) = [g for g in report.goals if g.goal.startswith("cold audience")]
    return goal, text


def test_cold_audience_goal_is_judged_on_the_median_round_and_its_spread_when_rounds_ran() -> None:
    # Stop 35's cold audience was one run per mode, and its ratio flipped the goal between full
    # benches (0.97-1.88 s for the same code). Since stop 36 the goal is judged on the median
    # of the rounds, for the first-ever read and the read after reopen, with the spread shown.
    data = _cold_data([0.9, 0.86, 0.88, 0.95, 0.87], [0.8, 0.82, 0.81, 0.85, 0.79], 0.7)
    goal, text = _cold_goal(data)
    assert goal.status == "met with margin", goal
    assert "median of 5 round(s)" in goal.figure
    assert "1.26x (spread 1.23-1.36x), 880.00 ms (first-ever read)" in goal.figure
    assert "1.16x (spread 1.13-1.21x), 810.00 ms (after reopen)" in goal.figure
    assert "cold after reopen (stores reopened, keys exist, median of 5 rounds)" in text

    # One noisy round (1.4 s, 2.00x) does not decide the goal, the median does; but the goal is
    # then inside by less than the spread, and the status says so.
    goal, _ = _cold_goal(
        _cold_data([0.9, 0.86, 0.88, 1.4, 0.87], [0.8, 0.82, 0.81, 1.3, 0.79], 0.7)
    )
    assert goal.status == "met (inside the goal by less than the spread)", goal
    # The read after reopen over the goal: not met, whatever the first-ever read did.
    goal, _ = _cold_goal(_cold_data([0.9] * 5, [0.8, 1.1, 1.1, 1.1, 0.8], 0.7))
    assert goal.status == "**NOT met**", goal
    # Under the ratio but not under a second (median round): not met.
    goal, _ = _cold_goal(_cold_data([1.2] * 5, [1.1] * 5, 1.0))
    assert goal.status == "**NOT met**", goal


def _ingest_data(
    rounds: int, same_work: tuple[float, float, float], cpu: float = 0.81
) -> dict[str, Any]:
    """bench/ingest.py's JSON at 1M: the median real/same-work ratio and its min and max, and
    the median CPU ratio to the same-work floor."""
    mode = {
        "identifiers_per_second": 10_000.0,
        "peak_rss_mib": 420.0,
        "cpu_seconds": 60.0,
        "bytes_written_per_identifier": 3_500.0,
    }
    median, low, high = same_work
    doc: dict[str, Any] = {
        "identifier_values": 1_025_000,
        "modes": {"floor": mode, "same-work": mode, "real": mode},
        "ratio_real_over_floor": 0.16,
        "cpu_ratio_real_over_floor": 0.15,
        "ratio_real_over_same_work_floor": median,
        "cpu_ratio_real_over_same_work_floor": cpu,
        "load_before": 0.3,
        "load_after": 1.0,
    }
    if rounds > 1:
        doc |= {
            "rounds": rounds,
            "ratio_real_over_floor_min": 0.15,
            "ratio_real_over_floor_max": 0.17,
            "cpu_ratio_real_over_floor_min": 0.14,
            "cpu_ratio_real_over_floor_max": 0.16,
            "ratio_real_over_same_work_floor_min": low,
            "ratio_real_over_same_work_floor_max": high,
            "cpu_ratio_real_over_same_work_floor_min": 0.74,
            "cpu_ratio_real_over_same_work_floor_max": 0.83,
        }
    return doc


def _ingest_report(data: dict[str, Any]) -> tuple[Any, str]:
    bench_report = bench_script_module("report.py")
    report = bench_report.Report("1m", bench_report.PRESETS["1m"])
    report.outcomes["ingest-100000"] = bench_report.Outcome("ingest-100000", [], skipped=True)
    report.outcomes["ingest-1000000"] = bench_report.Outcome("ingest-1000000", [], data=data)
    report.outcomes["ingest-1000000-attributes"] = bench_report.Outcome(
        "ingest-1000000-attributes", [], skipped=True
    )
    return report, "\n".join(bench_report.ingest_section(report))


def test_ingest_goals_show_the_median_round_and_its_spread_when_rounds_ran() -> None:
    # Stop 37's full bench ran each bulk mode once at 1M: real took 87.6 s CPU there and 58 s
    # in two alternating pairs after it. The 1m preset now runs alternating rounds, and the
    # report judges the median round and shows the rounds' min-max beside it.
    bench_report = bench_script_module("report.py")
    runs = {key: args for key, _, args in bench_report.plan(bench_report.PRESETS["1m"])}
    for key in ("ingest-100000", "ingest-1000000"):
        assert runs[key][runs[key].index("--rounds") + 1] == "3"
    report, text = _ingest_report(_ingest_data(3, (0.82, 0.76, 0.9)))

    same_work, floor, rss = report.goals
    assert same_work.source == "issue 14"
    assert same_work.figure == (
        "0.820 (0.760-0.900 over 3 rounds) wall, 0.810 (0.740-0.830 over 3 rounds) CPU, "
        "load 0.3->1.0"
    )
    # Above the goal by 0.02, less than the rounds' spread (0.14).
    assert same_work.status == "met (inside the goal by less than the spread)"
    assert (
        floor.figure == "0.160 (0.150-0.170 over 3 rounds) at 1,025,000 values (median of 3 rounds)"
    )
    assert floor.status == "**NOT met**"
    assert rss.figure == "420.0 MiB (largest of 3 rounds)"
    assert "real ingest, 1,025,000 identifier values (median of 3 rounds): identifiers/s" in text
    assert "| 0.82 (0.76-0.90 over 3 rounds) |" in text
    assert "in 3 alternating rounds (the mode that runs first rotates" in text


def test_the_same_work_goal_is_not_met_when_the_cpu_median_misses_it() -> None:
    # Stop 44's full report: 0.842x wall, 0.770x CPU, judged on the wall alone and read "met".
    # Issue 14 shows wall and CPU for every goal; the profile-read goal is judged on both
    # since stop 43, and so is this one now.
    report, _ = _ingest_report(_ingest_data(3, (0.842, 0.766, 0.848), cpu=0.77))

    same_work = report.goals[0]

    assert same_work.goal.startswith("real ingest ≥ 0.80 x same-work floor")
    assert same_work.status == "**NOT met** in CPU (0.770x)"
    report, _ = _ingest_report(_ingest_data(3, (0.842, 0.766, 0.848), cpu=0.8))
    assert report.goals[0].status == "met (inside the goal by less than the spread)"


def test_ingest_goal_is_judged_on_the_one_run_when_the_json_has_no_rounds() -> None:
    # One round (make bench-ingest's default, and every report before stop 38): no spread.
    report, text = _ingest_report(_ingest_data(1, (0.81, 0.81, 0.81)))

    same_work = report.goals[0]
    assert same_work.figure == "0.810 wall, 0.810 CPU, load 0.3->1.0"
    assert same_work.status == "met"
    assert "(median of" not in text


def _git_in(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def test_the_git_line_counts_no_change_when_only_the_reports_own_outputs_changed(
    tmp_path: Path,
) -> None:
    # The report rewrites bench/REPORT.md (tracked) and bench/report/ before its machine section.
    # `git status --porcelain` lists the first as " M bench/REPORT.md"; stripped, its first path
    # lost a letter ("ench/REPORT.md"), escaped the exclusion and the report said "+ uncommitted
    # changes in 1 file(s)" for a clean tree (stops 38 and 39).
    bench_report = bench_script_module("report.py")
    repo = tmp_path / "repo"
    (repo / "bench" / "report").mkdir(parents=True)
    (repo / "bench" / "REPORT.md").write_text("old\n")
    (repo / "bench" / "report" / "figures.json").write_text("{}\n")
    (repo / "app.py").write_text("x = 1\n")
    _git_in(repo, "init", "-q")
    _git_in(repo, "add", ".")
    _git_in(repo, "commit", "-qm", "initial")

    (repo / "bench" / "REPORT.md").write_text("new\n")
    (repo / "bench" / "report" / "figures.json").write_text('{"a": 1}\n')
    (repo / "bench" / "report" / "new_plot.png").write_bytes(b"png")
    assert bench_report.changed_paths(repo) == []

    (repo / "app.py").write_text("x = 2\n")
    (repo / "notes.txt").write_text("untracked\n")
    _git_in(repo, "mv", "bench/report/figures.json", "bench/figures.json")
    assert sorted(bench_report.changed_paths(repo)) == ["app.py", "bench/figures.json", "notes.txt"]
    assert bench_report.changed_paths(tmp_path / "not-a-checkout-at-all") == []
