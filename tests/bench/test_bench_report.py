"""Smoke tests of ``bench/report.py`` (``make bench``): the report's shape, not its figures.

The whole tiny run starts every bench script (two servers, three presidio scanners) and takes
about a minute and a half on a busy two-CPU machine, so it is in the slow suite; the failure path
and one section alone run in the default suite in seconds.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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
        "real ingest, 820 identifier values: identifiers/s",
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


def _report_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_report", REPO / "bench" / "report.py")
    assert spec is not None
    assert spec.loader is not None
    bench_report = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = bench_report  # dataclasses look their module up by name
    spec.loader.exec_module(bench_report)
    return bench_report


def _audience_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_audience", REPO / "bench" / "audience.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_link_resolves_from_where_the_report_is_written(tmp_path: Path) -> None:
    bench_report = _report_module()
    for out in (REPO / "bench", REPO / "bench" / "1m", REPO / "docs" / "x"):
        link = bench_report._readme_link(out)
        target = link.split("](", 1)[1].rstrip(")")
        assert (out / target).resolve() == REPO / "bench" / "README.md", (out, link)
    assert "](" not in bench_report._readme_link(tmp_path)  # outside the checkout: no dead link


def _span(seconds: float, **counts: int) -> dict[str, Any]:
    return {"seconds": seconds, "cpu_seconds": seconds * 0.9, **counts}


def test_profile_read_overhead_goal_is_judged_at_16_connections_when_rounds_were_measured() -> None:
    # Stop 33's report judged issue 5's profile-read goal on 200 reads one after another, each
    # waiting for its own audit fsync (3.14x): the disk's fsync latency, not the policy. It is
    # judged on the median round at 16 connections now, the one-connection figure shown beside.
    bench_report = _report_module()
    ratios = {
        "profile_policy_over_raw_concurrent_median": 1.4,
        "profile_policy_over_raw_concurrent_min": 1.38,
        "profile_policy_over_raw_concurrent_max": 1.43,
        "profile_cpu_policy_over_raw_concurrent": 1.46,
        "profile_cpu_policy_over_raw_concurrent_median": 1.46,
        "profile_cpu_policy_over_raw_concurrent_min": 1.44,
        "profile_cpu_policy_over_raw_concurrent_max": 1.5,
        "profile_policy_over_raw_median": 3.14,
        "profile_policy_over_raw_min": 2.9,
        "profile_policy_over_raw_max": 4.6,
    }
    data = {
        "audience": {
            "policy": _span(0.8, members=25_000),
            "raw": _span(0.64, rows=58_000),
            "ratio": 1.25,
        },
        "profile": {
            "policy": _span(9.42, fields=48_000),
            "raw": _span(3.0, fields=48_000),
            "audit_append": _span(0.5, entries=200),
            "ratio": 3.14,
            "cpu_ratio": 2.48,
            "sequential": {"reads": 3_000, "rounds": 3},
            "concurrent": {
                "connections": 16,
                "rounds": 3,
                "ratio": 1.41,
                "policy": _span(14.1, fields=192_000),
                "raw": _span(10.0, fields=192_000),
            },
        },
        "ratios": ratios,
    }
    report = bench_report.Report("1m", bench_report.PRESETS["1m"])
    report.outcomes["audience"] = bench_report.Outcome("audience", [], data=data)

    text = "\n".join(bench_report.audience_section(report))

    (goal,) = [g for g in report.goals if g.goal.startswith("profile-read policy overhead")]
    assert goal.source == "issue 5"
    assert goal.status == "met"
    assert goal.figure.startswith("1.40x at 16 connections (median of 3 rounds; 1.46x CPU)")
    assert "one connection, each read waiting for its own audit fsync: 3.14x (not judged)" in (
        goal.figure
    )
    assert "3,000 profile reads + policy + audit on one connection" in text
    assert "3.14 (median of 3 rounds, 2.90-4.60)" in text


def _cold_data(first: list[float], reopen: list[float], floor: float) -> dict[str, Any]:
    """Audience figures with cold rounds (first-ever and after-reopen seconds per round over
    one floor), summed up as bench/audience.py's _cold_summary does."""
    audience_bench = _audience_module()
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
    bench_report = _report_module()
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
