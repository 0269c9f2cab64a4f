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


def test_the_readme_link_resolves_from_where_the_report_is_written(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_report", REPO / "bench" / "report.py")
    assert spec is not None
    assert spec.loader is not None
    bench_report = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = bench_report  # dataclasses look their module up by name
    spec.loader.exec_module(bench_report)
    for out in (REPO / "bench", REPO / "bench" / "1m", REPO / "docs" / "x"):
        link = bench_report._readme_link(out)
        target = link.split("](", 1)[1].rstrip(")")
        assert (out / target).resolve() == REPO / "bench" / "README.md", (out, link)
    assert "](" not in bench_report._readme_link(tmp_path)  # outside the checkout: no dead link
