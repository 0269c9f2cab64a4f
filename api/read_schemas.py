"""HTTP schemas of the purpose-bound reads (profiles, audiences, features).

Kept apart from ``api/schemas.py`` (ingest) and from the domain types in ``privacy.access.reads``
and
``privacy.access.audiences``; the converters at the bottom translate between them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AllowInfNan,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)

from privacy.access.audiences import (
    MAX_IN_VALUES,
    MAX_RULES,
    AttributeOp,
    AttributeRule,
    Audience,
    AudienceRules,
    EventRule,
)
from privacy.access.reads import Profile
from services.inputs import StrictModel

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
Scalar = StrictBool | StrictInt | Annotated[StrictFloat, AllowInfNan(False)] | StrictStr


class AttributeRuleIn(StrictModel):
    """A predicate on an attribute's latest readable value."""

    attribute: Annotated[str, Field(pattern=NAME_PATTERN, examples=["city"])]
    op: AttributeOp
    value: (
        Annotated[Scalar, Field(examples=["Lisbon"])]
        | Annotated[list[Scalar], Field(min_length=1, max_length=MAX_IN_VALUES)]
        | None
    ) = None


class EventRuleIn(StrictModel):
    """At least ``min_count`` events named ``event`` in the last ``within_days`` days."""

    event: Annotated[str, Field(pattern=NAME_PATTERN, examples=["purchase"])]
    within_days: Annotated[int, Field(ge=1, le=3650, examples=[30])]
    min_count: Annotated[int, Field(ge=1, le=1_000_000, examples=[2])] = 1


class AudienceRulesIn(StrictModel):
    """Every attribute and event rule must hold, and one of ``any_of`` (if given)."""

    attributes: Annotated[list[AttributeRuleIn], Field(max_length=MAX_RULES)] = Field(default=[])
    events: Annotated[list[EventRuleIn], Field(max_length=MAX_RULES)] = Field(default=[])
    any_of: Annotated[list[AttributeRuleIn], Field(max_length=MAX_RULES)] = Field(default=[])

    def to_domain(self) -> AudienceRules:
        """The domain form."""
        return AudienceRules(
            attributes=tuple(_attribute(r) for r in self.attributes),
            events=tuple(EventRule(r.event, r.within_days, r.min_count) for r in self.events),
            any_of=tuple(_attribute(r) for r in self.any_of),
        )


def _attribute(rule: AttributeRuleIn) -> AttributeRule:
    value = tuple(rule.value) if isinstance(rule.value, list) else rule.value
    return AttributeRule(rule.attribute, rule.op, value)


class AudienceCreate(StrictModel):
    """``POST /v1/audiences``: a rule segment for one purpose."""

    name: Annotated[str, Field(min_length=1, max_length=100, examples=["lisbon repeat buyers"])]
    purpose: Annotated[str, Field(max_length=64, examples=["ad_targeting"])]
    rules: AudienceRulesIn


class AudienceOut(StrictModel):
    """A stored audience definition."""

    id: str
    name: str
    purpose: str
    rules: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, audience: Audience) -> AudienceOut:
        """From the domain type."""
        return cls(
            id=audience.audience_id,
            name=audience.name,
            purpose=audience.purpose,
            rules=audience.rules.to_json(),
            created_at=audience.created_at,
        )


class MembersOut(StrictModel):
    """One page of members; a page may be short, the end is ``next_cursor: null``."""

    audience_id: str
    purpose: str
    members: list[str] = Field(description="Person ids of members who pass the policy.")
    next_cursor: str | None
    scanned: int = Field(description="Persons examined for this page.")


class AttributeOut(StrictModel):
    """An attribute's latest readable value."""

    value: Any
    at: datetime


class EventOut(StrictModel):
    """One readable event."""

    name: str
    at: datetime
    properties: dict[str, Any]


class ConsentOut(StrictModel):
    """Why the read was allowed."""

    purpose: str
    lawful_basis: str
    reason: str
    decided_at: datetime | None


class ProfileOut(StrictModel):
    """What the purpose may see of one person."""

    person_id: str
    purpose: str
    attributes: dict[str, AttributeOut]
    events: list[EventOut]
    consent: ConsentOut

    @classmethod
    def of(cls, profile: Profile) -> ProfileOut:
        """From the domain type."""
        return cls(
            person_id=profile.person_id,
            purpose=profile.purpose,
            attributes={a.name: AttributeOut(value=a.value, at=a.at) for a in profile.attributes},
            events=[
                EventOut(name=e.name, at=e.at, properties=dict(e.properties))
                for e in profile.events
            ],
            consent=ConsentOut(
                purpose=profile.consent.purpose,
                lawful_basis=profile.consent.lawful_basis,
                reason=profile.consent.reason,
                decided_at=profile.consent.decided_at,
            ),
        )


class FeatureRowOut(StrictModel):
    """One person of the feature table."""

    pseudonym: str
    features: dict[str, Any]


class FeaturesOut(StrictModel):
    """One page of a feature table."""

    purpose: str
    columns: list[str]
    rows: list[FeatureRowOut]
    next_cursor: str | None
    pseudonym_key_id: str = Field(
        description="The hash key the pseudonyms derive from; it changes when that key rotates."
    )
