"""``ResolutionEngine.prepare`` reads the identity policy and hashes with the keyring inline
(stop 47): no ``IdentityPolicy.rules`` / ``blocked_reason`` or ``Keyring.candidates`` call per
identifier when the keyring holds one key, with the same results as those methods.

``test_prepare_makes_no_policy_or_keyring_call_per_identifier_when_one_key`` fails on the old
code (three calls per distinct identifier); the others guard that the prepared items are the
ones the policy's and the keyring's own methods give, with one key and during a rotation."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from identity.errors import UnknownIdentifierTypeError
from identity.hashing import HashKey, Keyring
from identity.identifiers import NormalizedIdentifier
from identity.model import IdentityEvent
from identity.policy import IdentityPolicy, load_identity_policy
from identity.resolution import ResolutionEngine
from identity.store.sqlite import SqliteGraphStore

ROOT = Path(__file__).resolve().parents[2]
AT = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SECRET_A = bytes(range(32))
SECRET_B = bytes(range(100, 132))

IDENTIFIERS = (
    NormalizedIdentifier("cookie_id", "k1"),
    NormalizedIdentifier("email", "ann@shop.de"),
    NormalizedIdentifier("customer_id", "TEST"),  # a blocked value, in another case
    NormalizedIdentifier("email", "noreply@shop.de"),  # a blocked pattern
    NormalizedIdentifier("phone", "+4915100012345"),
    NormalizedIdentifier("cookie_id", "k1"),  # a repeat
    NormalizedIdentifier("email", "ann@shop.de"),  # another repeat
    NormalizedIdentifier("idfa", "00000000-0000-0000-0000-000000000000"),  # blocked
)


@pytest.fixture
def policy() -> IdentityPolicy:
    return load_identity_policy(ROOT / "policies" / "identity.yaml")


def _engine(tmp_path: Path, policy: IdentityPolicy, keyring: Keyring) -> ResolutionEngine:
    store = SqliteGraphStore(tmp_path / f"graph-{os.urandom(4).hex()}.sqlite3")
    return ResolutionEngine(store, keyring, policy)


def _items(engine: ResolutionEngine, identifiers: tuple[NormalizedIdentifier, ...]) -> list[Any]:
    prepared = engine.prepare([IdentityEvent(identifiers, "crm", AT)])
    return [
        (
            p.position,
            p.identifier_type,
            p.priority,
            p.primary,
            p.candidates,
            p.blocked,
            p.key,
            p.raw,
            p.repeats,
        )
        for p in prepared.prepared[0]
    ]


def _expected(
    policy: IdentityPolicy, keyring: Keyring, identifiers: tuple[NormalizedIdentifier, ...]
) -> list[Any]:
    """The items as the policy's and keyring's methods make them, highest priority first."""
    firsts: dict[tuple[str, bytes], list[Any]] = {}
    for position, identifier in enumerate(identifiers):
        candidates = keyring.candidates(identifier)
        key = (identifier.type, candidates[0].digest)
        if key in firsts:
            firsts[key][8] = (*firsts[key][8], position)
            continue
        rules = policy.rules(identifier.type)
        firsts[key] = [
            position,
            identifier.type,
            rules.priority,
            candidates[0],
            candidates,
            policy.blocked_reason(identifier),
            key,
            identifier.value if rules.keep_raw else None,
            (),
        ]
    ordered = sorted(firsts.values(), key=lambda item: (-item[2], item[0]))
    return [tuple(item) for item in ordered]


def test_prepared_items_are_the_policys_and_keyrings_when_one_key(
    tmp_path: Path, policy: IdentityPolicy
) -> None:
    keyring = Keyring([HashKey("k1", SECRET_A)], "k1")
    items = _items(_engine(tmp_path, policy, keyring), IDENTIFIERS)
    assert items == _expected(policy, keyring, IDENTIFIERS)
    assert [item[5] for item in items] == [
        "blocked_value",
        None,
        "blocked_pattern",
        None,
        "blocked_value",
        None,
    ]
    assert items[-1][8] == (5,)  # cookie k1 was sent again at position 5


def test_prepared_items_are_the_policys_and_keyrings_when_two_keys(
    tmp_path: Path, policy: IdentityPolicy
) -> None:
    keyring = Keyring([HashKey("k1", SECRET_A), HashKey("k2", SECRET_B)], "k2")
    items = _items(_engine(tmp_path, policy, keyring), IDENTIFIERS)
    assert items == _expected(policy, keyring, IDENTIFIERS)
    assert all(len(item[4]) == 2 and item[3].key_id == "k2" for item in items)


def test_prepare_makes_no_policy_or_keyring_call_per_identifier_when_one_key(
    tmp_path: Path, policy: IdentityPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyring = Keyring([HashKey("k1", SECRET_A)], "k1")
    engine = _engine(tmp_path, policy, keyring)
    calls: list[str] = []
    for owner, name in (
        (IdentityPolicy, "rules"),
        (IdentityPolicy, "blocked_reason"),
        (Keyring, "candidates"),
    ):
        method = getattr(owner, name)

        def counting(self: Any, *args: Any, _method: Any = method, _name: str = name) -> Any:
            calls.append(_name)
            return _method(self, *args)

        monkeypatch.setattr(owner, name, counting)
    engine.prepare([IdentityEvent(IDENTIFIERS, "crm", AT)] * 3)
    assert calls == []  # old code: rules, candidates and blocked_reason per identifier (18)


def test_prepare_refuses_an_unknown_type_when_an_event_names_one(
    tmp_path: Path, policy: IdentityPolicy
) -> None:
    engine = _engine(tmp_path, policy, Keyring([HashKey("k1", SECRET_A)], "k1"))
    with pytest.raises(UnknownIdentifierTypeError):
        engine.prepare([IdentityEvent((NormalizedIdentifier("fax", "1"),), "crm", AT)])
