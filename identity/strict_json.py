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


_SAFE_SEGMENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


def _segment(key: str) -> str:
    # A key of the schema is echoed; any other key could be a value (``{"ann@x.de": 1}``).
    return key if _SAFE_SEGMENT.fullmatch(key) else "*"


# Where a node sits: ``None`` for the root, else (parent's path, key or index). Built per
# container only, and turned into a JSON pointer only when a check fails: a request body of
# 50 events has ~1,000 nodes, and a pointer string per node cost 10x the decode itself.
_Path = tuple[Any, str | int] | None


def _pointer(path: _Path) -> str:
    parts: list[str] = []
    while path is not None:
        path, key = path
        parts.append(_segment(key) if isinstance(key, str) else str(key))
    return "/".join(["#", *reversed(parts)])


def _check(document: Any, max_depth: int) -> None:
    """Walk the decoded tree's containers (iteratively: no recursion on hostile depth)."""
    if not isinstance(document, dict | list):
        return
    stack: list[tuple[Any, _Path, int]] = [(document, None, 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth >= max_depth:
            raise MalformedJsonError(
                "too_deep", f"the document nests deeper than {max_depth} levels", _pointer(path)
            )
        if isinstance(node, dict):
            if isinstance(node, _Object) and node.duplicate is not None:
                raise MalformedJsonError(
                    "duplicate_key",
                    "an object names the same key twice",
                    _pointer((path, node.duplicate)),
                )
            stack.extend(
                (v, (path, k), depth + 1) for k, v in node.items() if isinstance(v, dict | list)
            )
        elif isinstance(node, list):
            stack.extend(
                (v, (path, i), depth + 1) for i, v in enumerate(node) if isinstance(v, dict | list)
            )


def _nests_deeper(document: dict[str, Any] | list[Any], max_depth: int) -> bool:
    """Whether a container of ``document`` (decoded by :data:`_PLAIN_DECODER`: plain dicts and
    lists, no duplicate key) sits at depth ``max_depth`` or deeper (the root is at 0).

    What :func:`_check` finds for such a document, at a fraction of its cost: one level of
    containers at a time, no location kept (a 50-event ``/v1/ingest`` body has ~500 containers
    and :func:`_check` built a path entry for each one). :func:`_check` locates the error only
    when there is one."""
    level: list[Any] = [document]
    for _ in range(max_depth):
        below: list[Any] = []
        for node in level:
            below += [
                child
                for child in (node.values() if type(node) is dict else node)
                if type(child) is dict or type(child) is list
            ]
        if not below:
            return False
        level = below
    return True


class _DuplicateKeyError(Exception):
    """Raised by the fast decode's hook: some object repeats a key (located by a re-decode)."""


def _plain_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKeyError
    return obj


# Made once: ``json.loads`` with a hook builds a new decoder (and its scanner) on every call,
# a tenth of the cost of decoding a bulk row. Decoders keep no state between documents.
_PLAIN_DECODER = json.JSONDecoder(object_pairs_hook=_plain_object)
_LOCATING_DECODER = json.JSONDecoder(object_pairs_hook=_Object)


def _decode(decoder: json.JSONDecoder, raw: bytes | str) -> Any:
    """``json.loads(raw, object_pairs_hook=...)`` with a decoder made once: the same input
    handling (a BOM in text refused, bytes decoded in their detected UTF encoding)."""
    if isinstance(raw, str):
        if raw.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", raw, 0)
        return decoder.decode(raw)
    return decoder.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


def _opening_brackets(raw: bytes | str) -> int:
    """How many ``{`` and ``[`` characters ``raw`` holds: an upper bound on its nesting."""
    if isinstance(raw, str):
        return raw.count("{") + raw.count("[")
    return raw.count(b"{") + raw.count(b"[")


def loads_strict(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Decode ``raw`` as JSON, refusing duplicate keys and nesting deeper than ``max_depth``;
    raises :class:`MalformedJsonError`. Objects come back as dicts.

    Accepted documents (nearly all) are decoded once into plain dicts; only a document with a
    duplicate key is decoded again, keeping each object's first repeated key, to say where.
    """
    try:
        document = _decode(_PLAIN_DECODER, raw)
    except _DuplicateKeyError:
        pass
    except RecursionError:
        raise MalformedJsonError(
            "too_deep", f"the document nests deeper than {max_depth} levels"
        ) from None
    except (UnicodeDecodeError, ValueError):
        raise MalformedJsonError("malformed_json", "the body is not valid UTF-8 JSON") from None
    else:
        # Decoded without a duplicate key, only the depth is left to check, and containers
        # cannot nest deeper than the number of brackets that open them (a bracket inside a
        # string only adds to the count). A bulk row or a small body has a handful: no walk.
        if (
            _opening_brackets(raw) > max_depth
            and isinstance(document, dict | list)
            and _nests_deeper(document, max_depth)
        ):
            _check(document, max_depth)  # raises, naming where
        return document
    try:
        document = _decode(_LOCATING_DECODER, raw)
    except RecursionError:
        raise MalformedJsonError(
            "too_deep", f"the document nests deeper than {max_depth} levels"
        ) from None
    except (UnicodeDecodeError, ValueError):
        raise MalformedJsonError("malformed_json", "the body is not valid UTF-8 JSON") from None
    _check(document, max_depth)
    return document
