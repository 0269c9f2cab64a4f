"""Rows without a message id get one derived from their line and content
(``bulk:<line>:<sha256 of the row's canonical JSON>``). The canonical JSON is made by an encoder
built once (stop 37), and must stay the exact text ``json.dumps(row, sort_keys=True,
separators=(",", ":"))`` gives: a stored id that changed would make a rerun of an old file
apply its rows again."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.bulk_rows import _canonical_json, _derived_message_id

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()  # lone surrogates included: escaped as ASCII, never an encoding error
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@given(st.dictionaries(st.text(), _JSON, max_size=6))
def test_canonical_json_is_the_text_of_sorted_compact_dumps_when_given_any_row(
    row: dict[str, Any],
) -> None:
    assert _canonical_json(row) == json.dumps(row, sort_keys=True, separators=(",", ":"))


def test_derived_message_id_names_line_and_digest_of_the_sorted_row_when_a_row_has_none() -> None:
    row = {
        "source": "crm",
        "identifiers": [{"value": "Ann@Example.com", "type": "email"}],
        "traits": {"city": "Zürich", "score": 1.5},
    }
    canonical = (
        '{"identifiers":[{"type":"email","value":"Ann@Example.com"}],"source":"crm",'
        '"traits":{"city":"Z\\u00fcrich","score":1.5}}'
    )
    expected = hashlib.sha256(canonical.encode()).hexdigest()
    assert _derived_message_id(row, 7) == f"bulk:7:{expected}"
