"""A mode of ``bench/ingest.py`` run on its own prints exactly one parseable JSON line on stdout.

On a first run (a fresh work directory) the real mode's container generates development keys
and logs ``kek_generated``; with structlog unconfigured that warning went to stdout ahead of the
data line, so a caller reading the first line got a log line instead (stop 39's note).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _mode(mode: str, work: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "ingest.py"),
            "--mode",
            mode,
            "--work-dir",
            str(work),
            "--identifiers",
            "200",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
    )


def test_generate_and_real_print_only_their_json_line_on_stdout_on_a_first_run(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    generated = _mode("generate", work)
    assert generated.returncode == 0, generated.stderr[-2000:]
    (line,) = generated.stdout.splitlines()
    assert json.loads(line)["identifiers"] == 200

    real = _mode("real", work)  # first run: the real mode makes its development KEK
    assert real.returncode == 0, real.stderr[-2000:]
    (line,) = real.stdout.splitlines()
    assert json.loads(line)["mode"] == "real"
    assert "kek_generated" in real.stderr  # still said, on stderr
