"""One JSON reader for every input path (API bodies, signed webhooks, bulk files, streams).

Python's :func:`json.loads` accepts duplicate object keys (the last one wins) and recurses once
per nesting level. Both are dangerous on input we act on:

* a duplicate key means two parsers can disagree on what was sent: a signature or a proof digest
  covers ``{"value": A, "value": B}`` while the graph links only ``B``. RFC 8259 leaves the
  behaviour undefined; we refuse it, naming the key's location (never its value);
* deep nesting (``[[[[...]]]]`` 100k levels) makes the decoder raise :class:`RecursionError`,
  which is not a :class:`ValueError` and became a 500. No accepted document nests more than a
  few levels, so anything beyond :data:`MAX_DEPTH` is refused.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any, Final

from identity.errors import IdGraphError

MAX_DEPTH: Final = 32


class MalformedJsonError(IdGraphError):
    """The body is not JSON we accept (400): not UTF-8 JSON, a duplicate key, or too deep.

    ``reason`` is a code (``malformed_json``, ``duplicate_key``, ``too_deep``); ``pointer`` the
    location (JSON pointer) where known. Neither holds a value from the document.
    """

    code = "malformed-json"

    def __init__(self, reason: str, message: str, pointer: str = "#") -> None:
        self.reason = reason
        self.pointer = pointer
        self.message = message
        super().__init__(message)


# Objects with a duplicate key decoded so far, per thread (the decoder calls the object hook in
# the thread that called loads_strict, so a change of this count during a call is that call's).
_decoded = threading.local()


class _Object(dict[str, Any]):
    """A decoded object that remembers the first key it saw twice."""

    __slots__ = ("duplicate",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.duplicate: str | None = None
        if len(self) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    self.duplicate = key
                    break
                seen.add(key)
            _decoded.duplicates = _duplicates() + 1


def _duplicates() -> int:
    count: int = getattr(_decoded, "duplicates", 0)
    return count


def _opens(raw: bytes | str) -> int:
    """How many ``{`` and ``[`` characters ``raw`` holds, those in strings included: no document
    nests deeper than that. (In UTF-16/32 bytes, which json.loads also reads, every such
    character still contains its ASCII byte, so the count can only be too high.)"""
    if isinstance(raw, str):
        return raw.count("{") + raw.count("[")
    return raw.count(b"{") + raw.count(b"[")


_SAFE_SEGMENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


def _segment(key: str) -> str:
    # A key of the schema is echoed; any other key could be a value (``{"ann@x.de": 1}``).
    return key if _SAFE_SEGMENT.fullmatch(key) else "*"


def _check(document: Any, max_depth: int) -> None:
    """Walk the decoded tree (iteratively: no recursion on hostile depth)."""
    stack: list[tuple[Any, str, int]] = [(document, "#", 0)]
    while stack:
        node, pointer, depth = stack.pop()
        if isinstance(node, dict | list) and depth >= max_depth:
            raise MalformedJsonError(
                "too_deep", f"the document nests deeper than {max_depth} levels", pointer
            )
        if isinstance(node, _Object):
            if node.duplicate is not None:
                raise MalformedJsonError(
                    "duplicate_key",
                    "an object names the same key twice",
                    f"{pointer}/{_segment(node.duplicate)}",
                )
            stack.extend((v, f"{pointer}/{_segment(k)}", depth + 1) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{pointer}/{i}", depth + 1) for i, v in enumerate(node))


def loads_strict(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Decode ``raw`` as JSON, refusing duplicate keys and nesting deeper than ``max_depth``;
    raises :class:`MalformedJsonError`. Objects come back as dicts."""
    before = _duplicates()
    try:
        document = json.loads(raw, object_pairs_hook=_Object)
    except RecursionError:
        raise MalformedJsonError(
            "too_deep", f"the document nests deeper than {max_depth} levels"
        ) from None
    except (UnicodeDecodeError, ValueError):
        raise MalformedJsonError("malformed_json", "the body is not valid UTF-8 JSON") from None
    # The walk finds where a duplicate key is and how deep the document nests; it costs more
    # than the decoding of a small document. It is needed only when this call decoded an object
    # with a duplicate key, or when the text opens enough containers to nest too deep.
    if _duplicates() != before or _opens(raw) >= max_depth:
        _check(document, max_depth)
    return document
