"""HTTP request and response schemas (kept apart from the domain types in ``identity.model``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from identity.model import EventOutcome
from services.inputs import (
    ConsentRequest,
    EventIn,
    IdentifierIn,
    IdentifyRequest,
    IngestBatch,
    IngestRequest,
    StrictModel,
)

__all__ = [
    "ConsentRequest",
    "EventIn",
    "IdentifierIn",
    "IdentifyRequest",
    "IngestBatch",
    "IngestRequest",
]


class RefusalOut(StrictModel):
    """An identifier of the event that was not linked."""

    pointer: str = Field(description="JSON pointer of the refused identifier in the request.")
    type: str
    reason: str = Field(
        description="blocked_value | blocked_pattern | limit_exceeded | suppressed (erased) | "
        "restricted | do_not_link (an operator unlinked it from the person) | shredded (its "
        "node's data key was crypto-shredded: it takes no new data)"
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
        description="created | linked | merged | unchanged | refused | duplicate (its "
        "`message_id` was applied before: nothing was done again)"
    )
    new_identifiers: int
    refused: list[RefusalOut]
    facts: FactsOut
    consents: ConsentsOut | None = Field(
        default=None, description="Present when the request carried `Sec-GPC: 1`."
    )
    deduplicated: bool | None = Field(
        default=None,
        description="`true` when the event's `message_id` was applied within the message "
        "window: an idempotent replay, answered with success and nothing written again.",
    )


class IngestResult(IdentifyResponse):
    """The result of one event of a batch."""

    index: int


class IngestResponse(StrictModel):
    """What a batch did, in total and per event."""

    events: int
    outcomes: dict[str, int]
    refused_identifiers: int = Field(
        description="Distinct identifiers refused, summed over the events: an identifier sent "
        "twice in one event and refused counts once (results[].refused lists each position)."
    )
    results: list[IngestResult]


class IngestAccepted(StrictModel):
    """A batch accepted with `Prefer: respond-async`: durably queued, applied later."""

    job_id: str = Field(description="Read the job at `Location` (`GET /v1/ingest/jobs/{job_id}`).")
    status: str = Field(description="`queued`")
    events: int


class IngestJob(StrictModel):
    """An asynchronous ingest job: `queued`, then `applied` (with per-event results, as the
    synchronous answer gives them) or `failed` (with the error's class)."""

    job_id: str
    status: str = Field(description="queued | applied | failed")
    events: int
    queued_at: datetime
    finished_at: datetime | None = None
    expires_at: datetime | None = Field(
        default=None,
        description="When the result is dropped (IDGRAPH_INGEST_JOB_RESULTS_HOURS after the "
        "job finished, 24 h by default); the job is then 404.",
    )
    outcomes: dict[str, int] | None = None
    refused_identifiers: int | None = None
    results: list[IngestResult] | None = None
    error: str | None = None


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


class DoNotLinkOut(StrictModel):
    """A do-not-link rule (recorded by unlink): opaque node ids and types only, never values."""

    rule_id: str
    node_a: str
    type_a: str
    node_b: str
    type_b: str
    created_at: datetime


class ExplainResponse(StrictModel):
    """Whether and how two identifiers are linked."""

    linked: bool
    person_id: str | None
    hops: list[HopOut]
    do_not_link: list[DoNotLinkOut] = Field(
        default_factory=list,
        description="When not linked: the do-not-link rules that keep the two persons apart "
        "(events naming both are refused with reason `do_not_link`).",
    )


class UnlinkResponse(StrictModel):
    """What unlink did."""

    removed_links: int
    split: bool
    person_id_a: str
    person_id_b: str
    rule_id: str | None = Field(
        default=None,
        description="The do-not-link rule now keeping the two apart (null when they are still "
        "one person through other links). `idgraph links rules` lists rules, "
        "`idgraph links allow` removes one.",
    )


class HealthResponse(StrictModel):
    """Liveness/readiness."""

    status: str


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
        description="created | linked | merged | unchanged | refused | duplicate (as for "
        "/v1/identify)"
    )
    person_id: str | None = None
    new_identifiers: int
    refused: list[RefusalOut]
    recorded: list[ConsentRecordOut]
    dropped: int = Field(description="Records not stored: no identifier could be linked.")
    gpp: GppOut | None = None
    deduplicated: bool | None = Field(
        default=None, description="`true` for a `message_id` applied before (as /v1/identify)."
    )


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
