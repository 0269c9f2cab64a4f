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
from collections.abc import Iterable
from itertools import chain
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


_values = dict.values


def _members_within(document: dict[str, Any] | list[Any], max_depth: int) -> int | None:
    """How many members the objects of ``document`` hold in all (the sum of their lengths), or
    ``None`` when a container sits at depth ``max_depth`` or deeper (the root is at 0).

    One level of containers at a time: the lengths summed and the children gathered by C
    iterators, one comprehension per level picking the containers out of all the values (a
    50-event ``/v1/ingest`` body has ~450 containers and ~1,050 values: a comprehension per
    container cost more than the values themselves)."""
    members = 0
    level: list[Any] = [document]
    for _ in range(max_depth):
        dicts = [node for node in level if type(node) is dict]
        values: Iterable[Any]
        if not dicts:
            values = chain.from_iterable(level)
        else:
            members += sum(map(len, dicts))
            values = chain.from_iterable(map(_values, dicts))
            if len(dicts) != len(level):
                lists = [node for node in level if type(node) is list]
                values = chain(values, chain.from_iterable(lists))
        level = [child for child in values if type(child) is dict or type(child) is list]
        if not level:
            return members
    return None


# A key's closing quote, whitespace, then its colon (``"a" : 1``: allowed, rare).
_SPACED_KEY_END: Final = re.compile(r'"[ \t\n\r]+:')


def _members_at_most(text: str, members: int) -> bool:
    """Whether ``text`` (a JSON document that decoded) names at most ``members`` object
    members, counted from the text alone: ``False`` also when it cannot tell.

    Every member is a key string, optional whitespace and one ``:`` outside any string. So the
    document's ``:`` characters bound its members (a ``:`` inside a string only adds to the
    count); where strings hold colons (time stamps), every key's closing ``"`` is followed by
    its ``:`` directly or after whitespace, so the ``":`` pairs plus the ``"``-whitespace-``:``
    runs bound them too (one per key: a run inside a string only adds, and none can reach past
    its string's closing quote)."""
    if text.count(":") <= members:
        return True
    return text.count('":') + len(_SPACED_KEY_END.findall(text)) <= members


class _LocateError(Exception):
    """The fast decode found something to refuse: located by a re-decode and a full walk."""


class _DuplicateKeyError(_LocateError):
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
_HOOKLESS_DECODER = json.JSONDecoder()
# Up to this length (characters) a document with few brackets takes the hook: a bulk row (~300
# characters, ~9 objects) costs fewer instructions that way than with the walk (cachegrind).
_SHORT_DOCUMENT: Final = 2048


def _text(raw: bytes | str) -> str:
    """``raw`` as ``json.loads`` reads it: a BOM in text refused, bytes decoded in their detected
    UTF encoding."""
    if isinstance(raw, str):
        if raw.startswith("\ufeff"):
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", raw, 0)
        return raw
    return raw.decode(json.detect_encoding(raw), "surrogatepass")


def _decode_unless_refused(text: str, max_depth: int) -> Any:
    """The document of ``text`` when it has no repeated key and nests at most ``max_depth``
    levels; :class:`_LocateError` otherwise (see :func:`loads_strict`)."""
    if len(text) <= _SHORT_DOCUMENT and text.count("{") + text.count("[") <= max_depth:
        return _PLAIN_DECODER.decode(text)  # cannot nest deeper than its brackets
    document = _HOOKLESS_DECODER.decode(text)
    if type(document) is dict or type(document) is list:
        members = _members_within(document, max_depth)
        if members is None:
            raise _LocateError  # too deep (and maybe a repeated key too): the walk says which
        if not _members_at_most(text, members):
            return _PLAIN_DECODER.decode(text)  # the hook raises on a repeated key
    return document


def loads_strict(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """Decode ``raw`` as JSON, refusing duplicate keys and nesting deeper than ``max_depth``;
    raises :class:`MalformedJsonError`. Objects come back as dicts.

    Accepted documents (nearly all) are decoded once into plain dicts; only a document with a
    duplicate key is decoded again, keeping each object's first repeated key, to say where.

    A document with few brackets (a bulk row) is decoded with a hook per object that notices a
    repeated key; it cannot nest deeper than its brackets. A bigger one (a ``/v1/ingest`` body)
    is decoded by the C decoder alone and then walked once, level by level, for its depth and
    its objects' members: an object that repeats a key holds fewer members than the text names,
    so when the text cannot name more members than the objects hold (:func:`_members_at_most`),
    no key repeats. Otherwise it is decoded again with the hook, as a small one. For a 50-event
    body that is 35 % fewer instructions than the hook and a walk (bench/README.md).
    """
    try:
        text = _text(raw)
        return _decode_unless_refused(text, max_depth)
    except _LocateError:
        pass
    except RecursionError:
        raise MalformedJsonError(
            "too_deep", f"the document nests deeper than {max_depth} levels"
        ) from None
    except (UnicodeDecodeError, ValueError):
        raise MalformedJsonError("malformed_json", "the body is not valid UTF-8 JSON") from None
    try:
        document = _LOCATING_DECODER.decode(text)
    except RecursionError:
        raise MalformedJsonError(
            "too_deep", f"the document nests deeper than {max_depth} levels"
        ) from None
    except (UnicodeDecodeError, ValueError):
        raise MalformedJsonError("malformed_json", "the body is not valid UTF-8 JSON") from None
    _check(document, max_depth)
    return document
