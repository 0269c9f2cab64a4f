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
