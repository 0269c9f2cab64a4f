"""Import boundaries (STYLE.md): enforced by a test, not by memory."""

from __future__ import annotations

import ast
from pathlib import Path

from .conftest import REPO


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _offenders(package: str, banned: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    found = []
    for path in _modules(package):
        rel = path.relative_to(REPO).as_posix()
        if any(rel.startswith(prefix) for prefix in allowed):
            continue
        for name in _imports(path):
            if name.split(".")[0] in banned:
                found.append(f"{rel} imports {name}")
    return found


def test_core_never_imports_the_web_framework() -> None:
    web = ("fastapi", "starlette", "uvicorn", "jinja2", "api", "console")
    assert _offenders("identity", web) == []
    assert _offenders("privacy", web) == []


def test_identity_does_not_depend_on_privacy() -> None:
    assert _offenders("identity", ("privacy",)) == []


def test_only_the_neo4j_adapter_imports_neo4j() -> None:
    allowed = ("identity/store/neo4j",)
    for package in ("identity", "privacy", "api", "console"):
        assert _offenders(package, ("neo4j",), allowed) == []


def test_only_the_pkcs11_provider_imports_pkcs11() -> None:
    allowed = ("privacy/keys/pkcs11_provider",)
    for package in ("identity", "privacy", "api"):
        assert _offenders(package, ("pkcs11",), allowed) == []


def test_only_the_presidio_scanner_imports_presidio() -> None:
    allowed = ("privacy/scanning/presidio",)
    for package in ("identity", "privacy", "api"):
        assert (
            _offenders(package, ("presidio_analyzer", "presidio_anonymizer", "spacy"), allowed)
            == []
        )


def test_the_boundary_check_does_see_imports() -> None:
    """Guard against a check that passes because it reads nothing."""
    assert "fastapi" in _imports(REPO / "api" / "app.py")
    assert len(_modules("identity")) >= 8
    assert "privacy.access.operators" in _imports(REPO / "console" / "security.py")


def test_use_cases_never_import_an_entrypoint_or_a_framework() -> None:
    entrypoints = ("fastapi", "starlette", "uvicorn", "typer", "rich", "jinja2", "api", "cli")
    assert _offenders("services", (*entrypoints, "console")) == []
    assert len(_modules("services")) >= 4


def test_core_never_imports_the_use_case_layer() -> None:
    assert _offenders("identity", ("services",)) == []
    assert _offenders("privacy", ("services",)) == []


def test_routers_hold_no_use_case_logic() -> None:
    """Routers parse, call one service and map the result: they never normalize identifiers or
    drive the resolution engine themselves (that is services/)."""
    use_case_internals = {"identity.intake", "identity.resolution", "privacy.consent.recording"}
    found = [
        f"{path.relative_to(REPO).as_posix()} imports {name}"
        for path in _modules("api/routers")
        for name in _imports(path)
        if name in use_case_internals
    ]
    assert found == []


ENTRYPOINTS = ("api", "cli", "console", "stream")
# Every production package, lowest layer first.
PROJECT = ("storage", "identity", "privacy", "services", "bootstrap", *ENTRYPOINTS)
# The app factory mounts the console under /console: the one module of an entrypoint allowed to
# import another (the console's services come from the same bootstrap container).
COMPOSITION = ("api/app.py",)


def test_no_entrypoint_imports_another() -> None:
    """api/, cli/, console/ and stream/ sit side by side on bootstrap/ and services/; none imports
    another, except the app factory that mounts the console."""
    for entrypoint in ENTRYPOINTS:
        others = tuple(e for e in ENTRYPOINTS if e != entrypoint)
        assert _offenders(entrypoint, others, COMPOSITION) == []


def test_the_console_is_mounted_by_the_composition_root_only() -> None:
    importers = [
        path.relative_to(REPO).as_posix()
        for package in ENTRYPOINTS
        for path in _modules(package)
        if package != "console" and any(n.split(".")[0] == "console" for n in _imports(path))
    ]
    assert importers == list(COMPOSITION)


def test_nothing_below_the_entrypoints_imports_them() -> None:
    for package in ("identity", "privacy", "services", "bootstrap"):
        assert _offenders(package, (*ENTRYPOINTS, "fastapi", "starlette", "typer")) == []


def test_the_import_graph_of_the_production_packages_has_no_cycle() -> None:
    """Module-level imports between the project's own modules form no circle."""
    modules = {
        ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): path
        for package in PROJECT
        for path in _modules(package)
    }
    graph = {name: sorted(_imports(path) & modules.keys()) for name, path in modules.items()}
    visiting: set[str] = set()
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(name: str, trail: list[str]) -> None:
        if name in done:
            return
        if name in visiting:
            cycles.append([*trail[trail.index(name) :], name])
            return
        visiting.add(name)
        for target in graph[name]:
            visit(target, [*trail, name])
        visiting.discard(name)
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert cycles == []


def test_runtime_packages_never_import_the_model_training_tools() -> None:
    # tools/pii_model and faker are build-time (``make pii-model``, the bench): dev extras only.
    for package in PROJECT:
        assert _offenders(package, ("tools", "faker")) == []


def test_the_stream_entrypoint_is_a_shell_beside_the_others() -> None:
    """``idgraph consume`` reaches the CLI through an entry point (see cli/main.py), and
    stream/ never imports the web framework."""
    assert _offenders("stream", ("fastapi", "starlette", "uvicorn")) == []
    assert "stream.worker" in _imports(REPO / "stream" / "command.py")


def test_the_storage_plumbing_is_below_the_core() -> None:
    """storage/ (the one SQLite opener) serves identity/ and privacy/ alike, so it knows neither:
    from the project it imports only the error root (and storage/ itself: the ingest journal
    opens its tables with the one opener)."""
    found = [
        f"{path.relative_to(REPO).as_posix()} imports {name}"
        for path in _modules("storage")
        for name in _imports(path)
        if name.split(".")[0] in PROJECT
        and name != "identity.errors"
        and name.split(".")[0] != "storage"
    ]
    assert found == []
    assert "identity.errors" in _imports(REPO / "storage" / "sqlite.py")


def test_the_vault_depends_on_its_key_store_port_not_on_sqlite() -> None:
    vault = _imports(REPO / "privacy" / "keys" / "vault.py")
    assert "sqlite3" not in vault
    assert not any(name.startswith("storage") for name in vault)
    assert "privacy.keys.vault" in _imports(REPO / "privacy" / "keys" / "vault_sqlite.py")
