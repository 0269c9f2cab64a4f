"""Regroup ``privacy/`` by capability and mirror ``tests/`` by package, rewriting every reference.

Usage (from the repository root, on a clean or dirty tree; it is safe to run again)::

    python scripts/regroup.py            # move files (git mv) and rewrite references
    python scripts/regroup.py --dry-run  # only print what it would move and rewrite
    python scripts/regroup.py --check    # exit 1 if anything is still to move or rewrite

It prints every move and every file it rewrote, then a verification: any reference left to an
old module or path (in any tracked or untracked, non-ignored text file) is listed and the exit
status is 1, as it is for a test file no rule places, a move whose target exists, or a moved
file whose ``__file__`` arithmetic it cannot adjust. Exit 0 means: nothing left to do.

Idempotent: a second run on its own result moves nothing and rewrites nothing. Meant to be run
again on a tree where other branches have since added files: new modules that import the old
names are rewritten, new ``tests/test_*.py`` files are placed by the rules below (or listed).
After running it: ``ruff check --fix . && ruff format .`` (import blocks re-sort), then
``make test``.

What moves (the design is shown in docs/ARCHITECTURE.md):

* ``privacy/`` modules into capability packages (:data:`MODULE_MOVES`): ``keys/`` (key files,
  KEK providers, vault and its key store), ``consent/`` (unchanged), ``access/`` (policy engine,
  purposes, purpose-bound reads, audiences, cursors, pseudonyms, API keys, operator accounts),
  ``dsr/`` (+ erasure and retention), ``scanning/`` (+ fact intake and log redaction),
  ``auditing/`` (the audit log and its signed heads) and ``transport/`` (Standard Webhooks
  signatures and replay guard, SSRF-safe outbound HTTP).
* test helpers out of the top of ``tests/`` into ``tests/support/`` (:data:`SUPPORT_MOVES`).
* ``tests/test_*.py`` into folders that mirror the packages: an explicit table
  (:data:`TEST_TABLE`), then, for files the table does not know, :func:`place_by_rule`: a name
  rule (``*_api`` → ``tests/api``, ``*bench*`` → ``tests/bench``, ...) and then the first-party
  modules the file imports (the capability it imports most). Files no rule places stay at the
  top of ``tests/`` and are listed (exit 1), to be added to the table.

What is rewritten, in every text file (Python, TOML, Markdown, Makefile, shell, YAML, ...):

* dotted names: ``privacy.audit`` → ``privacy.auditing.log`` wherever it is a whole name, so
  ``from privacy.audit import``, ``import privacy.audit``, ``"privacy.audit.SqliteAuditLog.x"``
  (monkeypatch targets, mutmut names) all follow; ``from privacy import vault`` too;
* paths: ``privacy/audit.py`` and the stem ``privacy/audit`` (ruff per-file-ignores, the
  architecture test's prefixes, docs), ``tests/test_x.py`` (Makefile, .ci, pyproject's mutmut
  test selection, docs);
* inside ``tests/``: relative imports (``from .conftest import``, ``from .test_gpp import``) of a
  moved file, or of a moved target, become absolute (``from tests.conftest import``), so they
  resolve from the new folder; ``Path(__file__).resolve().parent`` / ``.parents[N]`` in a moved
  file are shifted by the change of depth. Each new folder gets an ``__init__.py`` (tests is a
  package: rootdir-relative module names, so equal basenames in two folders do not clash; the
  fixtures of ``tests/conftest.py`` stay visible below it).
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SELF = Path(__file__).resolve().relative_to(REPO).as_posix()

# -- what moves ------------------------------------------------------------------------------

MODULE_MOVES: dict[str, str] = {
    # keys and vault
    "privacy/secretfile.py": "privacy/keys/secretfile.py",
    "privacy/keyfile.py": "privacy/keys/keyfile.py",
    "privacy/hash_keys.py": "privacy/keys/hash_keys.py",
    "privacy/keyprovider.py": "privacy/keys/keyprovider.py",
    "privacy/pkcs11_provider.py": "privacy/keys/pkcs11_provider.py",
    "privacy/vault.py": "privacy/keys/vault.py",
    "privacy/vault_sqlite.py": "privacy/keys/vault_sqlite.py",
    # reads and the policy that governs them, and who may call
    "privacy/policy_engine.py": "privacy/access/policy_engine.py",
    "privacy/purposes.py": "privacy/access/purposes.py",
    "privacy/reads.py": "privacy/access/reads.py",
    "privacy/audiences.py": "privacy/access/audiences.py",
    "privacy/cursors.py": "privacy/access/cursors.py",
    "privacy/pseudonyms.py": "privacy/access/pseudonyms.py",
    "privacy/api_keys.py": "privacy/access/api_keys.py",
    "privacy/operators.py": "privacy/access/operators.py",
    # data-subject rights: DSR, erasure, retention
    "privacy/erasure.py": "privacy/dsr/erasure.py",
    "privacy/retention.py": "privacy/dsr/retention.py",
    # scanning
    "privacy/facts.py": "privacy/scanning/facts.py",
    "privacy/redaction.py": "privacy/scanning/redaction.py",
    # audit
    "privacy/audit.py": "privacy/auditing/log.py",
    "privacy/audit_heads.py": "privacy/auditing/heads.py",
    # signed webhooks in and out, outbound HTTP
    "privacy/webhooks.py": "privacy/transport/webhooks.py",
    "privacy/outbound.py": "privacy/transport/outbound.py",
}

NEW_PACKAGES: dict[str, str] = {
    "privacy/keys": "Keys and the vault: hash-key and KEK files, key providers (local file, "
    "PKCS#11), envelope encryption with crypto-shredding and its key-store port.",
    "privacy/access": "Purpose-bound access: the policy engine, purposes, profile/audience/"
    "feature reads, audiences, paging cursors, pseudonyms, API keys and operator accounts.",
    "privacy/auditing": "The audit log (append-only, hash-chained) and its signed heads.",
    "privacy/transport": "Signed webhooks in and out (Standard Webhooks, replay guard) and "
    "outbound HTTP that cannot be turned against the service's own network.",
}

SUPPORT_MOVES: dict[str, str] = {
    "tests/crash_harness.py": "tests/support/crash_harness.py",
    "tests/bench_support.py": "tests/support/bench_support.py",
    "tests/response_checks.py": "tests/support/response_checks.py",
}

# Test files that stay at the top of tests/: they check the whole tree, not one package.
TESTS_KEPT_AT_TOP = {
    "test_architecture.py",  # import boundaries of every package
    "test_no_raw_identifiers.py",  # privacy invariant 1 through every input and store
    "test_leak_scanner.py",  # the same, at scale
    "test_compose.py",  # the deployment (docker-compose)
    "test_readme_walkthrough.py",  # the README, top to bottom, against a live server
    "test_mutation.py",  # the mutation-testing tooling
}

TEST_TABLE: dict[str, str] = {
    # storage/
    "test_sqlite_files.py": "storage",
    # identity/
    "test_normalization.py": "identity",
    "test_hashing.py": "identity",
    "test_resolution.py": "identity",
    "test_unlink_explain.py": "identity",
    "test_ids.py": "identity",
    # identity/store/
    "test_cypher.py": "identity/store",
    "test_store_copy.py": "identity/store",
    "test_sqlite_schema.py": "identity/store",
    "test_deferred_store.py": "identity/store",
    "test_neo4j_live.py": "identity/store",
    "test_concurrent_writes.py": "identity/store",
    "test_durability.py": "identity/store",
    "test_crash_safety.py": "identity/store",
    # privacy/
    "test_vault.py": "privacy/keys",
    "test_kek_rotation.py": "privacy/keys",
    "test_key_safety.py": "privacy/keys",
    "test_pkcs11.py": "privacy/keys",
    "test_key_files.py": "privacy/keys",
    "test_consent_state.py": "privacy/consent",
    "test_consent_signals.py": "privacy/consent",
    "test_tcf.py": "privacy/consent",
    "test_tcfca.py": "privacy/consent",
    "test_gpp.py": "privacy/consent",
    "test_consent_diff.py": "privacy/consent",
    "test_consent_webhooks.py": "privacy/consent",
    "test_policy_engine.py": "privacy/access",
    "test_purposes.py": "privacy/access",
    "test_policy_files.py": "privacy/access",
    "test_cursors.py": "privacy/access",
    "test_dsr_deadlines.py": "privacy/dsr",
    "test_dsr_rights.py": "privacy/dsr",
    "test_dsr_recipients.py": "privacy/dsr",
    "test_pii_corpus.py": "privacy/scanning",
    "test_dsr_webhooks.py": "privacy/dsr",
    "test_erasure.py": "privacy/dsr",
    "test_erasure_exports.py": "privacy/dsr",
    "test_retention.py": "privacy/dsr",
    "test_pii_scanner.py": "privacy/scanning",
    "test_redaction.py": "privacy/scanning",
    "test_audit.py": "privacy/auditing",
    "test_audit_heads.py": "privacy/auditing",
    "test_webhooks.py": "privacy/transport",
    "test_outbound.py": "privacy/transport",
    # entrypoints
    "test_api.py": "api",
    "test_api_fuzz.py": "api",
    "test_bad_input.py": "api",
    "test_consent_api.py": "api",
    "test_dsr_api.py": "api",
    "test_facts_api.py": "api",
    "test_reads_api.py": "api",
    "test_route_auth.py": "api",
    "test_rate_limit.py": "api",
    "test_response_headers.py": "api",
    "test_ownership.py": "api",
    "test_input_hardening.py": "api",
    "test_error_table.py": "api",
    "test_metrics.py": "api",
    "test_cli.py": "cli",
    "test_cli_audit.py": "cli",
    "test_console.py": "console",
    "test_outbound_events.py": "stream",
    # benchmarks' smoke tests
    "test_bench_smoke.py": "bench",
    "test_bench_report.py": "bench",
    "test_bench_audience_smoke.py": "bench",
    "test_erasure_bench_smoke.py": "bench",
}

# For test files the table does not know: a name rule first (substring → folder) ...
NAME_RULES: tuple[tuple[str, str], ...] = (
    ("bench", "bench"),
    ("_api", "api"),
    ("cli", "cli"),
    ("console", "console"),
    ("kafka", "stream"),
    ("stream", "stream"),
    ("neo4j", "identity/store"),
    ("cypher", "identity/store"),
)
# ... then what it imports: the first entrypoint it imports, else the package it imports most.
IMPORT_ROOTS: tuple[tuple[str, str], ...] = (
    ("api", "api"),
    ("cli", "cli"),
    ("console", "console"),
    ("stream", "stream"),
)
PACKAGE_FOLDERS: tuple[tuple[str, str], ...] = (
    ("privacy.keys", "privacy/keys"),
    ("privacy.consent", "privacy/consent"),
    ("privacy.access", "privacy/access"),
    ("privacy.dsr", "privacy/dsr"),
    ("privacy.scanning", "privacy/scanning"),
    ("privacy.auditing", "privacy/auditing"),
    ("privacy.transport", "privacy/transport"),
    ("identity.store", "identity/store"),
    ("identity", "identity"),
    ("services", "services"),
    ("bootstrap", "bootstrap"),
    ("storage", "storage"),
)

TEXT_SUFFIXES = {
    ".py", ".toml", ".md", ".cfg", ".ini", ".txt", ".yml", ".yaml", ".sh", ".json", ".rst",
    ".html", ".j2", ".in",
}  # fmt: skip
TEXT_NAMES = {"Makefile", "Dockerfile", "run", ".gitignore", ".dockerignore"}
SKIP_PARTS = {"vendor", "node_modules", ".venv", "mutants", "models"}


# -- helpers ---------------------------------------------------------------------------------


def git(*args: str) -> str:
    return subprocess.run(  # noqa: S603 - fixed arguments
        ["git", *args],  # noqa: S607 - git from PATH, as a developer runs it
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def repo_files() -> list[str]:
    """Tracked files plus untracked ones git does not ignore (another branch's new work)."""
    listed = git("ls-files", "--cached", "--others", "--exclude-standard").splitlines()
    return sorted({f for f in listed if (REPO / f).is_file()})


def module_of(path: str) -> str:
    return path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def is_text(path: str) -> bool:
    p = Path(path)
    if set(p.parts) & SKIP_PARTS or path == SELF:
        return False
    return p.suffix in TEXT_SUFFIXES or p.name in TEXT_NAMES


@dataclass
class Plan:
    moves: dict[str, str] = field(default_factory=dict)  # old path -> new path (files)
    problems: list[str] = field(default_factory=list)
    unplaced: list[str] = field(default_factory=list)

    @property
    def modules(self) -> dict[str, str]:
        return {module_of(old): module_of(new) for old, new in self.moves.items()}


def _imported_modules(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except SyntaxError:
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def place_by_rule(name: str, imports: list[str], modules: dict[str, str]) -> str | None:
    """The folder (below tests/) of a test file the table does not know, or ``None``."""
    stem = name.removeprefix("test_").removesuffix(".py")
    for needle, folder in NAME_RULES:
        if needle in f"_{stem}":
            return folder
    mapped = [modules.get(m, m) for m in imports]
    for root, folder in IMPORT_ROOTS:
        if any(m == root or m.startswith(f"{root}.") for m in mapped):
            return folder
    counts: Counter[str] = Counter()
    for m in mapped:
        for prefix, folder in PACKAGE_FOLDERS:
            if m == prefix or m.startswith(f"{prefix}."):
                counts[folder] += 1
                break
    if counts:
        return counts.most_common(1)[0][0]
    return None


def plan(files: list[str]) -> Plan:
    result = Plan()
    present = set(files)
    for old, new in {**MODULE_MOVES, **SUPPORT_MOVES}.items():
        if old in present:
            if new in present:
                result.problems.append(f"cannot move {old}: {new} exists")
            else:
                result.moves[old] = new
    module_map = {module_of(o): module_of(n) for o, n in MODULE_MOVES.items()}
    for path in files:
        p = Path(path)
        if p.parent.as_posix() != "tests" or not p.name.startswith("test_") or p.suffix != ".py":
            continue
        if p.name in TESTS_KEPT_AT_TOP:
            continue
        folder = TEST_TABLE.get(p.name)
        if folder is None:
            folder = place_by_rule(p.name, _imported_modules(REPO / path), module_map)
            if folder is None:
                result.unplaced.append(path)
                continue
            print(f"  rule: {path} -> tests/{folder}/ (not in TEST_TABLE)")
        new = f"tests/{folder}/{p.name}"
        if new in present:
            result.problems.append(f"cannot move {path}: {new} exists")
        else:
            result.moves[path] = new
    return result


# -- rewriting -------------------------------------------------------------------------------


def _name_pattern(old: str) -> re.Pattern[str]:
    # A whole dotted name: not preceded by a name character or a dot, not followed by one.
    return re.compile(rf"(?<![\w.]){re.escape(old)}(?!\w)")


def _joined_pattern(old: str) -> re.Pattern[str]:
    # The same path written as a pathlib join: "privacy" / "vault.py".
    parts = [rf"([\"']){re.escape(part)}\{i + 1}" for i, part in enumerate(old.split("/"))]
    return re.compile(r"\s*/\s*".join(parts))


def _joined(new: str) -> str:
    return " / ".join(f'"{part}"' for part in new.split("/"))


def _path_pattern(old_stem: str) -> re.Pattern[str]:
    # A path (stem, optionally .py): not inside another path or name.
    return re.compile(rf"(?<![\w./-]){re.escape(old_stem)}(?![\w/])")


@dataclass
class Rewriter:
    modules: dict[str, str]  # old dotted module -> new
    stems: dict[str, str]  # old path stem -> new path stem
    paths: dict[str, str]  # old file path -> new (for pathlib joins)

    def __post_init__(self) -> None:
        # Longest first, so privacy.audit_heads is never half-rewritten by privacy.audit.
        self._names = [
            (_name_pattern(old), new)
            for old, new in sorted(self.modules.items(), key=lambda kv: -len(kv[0]))
        ]
        self._paths = [
            (_path_pattern(old), new)
            for old, new in sorted(self.stems.items(), key=lambda kv: -len(kv[0]))
        ]
        self._joins = [(_joined_pattern(old), _joined(new)) for old, new in self.paths.items()]
        self._from_parent = re.compile(
            r"^(?P<indent>[ \t]*)from (?P<parent>[\w.]+) import (?P<name>\w+)"
            r"(?: as (?P<alias>\w+))?(?P<rest>[ \t]*(?:#.*)?)$",
            re.M,
        )

    def text(self, text: str) -> str:
        text = self._from_parent.sub(self._parent_import, text)
        for pattern, new in self._names:
            text = pattern.sub(new, text)
        for pattern, new in self._paths:
            text = pattern.sub(new, text)
        for pattern, new in self._joins:
            text = pattern.sub(new, text)
        return text

    def _parent_import(self, m: re.Match[str]) -> str:
        # from privacy import vault [as x]  ->  from privacy.keys import vault [as x]
        old = f"{m['parent']}.{m['name']}"
        new = self.modules.get(old)
        if new is None:
            return m.group(0)
        parent, _, name = new.rpartition(".")
        alias = m["alias"] or (m["name"] if name != m["name"] else None)
        tail = f" as {alias}" if alias else ""
        return f"{m['indent']}from {parent} import {name}{tail}{m['rest']}"


_RELATIVE = re.compile(r"^(?P<indent>[ \t]*)from (?P<dots>\.+)(?P<module>[\w.]*) import ", re.M)
_FILE_PARENT = re.compile(r"Path\(__file__\)(?P<resolve>\.resolve\(\))?\.parent(?![s\w])")
_FILE_PARENTS = re.compile(r"Path\(__file__\)(?P<resolve>\.resolve\(\))?\.parents\[(?P<n>\d+)\]")


def absolutize(text: str, old_path: str, moves: dict[str, str], modules: dict[str, str]) -> str:
    """Relative imports in a test file become absolute where the file or its target moved."""
    moved_self = old_path in moves
    package = module_of(old_path).rpartition(".")[0]

    def fix(m: re.Match[str]) -> str:
        base = package.split(".")
        up = len(m["dots"]) - 1
        if up:
            base = base[:-up]
        target = ".".join([*base, m["module"]] if m["module"] else base)
        new = modules.get(target, target)
        if not moved_self and new == target:
            return m.group(0)
        return f"{m['indent']}from {new} import "

    return _RELATIVE.sub(fix, text)


LINE_LENGTH = 100  # ruff's line-length (pyproject.toml)
_RULE = re.compile(r"^[ \t]*#.*?(?P<dashes>[-=]{4,})$")


def rewrap(original: str, text: str) -> str:
    """Re-wrap comment and docstring lines a longer path pushed past the line length (code lines
    are left to ``ruff format``; a long line that was long before is left alone)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text
    prose: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            prose.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    was_long = {line for line in original.split("\n") if len(line) > LINE_LENGTH}
    out: list[str] = []
    for number, line in enumerate(text.split("\n"), start=1):
        body = line.lstrip()
        indent = line[: len(line) - len(body)]
        if len(line) <= LINE_LENGTH or line in was_long:
            out.append(line)
        elif rule := _RULE.search(line):
            # A section rule ("# -- name ----"): shorten its dashes instead of wrapping it.
            out.append(line[: max(rule.start("dashes") + 3, LINE_LENGTH)])
        elif body.startswith("#"):
            prefix = f"{indent}# "
            out.extend(
                textwrap.wrap(
                    body[1:].strip(),
                    width=LINE_LENGTH,
                    initial_indent=prefix,
                    subsequent_indent=prefix,
                    break_long_words=False,
                    break_on_hyphens=False,
                )
            )
        elif number in prose:
            out.extend(
                textwrap.wrap(
                    body,
                    width=LINE_LENGTH,
                    initial_indent=indent,
                    subsequent_indent=indent,
                    break_long_words=False,
                    break_on_hyphens=False,
                )
            )
        else:
            out.append(line)
    return "\n".join(out)


def shift_file_arithmetic(text: str, delta: int) -> str:
    if delta == 0:
        return text

    def parent(m: re.Match[str]) -> str:
        return f"Path(__file__){m['resolve'] or ''}.parents[{delta}]"

    def parents(m: re.Match[str]) -> str:
        return f"Path(__file__){m['resolve'] or ''}.parents[{int(m['n']) + delta}]"

    return _FILE_PARENT.sub(parent, _FILE_PARENTS.sub(parents, text))


# -- the run ---------------------------------------------------------------------------------


def _depth(path: str) -> int:
    return len(Path(path).parts)


def run(*, dry_run: bool) -> int:
    files = repo_files()
    todo = plan(files)
    modules = {module_of(o): module_of(n) for o, n in todo.moves.items()}
    stems = {o.removesuffix(".py"): n.removesuffix(".py") for o, n in todo.moves.items()}
    rewritten = _rewrite(files, todo, Rewriter(modules, stems, todo.moves), modules)
    for old, new in sorted(todo.moves.items()):
        print(f"move {old} -> {new}")
    for path in sorted(rewritten):
        print(f"rewrite {todo.moves.get(path, path)}")
    if not dry_run:
        _apply(todo, rewritten)
    return report(todo, repo_files(), dry_run=dry_run)


def _rewrite(
    files: list[str], todo: Plan, rewriter: Rewriter, modules: dict[str, str]
) -> dict[str, str]:
    """New contents of every text file that changes (computed at the old locations, where the
    relative imports of tests still resolve)."""
    rewritten: dict[str, str] = {}
    for path in files:
        if not is_text(path):
            continue
        original = (REPO / path).read_text(encoding="utf-8", errors="surrogateescape")
        text = rewriter.text(original)
        if path.startswith("tests/") and path.endswith(".py"):
            text = absolutize(text, path, todo.moves, modules)
        if path in todo.moves and path.endswith(".py"):
            text = shift_file_arithmetic(text, _depth(todo.moves[path]) - _depth(path))
        if path.endswith(".py") and text != original:
            text = rewrap(original, text)
        if text != original:
            rewritten[path] = text
    return rewritten


def _apply(todo: Plan, rewritten: dict[str, str]) -> None:
    tracked = set(git("ls-files").splitlines())
    for path, text in rewritten.items():
        (REPO / path).write_text(text, encoding="utf-8", errors="surrogateescape")
    for old, new in sorted(todo.moves.items()):
        (REPO / new).parent.mkdir(parents=True, exist_ok=True)
        if old in tracked:
            git("mv", old, new)
        else:
            (REPO / old).rename(REPO / new)
    for package, doc in NEW_PACKAGES.items():
        _ensure_init(package, doc)
    for new in todo.moves.values():
        if new.startswith("tests/"):
            folder = Path(new).parent
            while folder.as_posix() != "tests":
                _ensure_init(folder.as_posix(), f"Tests of {_under_test(folder)}.")
                folder = folder.parent


def _under_test(folder: Path) -> str:
    rel = folder.relative_to("tests").as_posix()
    return "test helpers" if rel == "support" else f"{rel}/"


def _ensure_init(folder: str, doc: str) -> None:
    init = REPO / folder / "__init__.py"
    if init.exists():
        return
    init.parent.mkdir(parents=True, exist_ok=True)
    text = textwrap.fill(f'"""{doc}"""', width=LINE_LENGTH, break_on_hyphens=False)
    init.write_text(f"{text}\n", encoding="utf-8")
    git("add", init.relative_to(REPO).as_posix())
    print(f"create {folder}/__init__.py")


def report(todo: Plan, files: list[str], *, dry_run: bool) -> int:
    """List what is left unresolved; 1 if anything is."""
    every = {**MODULE_MOVES, **SUPPORT_MOVES}
    old_names = {module_of(o) for o in every} | {module_of(o) for o in todo.moves}
    old_stems = {o.removesuffix(".py") for o in every} | {o.removesuffix(".py") for o in todo.moves}
    left: list[str] = []
    if not dry_run:
        checks = [
            *((_name_pattern(n), n) for n in old_names),
            *((_path_pattern(s), s) for s in old_stems),
            *((_joined_pattern(f"{s}.py"), f"{s}.py") for s in old_stems),
        ]
        for path in files:
            if not is_text(path):
                continue
            text = (REPO / path).read_text(encoding="utf-8", errors="surrogateescape")
            for pattern, old in checks:
                for m in pattern.finditer(text):
                    line = text.count("\n", 0, m.start()) + 1
                    left.append(f"{path}:{line}: still names {old}")
            if path.startswith("tests/") and path.endswith(".py"):
                left.extend(_unresolved_relative(path, text))
        left.extend(f"{p} exists (should have moved)" for p in every if (REPO / p).exists())
    for path in todo.unplaced:
        left.append(f"{path}: no rule places it (add it to TEST_TABLE or TESTS_KEPT_AT_TOP)")
    left.extend(todo.problems)
    for unresolved in left:
        print(f"UNRESOLVED {unresolved}")
    moved = len(todo.moves)
    print(f"{'would move' if dry_run else 'moved'} {moved} file(s); {len(left)} unresolved")
    return 1 if left else 0


def _unresolved_relative(path: str, text: str) -> list[str]:
    package = module_of(path).rpartition(".")[0]
    found = []
    for m in _RELATIVE.finditer(text):
        base = package.split(".")
        up = len(m["dots"]) - 1
        base = base[:-up] if up else base
        target = "/".join([*base, *m["module"].split(".")] if m["module"] else base)
        if not ((REPO / f"{target}.py").exists() or (REPO / target / "__init__.py").exists()):
            found.append(f"{path}: relative import of {target} does not resolve")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    mode.add_argument("--check", action="store_true", help="exit 1 if anything is left to do")
    args = parser.parse_args()
    if args.check:
        todo = plan(repo_files())
        status = report(todo, repo_files(), dry_run=False)
        return 1 if todo.moves or status else 0
    return run(dry_run=args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
