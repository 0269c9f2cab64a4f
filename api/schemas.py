"""HTTP request and response schemas (kept apart from the domain types in ``identity.model``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import Field, StrictBool, field_validator

from identity.model import EventOutcome
from services.inputs import (
    MAX_CLOCK_SKEW,
    EventIn,
    IdentifierIn,
    IdentifyRequest,
    IngestRequest,
    Name,
    Source,
    StrictModel,
    Timestamp,
)

__all__ = ["EventIn", "IdentifierIn", "IdentifyRequest", "IngestRequest"]


class RefusalOut(StrictModel):
    """An identifier of the event that was not linked."""

    pointer: str = Field(description="JSON pointer of the refused identifier in the request.")
    type: str
    reason: str = Field(
        description="blocked_value | blocked_pattern | limit_exceeded | suppressed (erased)"
    )
    detail: str


def refusals_out(outcome: EventOutcome, pointer: str) -> list[RefusalOut]:
    """The refused identifiers of one event, each located by a JSON pointer under ``pointer``
    (``#`` for a single event, ``#/events/<i>`` in a batch)."""
    return [
        RefusalOut(
            pointer=f"{pointer}/identifiers/{r.position}",
            type=r.hashed.type,
            reason=r.reason.value,
            detail=r.detail,
        )
        for r in outcome.refusals
    ]


class FactsOut(StrictModel):
    """What became of the traits and events of a request."""

    stored: int = Field(description="Stored encrypted (redacted first where the policy says).")
    quarantined: int = Field(description="Stored encrypted, invisible to reads until released.")
    dropped: int = Field(description="Not stored: no identifier of the event could be linked.")


class ConsentsOut(StrictModel):
    """Consent records an ingest request wrote (only with `Sec-GPC: 1`: GPC opt-outs)."""

    recorded: int = Field(description="Consent records stored for the event's person.")
    dropped: int = Field(description="Not stored: no identifier of the event could be linked.")


class IdentifyResponse(StrictModel):
    """What one event did. No person id: use /v1/resolve with the `resolve` scope."""

    outcome: str = Field(
        description="created | linked | merged | unchanged | refused | duplicate (message_id seen)"
    )
    new_identifiers: int
    refused: list[RefusalOut]
    facts: FactsOut
    consents: ConsentsOut | None = Field(
        default=None, description="Present when the request carried `Sec-GPC: 1`."
    )


class IngestResult(IdentifyResponse):
    """The result of one event of a batch."""

    index: int


class IngestResponse(StrictModel):
    """What a batch did, in total and per event."""

    events: int
    outcomes: dict[str, int]
    refused_identifiers: int
    results: list[IngestResult]


class ResolveRequest(StrictModel):
    """One identifier to resolve."""

    identifier: IdentifierIn


class ResolveResponse(StrictModel):
    """The opaque person id only; no data about the person."""

    person_id: str


class PairRequest(StrictModel):
    """Two identifiers (for explain and unlink)."""

    a: IdentifierIn
    b: IdentifierIn


class HopOut(StrictModel):
    """One link on the path: opaque node ids and types only, never values."""

    from_node: str
    from_type: str
    to_node: str
    to_type: str
    sources: list[str]
    first_linked_at: datetime
    last_linked_at: datetime


class ExplainResponse(StrictModel):
    """Whether and how two identifiers are linked."""

    linked: bool
    person_id: str | None
    hops: list[HopOut]


class UnlinkResponse(StrictModel):
    """What unlink did."""

    removed_links: int
    split: bool
    person_id_a: str
    person_id_b: str


class HealthResponse(StrictModel):
    """Liveness/readiness."""

    status: str


# -- consent signals ---------------------------------------------------------------------------

MAX_CONSENT_STRING = 65_536


def _not_in_future(value: datetime | None) -> datetime | None:
    if value is not None and value > datetime.now(UTC) + MAX_CLOCK_SKEW:
        raise ValueError("timestamp is more than 24 hours in the future")
    return value


class ConsentRequest(StrictModel):
    """Consent signals for the person the identifiers resolve to (``POST /v1/consent``)."""

    identifiers: Annotated[list[IdentifierIn], Field(min_length=1, max_length=200)]
    source: Source = "api"
    decisions: Annotated[dict[Name, StrictBool], Field(max_length=64)] = Field(
        default_factory=dict,
        description="Direct decisions, {purpose: granted}; purposes from policies/purposes.yaml.",
        examples=[{"marketing_email": True, "analytics": False}],
    )
    tcf: Annotated[str, Field(min_length=1, max_length=MAX_CONSENT_STRING)] | None = Field(
        default=None, description="An IAB TCF v2.2 TC string; decided at its LastUpdated."
    )
    gpp: Annotated[str, Field(min_length=1, max_length=MAX_CONSENT_STRING)] | None = Field(
        default=None,
        description="An IAB GPP string (tcfeuv2, uspv1, usnat and US state sections apply).",
    )
    timestamp: Timestamp | None = Field(
        default=None,
        description="When the person decided (decisions, GPC, GPP usnat). Default: now. Send it "
        "when a request may be resent: the same decision at the same time changes nothing.",
    )

    @field_validator("timestamp")
    @classmethod
    def _not_in_future(cls, value: datetime | None) -> datetime | None:
        return _not_in_future(value)


class ConsentRecordOut(StrictModel):
    """One consent record written."""

    purpose: str
    granted: bool
    signal: str = Field(description="direct | tcf | gpp | gpc | webhook")
    decided_at: datetime
    lawful_basis: str


class GppSectionOut(StrictModel):
    """A GPP section idgraph kept only raw (not applied)."""

    id: int
    name: str | None = Field(description="Registered section name; null if unknown.")
    reason: str = Field(
        description="Why it was not applied: deprecated_section (tcfeuv1, refused on purpose), "
        "not_implemented (tcfcav1) or unknown_section."
    )


class GppOut(StrictModel):
    """What became of a GPP string's sections."""

    applied: list[str] = Field(
        description="Sections that were applied: tcfeuv2, uspv1, usnat, US states."
    )
    not_applied: list[GppSectionOut]


class ConsentResponse(StrictModel):
    """What a consent request wrote. ``person_id`` only for keys with the `resolve` scope."""

    outcome: str = Field(
        description="created | linked | merged | unchanged | refused | duplicate (message_id seen)"
    )
    person_id: str | None = None
    new_identifiers: int
    refused: list[RefusalOut]
    recorded: list[ConsentRecordOut]
    dropped: int = Field(description="Records not stored: no identifier could be linked.")
    gpp: GppOut | None = None


class WebhookConsentResponse(StrictModel):
    """What a consent webhook wrote (no person id: the sender is not an API client)."""

    webhook_id: str
    outcome: str | None = Field(
        default=None, description="As for /v1/consent; null when the message was ignored."
    )
    recorded: list[ConsentRecordOut] = Field(default_factory=list)
    dropped: int = 0
    gpp: GppOut | None = None
    ignored: str | None = Field(default=None, description="Why nothing was applied, if so.")
    ignored_purposes: int = Field(default=0, description="CMP purposes without a mapping.")
