"""Bulk rows are checked without a Pydantic model per row, and answer exactly as the model does.

:func:`services.inputs.identify_input` certifies the rows it can (plain JSON shapes) and leaves
the others to :class:`~services.inputs.IdentifyRequest`. The differential properties below hold
it to that contract over generated valid and invalid rows: whatever it certifies, the model
accepts with the same values; whatever the model accepts in the plain shape, it certifies; and
a bulk import reports the same rows, errors and JSON pointers with it as with the model alone.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bootstrap.container import build_container
from bootstrap.settings import Settings
from identity.strict_json import loads_strict
from services import bulk, bulk_rows
from services.inputs import IdentifyInput, IdentifyRequest, identify_input

TYPES = ["email", "phone", "customer_id", "cookie_id", "device_id", "x_type", "Email", "e-mail"]
NAMES = ["city", "age_band", "visit_count", "a", "x" * 64, "x" * 65, "City", "é", "1st", ""]
# Text from every plane, lone surrogates included (JSON can carry them; the model refuses them).
TEXT = st.text(st.characters(), max_size=12) | st.sampled_from(
    ["", " ", "\n", "a\x00b", "\ud800", "ü" * 4096, "a" * 4096, "a" * 4097, "ann@shop.de"]
)


def _timestamps() -> st.SearchStrategy[Any]:
    moments = st.datetimes(
        min_value=datetime(900, 1, 1),  # noqa: DTZ001 - a tz is added below
        max_value=datetime(9999, 12, 31),  # noqa: DTZ001
        timezones=st.sampled_from(
            [
                UTC,
                timezone(timedelta(hours=5, minutes=30)),
                timezone(-timedelta(hours=23, minutes=59)),
            ]
        ),
    )
    future = datetime.now(UTC) + timedelta(days=3)
    return st.one_of(
        moments.map(lambda d: d.isoformat()),  # "+00:00", fractions of 6 digits or none
        moments.map(lambda d: d.isoformat().replace("+00:00", "Z")),
        moments.map(lambda d: d.isoformat(sep=" ")),  # pydantic-only forms: go to the model
        moments.map(lambda d: d.strftime("%Y-%m-%dT%H:%M")),  # no offset, no seconds
        st.just(future.isoformat()),  # more than 24 h ahead
        st.just("2026-02-30T00:00:00Z"),
        st.just("2026-01-01T24:00:00Z"),
        st.just("2026-01-01T00:00:60Z"),
        st.just("2026-01-01T00:00:00.1234567Z"),
        st.just("2026-01-01T00:00:00+24:00"),
        st.just("2026-01-01T00:00:00Z\n"),
        st.just("\uff12\uff10\uff12\uff16-01-01T00:00:00Z"),  # fullwidth digits
        st.integers(min_value=-(2**40), max_value=2**40),  # unix seconds
        st.none(),
    )


# Values at the edges of the schema, valid or not, drawn often.
EDGES = st.sampled_from(
    [
        "\ud800", "a\udfffb", "crm\n", "\n", "\x7f", "", " ", "a" * 4096, "a" * 4097,
        "m" * 256, "m" * 257, "é", "\U0001f600", 2**200, -(2**64), 0, -0.0, 1.5, math.nan,
        math.inf, True, False, None, [], {}, [1], ["a"] * 51, {"a": 1}, "2026-01-05T08:00:00Z",
        "2026-01-05T08:00:00+01:00", "2026-01-05 08:00:00Z", "5", "email", "x" * 41,
    ]
)  # fmt: skip

SCALARS = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**200),  # huge values
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
VALUES = st.one_of(
    SCALARS,
    st.lists(TEXT, max_size=3),
    st.lists(st.just("v"), min_size=50, max_size=51),
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.sampled_from(NAMES), SCALARS, max_size=2),
    st.none(),
)


def _identifiers() -> st.SearchStrategy[Any]:
    item = st.fixed_dictionaries(
        {"type": st.sampled_from(TYPES), "value": TEXT},
        optional={"extra": st.just(1), "priority": st.integers()},
    )
    return st.one_of(
        st.lists(item, min_size=0, max_size=4),
        st.just([{"type": "email", "value": "a@b.de"}] * 200),
        st.just([{"type": "email", "value": "a@b.de"}] * 201),
        st.lists(st.one_of(item, TEXT, st.integers(), st.none()), max_size=2),
        TEXT,
        st.none(),
    )


def _events() -> st.SearchStrategy[Any]:
    event = st.fixed_dictionaries(
        {"name": st.sampled_from(NAMES)},
        optional={
            "timestamp": _timestamps(),
            "properties": st.one_of(
                st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=3), st.none(), TEXT
            ),
            "other": st.just(True),
        },
    )
    return st.one_of(st.lists(event, max_size=3), st.just([{"name": "view"}] * 51), st.none(), TEXT)


def _rows() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "identifiers": _identifiers(),
            "source": st.sampled_from(
                [
                    "crm",
                    "web:eu-1",
                    "a" * 64,
                    "a" * 65,
                    "_x",
                    "crm\n",
                    "crm ",
                    "\uff23\uff32\uff2d",
                    "",
                ]
            )
            | TEXT,
            "timestamp": _timestamps(),
            "traits": st.one_of(
                st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=4),
                st.dictionaries(
                    st.from_regex(r"[a-z]{1,3}", fullmatch=True),
                    st.just(1),
                    min_size=101,
                    max_size=101,
                ),
                st.none(),
                st.lists(st.just(1), max_size=1),
            ),
            "events": _events(),
            "message_id": st.one_of(TEXT, st.just("m" * 256), st.just("m" * 257), st.integers()),
            "messageId": st.one_of(TEXT, st.none()),
            "unknown": st.just("field"),
        },
    )


def _plain_valid_rows() -> st.SearchStrategy[dict[str, Any]]:
    """Rows in the shape bulk files hold: the model accepts them and so must the fast path."""
    text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
    names = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
    scalar = st.one_of(
        st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), text
    )
    moment = st.datetimes(
        min_value=datetime(1000, 1, 2),  # noqa: DTZ001 - a tz is added below
        max_value=datetime(2026, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    )
    return st.fixed_dictionaries(
        {
            "identifiers": st.lists(
                st.fixed_dictionaries(
                    {"type": st.from_regex(r"[a-z][a-z0-9_]{0,39}", fullmatch=True), "value": text}
                ),
                min_size=1,
                max_size=6,
            ),
            "source": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}", fullmatch=True),
        },
        optional={
            "timestamp": moment.map(lambda d: d.isoformat().replace("+00:00", "Z")),
            "traits": st.dictionaries(
                names, st.one_of(scalar, st.lists(text, max_size=3)), max_size=5
            ),
            "events": st.lists(
                st.fixed_dictionaries(
                    {"name": names},
                    optional={
                        "timestamp": moment.map(datetime.isoformat),
                        "properties": st.dictionaries(names, scalar, max_size=3),
                    },
                ),
                max_size=3,
            ),
            "message_id": st.from_regex(r"[^\x00-\x1f\x7f]{1,64}", fullmatch=True).filter(
                lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)
            ),
        },
    )


@st.composite
def _mutated_rows(draw: st.DrawFn) -> dict[str, Any]:  # noqa: PLR0912 - one branch per field
    """A plain valid row with one field set to an edge-case value (valid or not)."""
    row = draw(_plain_valid_rows())
    where = draw(
        st.sampled_from(
            [
                "unknown", "type", "value", "identifier_extra", "identifiers", "source",
                "timestamp", "trait_key", "trait_value", "traits", "event_name", "event_time",
                "event_extra", "property", "properties", "message_id", "both_ids", "events",
            ]
        )
    )  # fmt: skip
    edge = draw(st.one_of(EDGES, VALUES, _timestamps(), TEXT))
    first = row["identifiers"][0]
    if where == "unknown":
        row[draw(st.sampled_from(["Source", "identifier", "trait", "extra"]))] = edge
    elif where in {"type", "value"}:
        first[where] = edge
    elif where == "identifier_extra":
        first["note"] = edge
    elif where in {"identifiers", "source", "timestamp", "traits", "events", "message_id"}:
        row[where] = edge
    elif where == "trait_key":
        row["traits"] = {draw(st.one_of(st.sampled_from(NAMES), TEXT)): 1}
    elif where == "trait_value":
        row["traits"] = {"city": edge}
    elif where == "both_ids":
        row["messageId"] = edge
    else:
        event: dict[str, Any] = {"name": "view"}
        if where == "event_name":
            event["name"] = edge
        elif where == "event_time":
            event["timestamp"] = edge
        elif where == "event_extra":
            event["at"] = edge
        elif where == "property":
            event["properties"] = {draw(st.sampled_from(NAMES)): edge}
        else:
            event["properties"] = edge
        row["events"] = [event]
    return row


def _decoded(row: dict[str, Any]) -> Any:
    """``row`` as a bulk file delivers it: JSON text read by the strict reader."""
    return loads_strict(json.dumps(row))


def _by_model(row: Any) -> IdentifyInput | None:
    try:
        return IdentifyInput.of(IdentifyRequest.model_validate(row))
    except ValidationError:
        return None


def _same(fast: IdentifyInput, model: IdentifyInput) -> None:
    assert fast == model
    # Equal datetimes may differ in offset; the stored and echoed time must not.
    times = [(fast.timestamp, model.timestamp)] + [
        (a.timestamp, b.timestamp) for a, b in zip(fast.events, model.events, strict=True)
    ]
    for mine, theirs in times:
        assert (mine is None) == (theirs is None)
        if mine is not None and theirs is not None:
            assert mine.utcoffset() == theirs.utcoffset()
            assert mine.isoformat() == theirs.isoformat()
    for key, value in (fast.traits or {}).items():
        assert type(value) is type(model.traits[key])  # type: ignore[index]
        if isinstance(value, float) and math.isnan(value):
            pytest.fail("a NaN was certified")


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row=st.one_of(_rows(), _mutated_rows()))
def test_certified_rows_are_accepted_by_the_model_with_the_same_values_when_any_row(
    row: dict[str, Any],
) -> None:
    decoded = _decoded(row)
    fast = identify_input(decoded)
    model = _by_model(decoded)
    if fast is not None:
        assert model is not None, "certified a row the model refuses"
        _same(fast, model)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row=_plain_valid_rows())
def test_plain_rows_are_certified_without_the_model_when_valid(row: dict[str, Any]) -> None:
    decoded = _decoded(row)
    model = _by_model(decoded)
    assert model is not None
    fast = identify_input(decoded)
    assert fast is not None, "a plain valid row went to the model"
    _same(fast, model)


@pytest.mark.parametrize(
    "row",
    [
        {"identifiers": [{"type": "email", "value": "a@b.de"}], "source": "crm", "x": 1},
        {"identifiers": [{"type": "email", "value": "a@b.de", "x": 1}], "source": "crm"},
        {"identifiers": [{"type": "email", "value": 5}], "source": "crm"},
        {"identifiers": [{"type": "email", "value": ""}], "source": "crm"},
        {"identifiers": [{"type": "email", "value": "a" * 4097}], "source": "crm"},
        {"identifiers": [], "source": "crm"},
        {"identifiers": [{"type": "email", "value": "a@b.de"}], "source": "crm\n"},
        {"identifiers": [{"type": "email", "value": "\ud800"}], "source": "crm"},
        {
            "identifiers": [{"type": "email", "value": "a"}],
            "source": "c",
            "traits": {"a": math.inf},
        },
        {"identifiers": [{"type": "email", "value": "a"}], "source": "c", "traits": {"A": 1}},
        {"identifiers": [{"type": "email", "value": "a"}], "source": "c", "message_id": "a\nb"},
        {
            "identifiers": [{"type": "e", "value": "a"}],
            "source": "c",
            "message_id": "m",
            "messageId": "m",
        },
        {"identifiers": [{"type": "e", "value": "a"}], "source": "c", "timestamp": "2026-01-01"},
        {
            "identifiers": [{"type": "e", "value": "a"}],
            "source": "c",
            "events": [{"name": "v", "properties": {"p": [1]}}],
        },
    ],
)
def test_rows_the_fast_path_leaves_to_the_model_when_edge_cases(row: dict[str, Any]) -> None:
    assert identify_input(_decoded(row)) is None


def test_huge_integers_and_unicode_are_certified_as_the_model_reads_them() -> None:
    row = {
        "identifiers": [{"type": "email", "value": "ännchen@straße.de"}],
        "source": "crm",
        "traits": {"big": 2**200, "neg": -(2**70), "city": "東京", "tags": ["😀", "x"]},
        "timestamp": "2026-01-05T08:00:00.5+05:30",
        "messageId": "ü-1",
    }
    fast = identify_input(_decoded(row))
    model = _by_model(_decoded(row))
    assert fast is not None
    assert model is not None
    _same(fast, model)
    assert fast.message_id == "ü-1"


# -- the whole bulk path: same report with and without the fast path ---------------------------


def _lines(rows: list[Any]) -> bytes:
    out = []
    for row in rows:
        out.append(row if isinstance(row, bytes) else json.dumps(row).encode())
    return b"\n".join(out) + b"\n"


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    rows=st.lists(st.one_of(_rows(), _plain_valid_rows(), _mutated_rows()), min_size=1, max_size=25)
)
def test_bulk_report_is_the_models_when_rows_are_checked_without_it(
    rows: list[dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    extra: list[Any] = [
        b'{"identifiers": [{"type": "email", "value": "a@b.de"}], "source": "crm", "source": "x"}',
        b'{"identifiers": [{"type": "email", "value": "a@b", "value": "c@d"}], "source": "s"}',
        b"[1, 2]",
        b"{not json",
    ]
    payload = _lines([*rows, *extra])
    reports = []
    for fast in (True, False):
        work = tmp_path_factory.mktemp("bulk")
        path = work / "rows.jsonl"
        path.write_bytes(payload)
        container = build_container(
            Settings(env="test", data_dir=work / "data", default_region="GB", pii_scan=False)
        )
        try:
            with monkeypatch.context() as patch:
                if not fast:
                    patch.setattr(bulk_rows, "identify_input", lambda _row: None)
                report = bulk.ingest_file(container.ingest, path, actor="test", batch_size=7)
        finally:
            container.close()
        reports.append(report)
    mine, theirs = reports
    assert mine.rows == theirs.rows
    assert mine.rejected_rows == theirs.rejected_rows
    assert mine.errors == theirs.errors
    assert mine.outcomes == theirs.outcomes
    assert mine.new_identifiers == theirs.new_identifiers
    assert mine.refusals == theirs.refusals
    assert mine.facts_stored == theirs.facts_stored
    assert (mine.events, mine.merged_persons) == (theirs.events, theirs.merged_persons)
