"""purposes.yaml as models: field rules, the consent-default rule and the cross-file check.

Each cross-file problem is pinned by the exact field and message a privacy engineer reads when
the service refuses to start (mutation testing, ``make mutation``, holds these to account).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from identity.errors import PolicyFileError
from identity.policy import load_identity_policy
from privacy.access.purposes import (
    Default,
    LawfulBasis,
    PurposesPolicy,
    check_purposes,
    load_purposes_policy,
)
from privacy.scanning.facts import load_facts_policy
from tests.conftest import POLICY_DIR

FACTS = load_facts_policy(POLICY_DIR / "categories.yaml")
IDENTITY = load_identity_policy(POLICY_DIR / "identity.yaml")
SHIPPED_DOC: dict[str, Any] = yaml.safe_load((POLICY_DIR / "purposes.yaml").read_text())


def _purpose(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "description": "Test purpose.",
        "lawful_basis": "consent",
        "default": "deny",
        "categories": {"behavioural": {"retention_days": 30}},
    }
    spec.update(overrides)
    return spec


def _policy(**purposes: dict[str, Any]) -> PurposesPolicy:
    return PurposesPolicy.model_validate({"version": 1, "purposes": purposes})


def _problem(policy: PurposesPolicy) -> tuple[str, str, str]:
    with pytest.raises(PolicyFileError) as caught:
        check_purposes(policy, FACTS, IDENTITY, "purposes.yaml")
    error = caught.value
    return error.file, error.field, str(error)


def test_the_shipped_purposes_pass_the_cross_file_check() -> None:
    shipped = load_purposes_policy(POLICY_DIR / "purposes.yaml")
    check_purposes(shipped, FACTS, IDENTITY, "purposes.yaml")  # raises on any problem
    assert shipped.ids == tuple(sorted(SHIPPED_DOC["purposes"]))
    assert shipped.get("ad_targeting") is shipped.purposes["ad_targeting"]
    assert shipped.get("no_such_purpose") is None


def test_ids_are_sorted_whatever_the_file_order() -> None:
    policy = _policy(zeta=_purpose(), alpha=_purpose(), mid=_purpose())
    assert policy.ids == ("alpha", "mid", "zeta")


def test_an_unknown_category_names_the_purpose_the_category_and_the_declared_ones() -> None:
    policy = _policy(
        p=_purpose(
            categories={"behavioural": {"retention_days": 1}, "shoes": {"retention_days": 1}}
        )
    )
    assert _problem(policy) == (
        "purposes.yaml",
        "purposes.p.categories.shoes",
        "purposes.yaml: purposes.p.categories.shoes: unknown category; declared in "
        "categories.yaml: " + ", ".join(sorted(FACTS.categories)),
    )


def test_an_unknown_activation_type_names_its_index() -> None:
    policy = _policy(p=_purpose(activation=["email", "fax"]))
    assert _problem(policy)[1:] == (
        "purposes.p.activation.1",
        "purposes.yaml: purposes.p.activation.1: unknown identifier type 'fax'",
    )


def test_an_identifier_type_that_is_not_kept_cannot_be_activated() -> None:
    assert not IDENTITY.types["cookie_id"].keep_raw
    policy = _policy(p=_purpose(activation=["email", "phone", "cookie_id"]))
    assert _problem(policy)[1:] == (
        "purposes.p.activation.2",
        (
            "purposes.yaml: purposes.p.activation.2: 'cookie_id' is not kept (keep_raw: false in "
            "identity.yaml), so it cannot be activated"
        ),
    )


def test_kept_identifier_types_may_be_activated() -> None:
    policy = _policy(p=_purpose(activation=["email", "phone"]))
    check_purposes(policy, FACTS, IDENTITY, "purposes.yaml")
    assert policy.purposes["p"].activation == ("email", "phone")


def test_an_unknown_feature_attribute_names_its_index() -> None:
    policy = _policy(p=_purpose(features=["visit_count", "shoe_size"]))
    assert _problem(policy)[1:] == (
        "purposes.p.features.1",
        "purposes.yaml: purposes.p.features.1: unknown attribute 'shoe_size'",
    )


def test_a_feature_in_a_category_the_purpose_may_not_read_is_refused() -> None:
    assert FACTS.attributes["city"].category == "location"
    policy = _policy(p=_purpose(features=["visit_count", "city"]))
    assert _problem(policy)[1:] == (
        "purposes.p.features.1",
        (
            "purposes.yaml: purposes.p.features.1: 'city' is in category 'location', which this "
            "purpose may not read"
        ),
    )


def test_every_purpose_is_checked_not_only_the_first() -> None:
    policy = _policy(good=_purpose(), bad=_purpose(features=["shoe_size"]))
    assert _problem(policy)[1] == "purposes.bad.features.0"


def test_a_consent_purpose_must_default_to_deny_and_others_may_grant() -> None:
    with pytest.raises(ValidationError, match="a consent-based purpose must have default: deny"):
        _policy(p=_purpose(default="grant"))
    for basis in ("legitimate_interest", "contract", "legal_obligation"):
        policy = _policy(p=_purpose(lawful_basis=basis, default="grant"))
        assert policy.purposes["p"].default is Default.GRANT


@pytest.mark.parametrize(
    ("basis", "applies"),
    [
        (LawfulBasis.CONSENT, True),
        (LawfulBasis.LEGITIMATE_INTEREST, True),
        (LawfulBasis.CONTRACT, False),
        (LawfulBasis.LEGAL_OBLIGATION, False),
    ],
)
def test_consent_signals_apply_to_consent_and_legitimate_interest_only(
    basis: LawfulBasis, applies: bool
) -> None:
    policy = _policy(p=_purpose(lawful_basis=basis.value, default="deny"))
    assert policy.purposes["p"].consent_applies is applies


def test_durations_are_whole_days_and_absent_limits_are_none() -> None:
    policy = PurposesPolicy.model_validate(
        {
            "version": 1,
            "tcf": {"consent_max_age_days": 395},
            "purposes": {
                "limited": _purpose(consent_expiry_days=30),
                "unlimited": _purpose(),
            },
        }
    )
    assert policy.purposes["limited"].categories["behavioural"].retention == timedelta(days=30)
    assert policy.purposes["limited"].consent_expiry == timedelta(days=30)
    assert policy.purposes["unlimited"].consent_expiry is None
    assert policy.tcf.consent_max_age == timedelta(days=395)
    assert _policy(p=_purpose()).tcf.consent_max_age is None


@pytest.mark.parametrize(
    "doc",
    [
        {"version": 2, "purposes": {"p": _purpose()}},
        {"version": 1, "purposes": {}},
        {"version": 1, "purposes": {"Bad-Id": _purpose()}},
        {"version": 1, "purposes": {"p": _purpose(description="")}},
        {"version": 1, "purposes": {"p": _purpose(categories={"c": {"retention_days": 0}})}},
        {"version": 1, "purposes": {"p": _purpose(categories={"c": {"retention_days": 36_501}})}},
        {"version": 1, "purposes": {"p": _purpose(consent_expiry_days=0)}},
        {"version": 1, "purposes": {"p": _purpose(tcf={"purposes": [12]})}},
        {"version": 1, "purposes": {"p": _purpose(tcf={"special_features": [3]})}},
        {"version": 1, "purposes": {"p": _purpose(surprise=True)}},
        {"version": 1, "tcf": {"consent_max_age_days": 3651}, "purposes": {"p": _purpose()}},
        {"version": 1, "tcf": {"vendor_id": 0}, "purposes": {"p": _purpose()}},
    ],
)
def test_out_of_range_or_unknown_fields_are_refused(doc: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PurposesPolicy.model_validate(doc)


def test_models_are_frozen() -> None:
    policy = _policy(p=_purpose())
    with pytest.raises(ValidationError):
        policy.purposes["p"].default = Default.GRANT  # type: ignore[misc]
