"""The strict JSON reader skips its tree walk only where the walk could not find anything."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from identity import strict_json
from identity.strict_json import MalformedJsonError, loads_strict

KEYS = st.sampled_from(["a", "b", "{", "[", "ann@x.de", "k", "t:", '" :', " "])
# Whitespace (JSON's four characters) around a key's colon and after a value: the reader
# bounds an object's members by counting colons and quotes in the text.
SPACES = st.sampled_from(["", " ", "\n", "\t", "\r", " \n  "])


def _render(node: Any, before: str = "", after: str = "", between: str = "") -> str:
    """JSON text of a node; objects are lists of pairs, so keys can repeat."""
    if isinstance(node, tuple):
        members = (
            f"{json.dumps(k)}{before}:{after}{_render(v, before, after, between)}{between}"
            for k, v in node
        )
        return "{" + ",".join(members) + "}"
    if isinstance(node, list):
        return "[" + ",".join(_render(v, before, after, between) for v in node) + "]"
    return json.dumps(node)


NODES = st.recursive(
    st.one_of(
        st.integers(),
        st.text(st.sampled_from('ab{[]}"\\é: \t'), max_size=6),
        st.none(),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(st.tuples(KEYS, inner), max_size=3).map(tuple),
    ),
    max_leaves=40,
)


def _deep(depth: int, duplicate_at: int | None) -> str:
    text = "1"
    for level in range(depth):
        if level == duplicate_at:
            text = '{"x":' + text + ',"x":2}'
        else:
            text = ("[" + text + "]") if level % 2 else ('{"k":' + text + "}")
    return text


def _walked(raw: str | bytes, max_depth: int) -> Any:
    """The reader as it was: decode, then always walk the whole tree."""
    try:
        document = json.loads(raw, object_pairs_hook=strict_json._Object)
    except RecursionError:
        raise MalformedJsonError("too_deep", "too deep") from None
    except ValueError:
        raise MalformedJsonError("malformed_json", "not JSON") from None
    strict_json._check(document, max_depth)
    return document


def _outcome(read: Any, raw: str | bytes, max_depth: int) -> tuple[str, Any]:
    try:
        return "ok", read(raw, max_depth)
    except MalformedJsonError as exc:
        return exc.reason, exc.pointer


@settings(max_examples=1500, deadline=None)
@given(
    text=st.one_of(
        st.builds(_render, NODES, SPACES, SPACES, SPACES),
        st.builds(_deep, st.integers(0, 40), st.none() | st.integers(0, 40)),
    ),
    max_depth=st.sampled_from([1, 2, 3, 5, 32]),
    as_bytes=st.sampled_from(["str", "utf-8", "utf-16", "utf-32"]),
)
def test_reader_answers_as_the_full_walk_when_any_document(
    text: str, max_depth: int, as_bytes: str
) -> None:
    raw: str | bytes = text if as_bytes == "str" else text.encode(as_bytes)
    assert _outcome(loads_strict, raw, max_depth) == _outcome(_walked, raw, max_depth)


def test_duplicate_key_is_found_when_the_document_is_shallow() -> None:
    with pytest.raises(MalformedJsonError) as caught:
        loads_strict(b'{"identifiers": [{"type": "e", "type": "f"}], "source": "s"}')
    assert (caught.value.reason, caught.value.pointer) == ("duplicate_key", "#/identifiers/0/type")


def test_duplicate_in_another_thread_does_not_hide_this_calls_duplicate() -> None:
    results: list[str] = []

    def read(raw: bytes) -> None:
        for _ in range(200):
            try:
                loads_strict(raw)
                results.append("ok")
            except MalformedJsonError as exc:
                results.append(exc.reason)

    threads = [
        threading.Thread(target=read, args=(b'{"a": 1, "a": 2}',)),
        threading.Thread(target=read, args=(b'{"a": 1, "b": 2}',)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count("duplicate_key") == 200
    assert results.count("ok") == 200


ENCODED = [
    '{"a":1}',
    '\ufeff{"a":1}',
    b'{"a":1}',
    '\ufeff{"a":1}'.encode(),
    '{"a":"\u00e9"}'.encode("utf-16"),
    '{"a":"\u00e9"}'.encode("utf-16-le"),
    '{"a":"x"}'.encode("utf-32"),
    b"\xff\xfe",
    b'{"a":\xff}',
    "[1,2",
    b"",
    "",
]


def _decoded(decode: Any) -> tuple[str, Any]:
    try:
        return "ok", decode()
    except Exception as exc:  # noqa: BLE001 - the exception itself is what is compared
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("raw", ENCODED, ids=repr)
def test_reused_decoder_reads_input_as_json_loads_does_when_encoding_or_bom_varies(
    raw: str | bytes,
) -> None:
    # The decoders are made once (not per call as json.loads with a hook does): the same input
    # handling, BOMs and UTF-16/32 bytes included, and the same errors.
    expected = _decoded(lambda: json.loads(raw, object_pairs_hook=strict_json._plain_object))
    assert _decoded(lambda: strict_json._PLAIN_DECODER.decode(strict_json._text(raw))) == expected


def _check_refuses(document: Any, max_depth: int) -> bool:
    try:
        strict_json._check(document, max_depth)
    except MalformedJsonError:
        return True
    return False


@settings(max_examples=400, deadline=None)
@given(
    text=st.one_of(
        NODES.map(_render),
        st.builds(_deep, st.integers(1, 12), st.none()),
    ),
    max_depth=st.integers(0, 8),
)
def test_level_walk_finds_what_the_located_walk_finds_when_no_duplicate_key(
    text: str, max_depth: int
) -> None:
    try:
        document = json.loads(text, object_pairs_hook=strict_json._plain_object)
    except strict_json._DuplicateKeyError:
        return  # such documents take the locating path
    if isinstance(document, dict | list):
        too_deep = strict_json._members_within(document, max_depth) is None
        assert too_deep == _check_refuses(document, max_depth)


def _body(events: int, repeat_in: int | None = None, timestamps: bool = False) -> bytes:
    """A ``/v1/ingest``-like body; event ``repeat_in`` names its ``source`` twice."""
    rows = []
    for index in range(events):
        extra = ', "timestamp": "2026-12-05T12:00:00Z"' if timestamps else ""
        again = ', "source": "web"' if index == repeat_in else ""
        rows.append(
            f'{{"identifiers": [{{"type": "email", "value": "a{index}@x.de"}}], '
            f'"source": "api"{extra}{again}, "traits": {{"city": "Lyon"}}, '
            '"events": [{"name": "v", "properties": {"n": 1}}]}'
        )
    return ('{"events": [' + ", ".join(rows) + "]}").encode()


class _CountingDecoder:
    """Counts the documents handed to the per-object hook's decoder."""

    def __init__(self, decoder: json.JSONDecoder) -> None:
        self.decoder, self.calls = decoder, 0

    def decode(self, text: str) -> Any:
        self.calls += 1
        return self.decoder.decode(text)


@pytest.mark.parametrize("timestamps", [False, True])
def test_big_body_is_decoded_without_the_per_object_hook_when_no_key_repeats(
    monkeypatch: pytest.MonkeyPatch, timestamps: bool
) -> None:
    counting = _CountingDecoder(strict_json._PLAIN_DECODER)
    monkeypatch.setattr(strict_json, "_PLAIN_DECODER", counting)
    body = _body(50, timestamps=timestamps)
    assert loads_strict(body) == json.loads(body)
    assert counting.calls == 0


@pytest.mark.parametrize("timestamps", [False, True])
def test_repeated_key_deep_in_a_big_body_is_found_when_the_text_counts_cannot_rule_it_out(
    timestamps: bool,
) -> None:
    with pytest.raises(MalformedJsonError) as caught:
        loads_strict(_body(50, repeat_in=37, timestamps=timestamps))
    assert (caught.value.reason, caught.value.pointer) == ("duplicate_key", "#/events/37/source")
