"""The decision core's mutation score (slow: `make test-slow`; the same run as `make mutation`).

Runs mutmut over the modules and tests of ``[tool.mutmut]`` in pyproject.toml through
``scripts/mutation.py``, which exits non-zero when the policy engine, the consent state,
identity resolution, the purposes policy or the DSR deadlines score below 95 % (reviewed
equivalent mutants counted as killed) or when an allow-list entry has gone stale.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_the_decision_core_kills_at_least_95_percent_of_its_mutants() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/mutation.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3 * 3600,
        check=False,
    )
    scores = dict(re.findall(r"mutation score (\S+): ([\d.]+) %", done.stdout))
    assert set(scores) >= {
        "privacy/access/policy_engine.py",
        "privacy/consent/state.py",
        "identity/resolution.py",
        "privacy/access/purposes.py",
        "privacy/dsr/deadlines.py",
    }, done.stdout + done.stderr
    assert done.returncode == 0, done.stdout
