"""Purposes: ``policies/purposes.yaml`` as frozen, validated models.

A purpose is the answer to "why is this read happening". Every profile, audience and feature
read names exactly one; the policy engine (:mod:`privacy.access.policy_engine`) allows it from the
purpose's lawful basis, the person's consent history and the caller's scopes, and returns only
fields whose categories the purpose lists, within their retention.

Cross-file rules (checked by :func:`check_purposes` at start-up, naming file and field):
categories must exist in ``categories.yaml``; activation types must exist in ``identity.yaml``
with ``keep_raw: true`` (a value that is not kept cannot be exported); feature attributes must
be declared attributes in a category the purpose reads.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from identity.errors import PolicyFileError
from identity.policy import IdentityPolicy, PolicyFieldProblem, load_policy_file
from privacy.scanning.facts import FactsPolicy

_NAME = r"^[a-z][a-z0-9_]{0,63}$"


class LawfulBasis(StrEnum):
    """GDPR Art. 6(1) bases this service distinguishes."""

    CONSENT = "consent"
    LEGITIMATE_INTEREST = "legitimate_interest"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal_obligation"


class Default(StrEnum):
    """The state of a purpose for a person without any record for it."""

    GRANT = "grant"
    DENY = "deny"


class GpcEffect(StrEnum):
    """What a Global Privacy Control signal records for a purpose."""

    OPT_OUT = "opt_out"
    IGNORE = "ignore"


class UsOptOut(StrEnum):
    """The GPP usnat opt-out kinds a purpose can be bound to."""

    SALE = "sale"
    SHARING = "sharing"
    TARGETED_ADVERTISING = "targeted_advertising"


class UsRefusalEffect(StrEnum):
    """What a refusal in a GPP US consent list (sensitive data, known child) does to a purpose.

    IAB encodes these lists the same way in every US section: 0 not applicable, 1 opted out /
    no consent, 2 did not opt out / consent. ``deny``: any entry 1 in any US section records a
    denial for the purpose. A 2 never grants on its own (consent to process sensitive data is
    not consent to the purpose), and 0 says nothing.
    """

    DENY = "deny"
    IGNORE = "ignore"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TcfMapping(_Frozen):
    """Which TCF purposes and special features a TC string must grant for this purpose."""

    purposes: tuple[Annotated[int, Field(ge=1, le=11)], ...] = ()
    special_features: tuple[Annotated[int, Field(ge=1, le=2)], ...] = ()


class CategoryAccess(_Frozen):
    """A category a purpose may read, and for how long after a fact was recorded."""

    retention_days: Annotated[int, Field(ge=1, le=36_500)]

    @property
    def retention(self) -> timedelta:
        """The retention as a duration."""
        return timedelta(days=self.retention_days)


class Purpose(_Frozen):
    """One purpose of ``purposes.yaml``."""

    description: str = Field(min_length=1)
    lawful_basis: LawfulBasis
    default: Default
    tcf: TcfMapping = Field(default_factory=TcfMapping)
    gpc: GpcEffect = GpcEffect.IGNORE
    us_opt_outs: tuple[UsOptOut, ...] = ()
    # GPP US SensitiveDataProcessing (core list, or the usin/usky/usri sub-section) and
    # KnownChildSensitiveDataConsents: a refusal there denies this purpose when ``deny``.
    us_sensitive_data: UsRefusalEffect = UsRefusalEffect.IGNORE
    us_known_child: UsRefusalEffect = UsRefusalEffect.IGNORE
    direct_marketing: bool = False
    restriction_exempt: bool = False
    categories: dict[Annotated[str, Field(pattern=_NAME)], CategoryAccess] = Field(
        default_factory=dict
    )
    activation: tuple[Annotated[str, Field(pattern=_NAME)], ...] = ()
    features: tuple[Annotated[str, Field(pattern=_NAME)], ...] = ()
    # A grant (from any signal) older than this, by the time the person decided, no longer
    # allows reads for this purpose: consent is not forever (GDPR recital 32, EDPB 05/2020).
    consent_expiry_days: Annotated[int, Field(ge=1, le=36_500)] | None = None

    @property
    def consent_expiry(self) -> timedelta | None:
        """:attr:`consent_expiry_days` as a duration."""
        days = self.consent_expiry_days
        return None if days is None else timedelta(days=days)

    @model_validator(mode="after")
    def _consent_defaults_to_deny(self) -> Self:
        # Consent cannot be presumed (GDPR Art. 4(11), 7): silence is not a yes.
        if self.lawful_basis is LawfulBasis.CONSENT and self.default is Default.GRANT:
            raise ValueError("a consent-based purpose must have default: deny")
        return self

    @model_validator(mode="after")
    def _us_refusals_need_consent_signals(self) -> Self:
        # A refusal can only be recorded for a purpose that consent signals affect; binding one
        # to a contract or legal-obligation purpose would silently do nothing.
        for name in ("us_sensitive_data", "us_known_child"):
            if getattr(self, name) is UsRefusalEffect.DENY and not self.consent_applies:
                raise ValueError(
                    f"{name}: deny needs lawful_basis consent or legitimate_interest; consent "
                    f"signals do not apply to {self.lawful_basis.value}"
                )
        return self

    @property
    def consent_applies(self) -> bool:
        """Whether consent signals (grants, denials, opt-outs) affect this purpose at all."""
        return self.lawful_basis in (LawfulBasis.CONSENT, LawfulBasis.LEGITIMATE_INTEREST)


class PreV22Handling(StrEnum):
    """What a TC string made under a TCF policy before v2.2 (policy version below 4) does."""

    ACCEPT = "accept"  # record it like any TC string (its grants age like any TCF grant)
    REFUSE = "refuse"  # 422: the consent was collected under rules TCF v2.2 replaced


class CaImpliedConsent(StrEnum):
    """Whether TCF Canada (GPP ``tcfcav1``) *implied* consent grants a purpose."""

    ACCEPT = "accept"  # implied consent counts like express consent (unless a restriction says)
    IGNORE = "ignore"  # only express consent grants: the privacy-first default


class TcfSettings(_Frozen):
    """Settings for reading TC strings."""

    vendor_id: Annotated[int, Field(ge=1, le=65_535)] | None = None
    # TCF v2.2 (policy version 4, 2023) dropped legitimate interest for purposes 3-6 and changed
    # what users were shown; strings still written with 2 or 3 predate those rules.
    pre_v22: PreV22Handling = PreV22Handling.ACCEPT
    # TCF policy asks CMPs to re-ask after 13 months at most: a TC-string grant older than this
    # (by the time the person decided) no longer allows reads. None: no age limit.
    consent_max_age_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    # Canadian law lets some processing rest on implied consent; TCF Canada carries it apart
    # from express consent. Off by default: a purpose here is consent-based unless the operator
    # has judged that implied consent is reasonable for it.
    ca_implied_consent: CaImpliedConsent = CaImpliedConsent.IGNORE

    @property
    def consent_max_age(self) -> timedelta | None:
        """:attr:`consent_max_age_days` as a duration."""
        days = self.consent_max_age_days
        return None if days is None else timedelta(days=days)


class PurposesPolicy(_Frozen):
    """``policies/purposes.yaml``."""

    version: int = Field(ge=1, le=1)
    tcf: TcfSettings = Field(default_factory=TcfSettings)
    purposes: dict[Annotated[str, Field(pattern=_NAME)], Purpose] = Field(min_length=1)

    def get(self, purpose_id: str) -> Purpose | None:
        """The purpose named ``purpose_id``, or ``None``."""
        return self.purposes.get(purpose_id)

    @property
    def ids(self) -> tuple[str, ...]:
        """Every purpose id, sorted."""
        return tuple(sorted(self.purposes))


def load_purposes_policy(path: Path) -> PurposesPolicy:
    """Load and validate ``purposes.yaml``; any problem raises ``PolicyFileError``."""
    return load_policy_file(path, PurposesPolicy)


def check_purposes(
    purposes: PurposesPolicy, facts: FactsPolicy, identity: IdentityPolicy, file: str
) -> None:
    """Cross-check ``purposes.yaml`` against the other policy files (see the module doc)."""
    try:
        _check(purposes, facts, identity)
    except PolicyFieldProblem as exc:
        raise PolicyFileError(file, exc.field, exc.message) from None


def _check(purposes: PurposesPolicy, facts: FactsPolicy, identity: IdentityPolicy) -> None:
    for pid, purpose in purposes.purposes.items():
        for category in purpose.categories:
            if category not in facts.categories:
                raise PolicyFieldProblem(
                    f"purposes.{pid}.categories.{category}",
                    "unknown category; declared in categories.yaml: "
                    + ", ".join(sorted(facts.categories)),
                )
        for index, type_name in enumerate(purpose.activation):
            type_policy = identity.types.get(type_name)
            if type_policy is None:
                raise PolicyFieldProblem(
                    f"purposes.{pid}.activation.{index}",
                    f"unknown identifier type {type_name!r}",
                )
            if not type_policy.keep_raw:
                raise PolicyFieldProblem(
                    f"purposes.{pid}.activation.{index}",
                    f"{type_name!r} is not kept (keep_raw: false in identity.yaml), so it "
                    "cannot be activated",
                )
        for index, name in enumerate(purpose.features):
            attribute = facts.attributes.get(name)
            if attribute is None:
                raise PolicyFieldProblem(
                    f"purposes.{pid}.features.{index}", f"unknown attribute {name!r}"
                )
            if attribute.category not in purpose.categories:
                raise PolicyFieldProblem(
                    f"purposes.{pid}.features.{index}",
                    f"{name!r} is in category {attribute.category!r}, which this purpose "
                    "may not read",
                )
