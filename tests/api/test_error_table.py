"""The README's error table names every problem type the API can answer with (issue 13)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import api.app  # noqa: F401 - loads every module whose errors the app can map
import bootstrap.container  # noqa: F401
from identity.errors import IdGraphError

README = Path(__file__).resolve().parents[2] / "README.md"
# Slugs written by the middleware and the framework handlers (not error classes).
HANDLER_SLUGS = {
    "bad-request",
    "content-too-large",
    "unsupported-media-type",
    "invalid-request",
    "internal-error",
    "not-found",
    "method-not-allowed",
    "http-error",
}


def _subclasses(cls: type[IdGraphError]) -> Iterator[type[IdGraphError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_readme_error_table_lists_every_problem_type() -> None:
    text = README.read_text()
    table = text[text.index("| Status | `type`") : text.index("Nothing is written when")]
    listed = set(re.findall(r"`([a-z_-]+)`", table))
    codes = {cls.code for cls in _subclasses(IdGraphError)} | HANDLER_SLUGS

    assert codes - listed == set()


def test_every_problem_type_uses_one_naming_scheme_when_listed() -> None:
    """Lower-case words joined by hyphens (``purpose-forbidden``), never underscores."""
    codes = {cls.code for cls in _subclasses(IdGraphError)} | HANDLER_SLUGS
    text = README.read_text()
    table = text[text.index("| Status | `type`") : text.index("Nothing is written when")]
    rows = [line.split("|")[2] for line in table.splitlines()[2:] if line.startswith("|")]
    listed = {name for row in rows for name in re.findall(r"`([^`]+)`", row)}
    scheme = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
    assert sorted(c for c in codes | listed if not scheme.fullmatch(c)) == []


def test_readme_error_table_gives_each_api_problem_type_the_status_the_api_answers() -> None:
    """A type listed under the wrong status is as misleading as a missing one: every error
    class the app maps (``api.problems``) is listed in a row naming the status it answers
    with. Rows that say the type is never an HTTP (``/v1``) answer (console, CLI, stream
    worker) are theirs to describe."""
    from api.problems import _lookup

    text = README.read_text()
    table = text[text.index("| Status | `type`") : text.index("Nothing is written when")]
    statuses: dict[str, set[str]] = {}
    not_http: set[str] = set()
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            continue
        status, types, when = (cell.strip() for cell in line.split("|")[1:4])
        for name in re.findall(r"`([^`]+)`", types):
            if "never an HTTP answer" in when or "never a `/v1` answer" in when:
                not_http.add(name)
            statuses.setdefault(name, set()).update(s.strip() for s in status.split(","))

    wrong = {}
    for cls in set(_subclasses(IdGraphError)):
        if cls.code in not_http:
            continue
        answered, _ = _lookup(cls.__new__(cls))
        if str(answered) not in statuses.get(cls.code, set()):
            wrong[cls.code] = (answered, sorted(statuses.get(cls.code, set())))
    assert wrong == {}
