"""Running a bench/ script as a subprocess, for the benchmarks' smoke tests, or importing one."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def run_bench(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``bench/<script>`` with ``args`` from the repository root; never raises on failure
    (the caller asserts on the return code and shows stdout and stderr).

    The script runs with ``TMPDIR`` pointing at a directory of its own, which must be empty
    when it ends: a bench leaves nothing in the temporary directory (stop 33 found dozens of
    ``idgraph-aud-*`` and ``idgraph-bench-stream-*`` directories in /tmp). The test fails,
    naming what was left, if it does."""
    with tempfile.TemporaryDirectory(prefix="idgraph-test-bench-tmp-") as scratch:
        done = subprocess.run(
            [sys.executable, str(REPO / "bench" / script), *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=timeout,
            check=False,
            env={**os.environ, "TMPDIR": scratch},
        )
        left = sorted(path.name for path in Path(scratch).iterdir())
    assert not left, f"bench/{script} left {left} in its temporary directory\n{done.stdout}"
    return done


def bench_script_module(script: str) -> Any:
    """``bench/<script>`` imported by its path, as module ``bench_<name>`` (registered in
    ``sys.modules``: dataclasses look their module up by name)."""
    name = f"bench_{Path(script).stem}"
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
