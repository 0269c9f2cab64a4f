"""Paging cursors are sealed: they reveal no person id and only work for who they were issued to.

Issue 22, finding 1: the feature cursor used to be base64url("c1:" + person id), so a consumer
paging with limit=1 recovered the person id behind each pseudonym and could forge a cursor.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from identity.hashing import HashKey, Keyring
from identity.model import ConsentInput, ConsentSignal, FactInput, FactKind, IdentityEvent
from privacy.access.api_keys import Scope
from privacy.access.cursors import CursorCodec, CursorScope, InvalidCursorError
from tests.conftest import Api

NOW = datetime.now(UTC)
PERSONS = 6


def _key(api: Api, purposes: set[str], consumer: str) -> dict[str, str]:
    _, token = api.container.api_keys.create(
        consumer, frozenset({Scope.READ}), purposes=frozenset(purposes), consumer=consumer
    )
    return {"Authorization": f"Bearer {token}"}


def _people(api: Api, count: int, consented: bool = True) -> list[str]:
    """``count`` persons with a model_training feature (and consent when ``consented``)."""
    policy = api.container.identity_policy
    out = []
    for index in range(count):
        tag = secrets.token_hex(4)
        facts = (
            FactInput(FactKind.ATTRIBUTE, "city", "location", NOW, json.dumps("Lisbon").encode()),
            FactInput(
                FactKind.EVENT,
                "purchase",
                "behavioural",
                NOW - timedelta(days=1),
                json.dumps({"properties": {}}).encode(),
            ),
        )
        consents = tuple(
            ConsentInput(
                p, consented, NOW - timedelta(days=2), ConsentSignal.DIRECT, "consent", "0" * 64
            )
            for p in ("model_training", "ad_targeting")
        )
        event = IdentityEvent(
            (policy.normalize("customer_id", f"CUR-{index}-{tag}", "GB"),),
            "test",
            NOW - timedelta(hours=1),
            facts,
            consents,
        )
        (outcome,) = api.container.engine.ingest([event])
        assert outcome.person_id is not None
        out.append(outcome.person_id)
    return out


def _decodings(text: str) -> list[bytes]:
    """Every base64/base64url decoding of every token in ``text`` (what a consumer could try)."""
    found = []
    for token in re.findall(r"[A-Za-z0-9_\-+/=]{8,}", text):
        for alphabet in (base64.urlsafe_b64decode, base64.b64decode):
            stripped = token.rstrip("=")
            try:
                found.append(alphabet(stripped + "=" * (-len(stripped) % 4)))
            except (binascii.Error, ValueError):
                continue
    return found


def _page(api: Api, headers: dict[str, str], cursor: str | None = None, **params: Any) -> Any:
    query: dict[str, Any] = {"purpose": "model_training", "limit": 1, **params}
    if cursor is not None:
        query["cursor"] = cursor
    return api.client.get("/v1/features", params=query, headers=headers)


def test_no_feature_page_contains_or_decodes_to_a_person_id_when_paging_one_by_one(
    api: Api,
) -> None:
    admitted = _people(api, PERSONS)
    # Persons scanned but not admitted (no consent): a short page used to end at their id.
    denied = _people(api, 3, consented=False)
    headers = _key(api, {"model_training"}, "ds-team")

    texts, rows, cursor = [], 0, None
    for _ in range(3 * (PERSONS + 3)):
        response = _page(api, headers, cursor)
        assert response.status_code == 200, response.text
        texts.append(response.text)
        rows += len(response.json()["rows"])
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break

    assert cursor is None
    assert rows == PERSONS
    for text in texts:
        decoded = b"".join(_decodings(text))
        for person_id in admitted + denied:
            assert person_id not in text
            assert person_id.encode() not in decoded


def test_forged_cursor_in_the_old_format_is_400(api: Api) -> None:
    (person,) = _people(api, 1)
    headers = _key(api, {"model_training"}, "ds-team")
    forged = base64.urlsafe_b64encode(b"c1:" + person.encode()).decode().rstrip("=")

    response = _page(api, headers, forged)

    assert response.status_code == 400
    assert response.json()["type"] == "urn:idgraph:problem:invalid-cursor"
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("cursor", ["not-a-cursor!", "YWJj", "A" * 120, "Ag" + "=" * 3])
def test_garbage_cursor_is_400(api: Api, cursor: str) -> None:
    _people(api, 1)
    response = _page(api, _key(api, {"model_training"}, "ds-team"), cursor)

    assert response.status_code == 400


def test_cursor_replayed_by_another_consumer_is_400(api: Api) -> None:
    _people(api, 3)
    issued = _page(api, _key(api, {"model_training"}, "ds-team")).json()["next_cursor"]
    assert issued is not None

    replayed = _page(api, _key(api, {"model_training"}, "partner-lab"), issued)

    assert replayed.status_code == 400


def test_cursor_replayed_by_another_key_of_the_same_consumer_is_400(api: Api) -> None:
    _people(api, 3)
    issued = _page(api, _key(api, {"model_training"}, "ds-team")).json()["next_cursor"]

    assert _page(api, _key(api, {"model_training"}, "ds-team"), issued).status_code == 400


def test_feature_cursor_on_audience_members_is_400(api: Api) -> None:
    _people(api, 3)
    headers = _key(api, {"model_training", "ad_targeting"}, "ds-team")
    issued = _page(api, headers).json()["next_cursor"]
    audience = api.client.post(
        "/v1/audiences",
        json={
            "name": "all",
            "purpose": "ad_targeting",
            "rules": {"events": [{"event": "purchase", "within_days": 30}]},
        },
        headers=headers,
    )
    assert audience.status_code == 201, audience.text

    response = api.client.get(
        f"/v1/audiences/{audience.json()['id']}/members",
        params={"cursor": issued, "limit": 1},
        headers=headers,
    )

    assert response.status_code == 400


def test_altered_cursor_is_400(api: Api) -> None:
    _people(api, 3)
    headers = _key(api, {"model_training"}, "ds-team")
    issued = _page(api, headers).json()["next_cursor"]
    raw = bytearray(base64.urlsafe_b64decode(issued + "=" * (-len(issued) % 4)))
    raw[-1] ^= 1

    altered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")

    assert _page(api, headers, altered).status_code == 400
    assert _page(api, headers, issued).status_code == 200


def _codec(clock: list[datetime]) -> CursorCodec:
    keyring = Keyring([HashKey("k1", secrets.token_bytes(32))], "k1")
    return CursorCodec(keyring, ttl=timedelta(minutes=10), clock=lambda: clock[0])


def test_cursor_is_refused_after_its_expiry() -> None:
    clock = [NOW]
    codec = _codec(clock)
    scope = CursorScope("features", "key_1", "ds-team", "model_training")
    cursor = codec.seal(scope, "p_0001")
    assert codec.open(scope, cursor) == "p_0001"

    clock[0] = NOW + timedelta(minutes=11)

    with pytest.raises(InvalidCursorError, match="expired"):
        codec.open(scope, cursor)


@pytest.mark.parametrize(
    "other",
    [
        CursorScope("audience_members", "key_1", "ds-team", "model_training"),
        CursorScope("features", "key_2", "ds-team", "model_training"),
        CursorScope("features", "key_1", "lab", "model_training"),
        CursorScope("features", "key_1", "ds-team", "analytics"),
        CursorScope("features", "key_1", "ds-team", "model_training", "aud_1"),
    ],
)
def test_cursor_opens_only_in_the_scope_it_was_sealed_for(other: CursorScope) -> None:
    codec = _codec([NOW])
    cursor = codec.seal(CursorScope("features", "key_1", "ds-team", "model_training"), "p_1")

    with pytest.raises(InvalidCursorError):
        codec.open(other, cursor)


def test_cursor_length_does_not_depend_on_the_position_length() -> None:
    codec = _codec([NOW])
    scope = CursorScope("features", "key_1", "ds-team", "model_training")

    assert len(codec.seal(scope, "p_1")) == len(codec.seal(scope, "p_" + "9" * 28))
