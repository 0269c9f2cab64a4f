"""`mypy` with no arguments (what `make typecheck` and `make test` run) checks every Python file.

A file outside ``[tool.mypy] files`` is never type-checked, and nothing says so: ``scripts/`` and
half of ``tools/`` sat outside the list for several stops while one of them grew a strict-mode
error. This pins the list to the tree, so a new top-level folder or script is checked or named.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path, PurePosixPath

from .conftest import REPO

# Folders that hold no project source: the virtualenv, tool caches, npm packages, build output,
# mutmut's scratch copy and the local data directory.
_NOT_SOURCE = {"node_modules", "mutants", "build", "dist", "__pycache__"}


def _python_files() -> list[str]:
    found: list[str] = []
    for folder, subfolders, names in os.walk(REPO):
        # Pruned in place so the walk never enters the virtualenv or node_modules.
        subfolders[:] = [
            d
            for d in subfolders
            if not d.startswith(".") and d not in _NOT_SOURCE and not d.endswith(".egg-info")
        ]
        rel = Path(folder).relative_to(REPO)
        found.extend((rel / name).as_posix() for name in names if name.endswith(".py"))
    return sorted(found)


def _mypy_targets() -> list[str]:
    """The folders and files mypy checks: ``files`` as given, ``packages`` as their folders."""
    mypy = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    targets = [str(target) for target in mypy.get("files", [])]
    roots = ["", *(f"{root}/" for root in str(mypy.get("mypy_path", "")).split(":") if root)]
    for package in mypy.get("packages", []):
        folder = str(package).replace(".", "/")
        targets.extend(f"{root}{folder}" for root in roots if (REPO / f"{root}{folder}").is_dir())
    return targets


def _covered(rel: str, targets: list[str]) -> bool:
    path = PurePosixPath(rel)
    return any(path == PurePosixPath(t) or PurePosixPath(t) in path.parents for t in targets)


def test_every_python_file_is_type_checked_when_mypy_runs_without_arguments() -> None:
    targets = _mypy_targets()
    unchecked = [rel for rel in _python_files() if not _covered(rel, targets)]
    assert unchecked == [], f"not under [tool.mypy] files in pyproject.toml: {unchecked}"


def test_the_scope_check_sees_the_stand_alone_scripts() -> None:
    files = _python_files()
    assert "scripts/regroup.py" in files
    assert "tools/kafka-server/kafka_server.py" in files
    assert not _covered("scripts/regroup.py", ["tools", "tests"])
    assert all((REPO / target).exists() for target in _mypy_targets())
