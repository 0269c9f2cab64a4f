"""Mutation testing of the decision core: `make mutation` (slow; not part of `make test`).

Runs mutmut (configured in pyproject.toml, ``[tool.mutmut]``: which modules are mutated and which
test files may kill their mutants, with a fixed hypothesis seed), then prints one line per module::

    mutation score privacy/access/policy_engine.py: 97.7 % (killed 120 + equivalent 6 of 129; 3
    survived)

and lists every surviving mutant that is not in the reviewed allow-list of equivalent mutants
(``scripts/mutation_equivalents.toml``), with the line it changes. Equivalent mutants count as
killed; a timeout counts as killed (the mutant hangs the code, which a test run notices).

An allow-list entry names the mutant *and* the mutated line it was reviewed for: mutant numbers
move when the module changes, so an entry whose line no longer matches is reported as stale and
not counted, never silently excusing another mutant.

Exit status 1 when a module listed in ``GOALS`` scores below its goal (default 95 %), so the
slow suite fails on a regression of the tests.

Usage: ``python scripts/mutation.py`` (run, then report) or ``--report-only`` (report the last
run in ``mutants/``). Extra arguments after ``--`` go to ``mutmut run`` (e.g. mutant names).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALLOW_LIST = REPO / "scripts" / "mutation_equivalents.toml"
# The modules whose score is a goal (issue 21); the others are reported too.
GOALS: dict[str, float] = {
    "privacy/access/policy_engine.py": 95.0,
    "privacy/consent/state.py": 95.0,
    "identity/resolution.py": 95.0,
    "privacy/access/purposes.py": 95.0,
    "privacy/dsr/deadlines.py": 95.0,
}
KILLED = {"killed", "timeout", "caught by type check"}


@dataclass(frozen=True)
class Equivalent:
    """A reviewed equivalent mutant: its name, the line it changes to, and why it is harmless."""

    mutant: str
    line: str
    reason: str


def _mutmut(*args: str) -> str:
    """Run ``mutmut`` from the venv of this interpreter, in the repository; return stdout."""
    done = subprocess.run(  # noqa: S603 - fixed argv, our own tool
        [sys.executable, "-m", "mutmut", *args],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


def module_of(mutant: str) -> str:
    """``privacy.access.policy_engine.xǁPolicyEngineǁdecide__mutmut_3`` ->
    ``privacy/access/policy_engine.py``."""
    return mutant.rsplit(".", 1)[0].replace(".", "/") + ".py"


def results() -> dict[str, str]:
    """Every mutant of the last run and its status (``killed``, ``survived``, ``no tests``...)."""
    statuses: dict[str, str] = {}
    for line in _mutmut("results", "--all", "true").splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            statuses[name] = status
    return statuses


def changed_lines(mutant: str) -> list[str]:
    """The lines the mutant writes, from ``mutmut show`` (its diff's ``+`` lines)."""
    diff = _mutmut("show", mutant)
    return [
        line[1:].strip()
        for line in diff.splitlines()
        if line.startswith("+") and not line.startswith("+++")
    ]


def load_allow_list(path: Path = ALLOW_LIST) -> dict[str, Equivalent]:
    """The reviewed equivalent mutants, by mutant name."""
    if not path.exists():
        return {}
    doc = tomllib.loads(path.read_text(encoding="utf-8"))
    entries = [Equivalent(e["mutant"], e["line"], e["reason"]) for e in doc.get("equivalent", [])]
    return {e.mutant: e for e in entries}


@dataclass
class Tally:
    """Mutants by module and status, the survivors with their lines, stale allow-list entries."""

    by_module: dict[str, Counter[str]]
    survivors: dict[str, list[tuple[str, str, list[str]]]]
    stale: list[str]


def tally(statuses: dict[str, str], allow: dict[str, Equivalent]) -> Tally:
    """Count every mutant, reading the diff of each one that was not killed."""
    result = Tally(defaultdict(Counter), defaultdict(list), [])
    for mutant, status in sorted(statuses.items()):
        module = module_of(mutant)
        if status in KILLED:
            result.by_module[module]["killed"] += 1
            continue
        lines = changed_lines(mutant)
        entry = allow.get(mutant)
        if entry is not None and entry.line in lines:
            result.by_module[module]["equivalent"] += 1
            continue
        if entry is not None:
            result.stale.append(mutant)
        result.by_module[module][status] += 1
        result.survivors[module].append((mutant, status, lines))
    return result


def report(statuses: dict[str, str], allow: dict[str, Equivalent]) -> int:
    """Print the per-module scores and the survivors; return the exit status."""
    counted = tally(statuses, allow)
    failed = False
    for module in sorted(counted.by_module):
        counts = counted.by_module[module]
        total = sum(counts.values())
        score = 100.0 * (counts["killed"] + counts["equivalent"]) / total
        others = ", ".join(
            f"{n} {status}"
            for status, n in sorted(counts.items())
            if status not in {"killed", "equivalent"}
        )
        print(
            f"mutation score {module}: {score:.1f} % (killed {counts['killed']} + equivalent "
            f"{counts['equivalent']} of {total}{'; ' + others if others else ''})"
        )
        goal = GOALS.get(module)
        if goal is not None and score < goal:
            failed = True
            print(f"  below the goal of {goal:.0f} %")
    for module, found in sorted(counted.survivors.items()):
        print(f"\nsurvivors in {module} ({len(found)}):")
        for mutant, status, lines in found:
            print(f"  {mutant} [{status}]")
            for line in lines:
                print(f"      + {line}")
    stale = counted.stale + sorted(set(allow) - set(statuses))
    if stale:
        print("\nstale allow-list entries (reviewed line no longer matches, or no such mutant):")
        for mutant in stale:
            print(f"  {mutant}")
    return 1 if failed or stale else 0


def main() -> int:
    """Run mutmut (unless ``--report-only``) and report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--report-only", action="store_true", help="report the last run")
    parser.add_argument("mutmut_args", nargs="*", help="passed to `mutmut run` (after --)")
    args = parser.parse_args()
    if not args.report_only:
        # mutmut's own progress output is long and redrawn in place: keep only its exit status.
        subprocess.run(  # noqa: S603 - fixed argv, our own tool
            [sys.executable, "-m", "mutmut", "run", *args.mutmut_args],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return report(results(), load_allow_list())


if __name__ == "__main__":
    sys.exit(main())
