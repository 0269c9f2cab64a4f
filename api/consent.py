"""Recording consent from the API: one engine transaction, then the audit entries.

Shared by ``POST /v1/consent``, the consent webhooks and ``Sec-GPC: 1`` on identify/ingest, so
every consent change takes the same path: the event (identifiers + consent inputs) is ingested in
one store transaction, then one ``consent.recorded`` audit entry per stored record is appended
(see :mod:`privacy.consent.recording` for why in that order, and what a failed append means).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Annotated

import structlog
from fastapi import Header

from api.bootstrap import Container
from api.metrics import Metrics, StoreOperation
from api.schemas import ConsentRecordOut, GppOut, GppSectionOut
from identity.errors import BatchValidationError, InvalidIdentifierError, StoreUnavailableError
from identity.identifiers import NormalizedIdentifier
from identity.model import ConsentInput, EventOutcome, IdentityEvent
from identity.policy import IdentityPolicy
from privacy.consent.mappers import MappedIdentifier
from privacy.consent.recording import ConsentAuditError, consent_audit_drafts
from privacy.consent.signals import ConsentSignalTranslator, GppReport, signal_digest

log = structlog.get_logger("idgraph.consent")

GPC_HEADER = "Sec-GPC"
GpcHeader = Annotated[
    str | None,
    Header(
        alias=GPC_HEADER,
        description="Global Privacy Control: `1` records opt-outs for the purposes mapped to GPC.",
    ),
]


def gpc_requested(value: str | None) -> bool:
    """Whether a ``Sec-GPC`` header value asks for GPC: exactly ``1`` (the spec's only value)."""
    return value is not None and value.strip() == "1"


def with_gpc(
    event: IdentityEvent, translator: ConsentSignalTranslator, body: bytes
) -> IdentityEvent:
    """``event`` with GPC opt-outs added, decided at the event time.

    The proof is the digest of the request body that carried the header (the header itself is
    the same bytes for everyone, so it proves nothing on its own).
    """
    gpc = translator.gpc(event.occurred_at, signal_digest(body))
    return dataclasses.replace(event, consents=(*event.consents, *gpc))


def normalize_mapped(
    identifiers: Sequence[MappedIdentifier], policy: IdentityPolicy, region: str | None
) -> tuple[NormalizedIdentifier, ...]:
    """Normalize identifiers a webhook payload named; errors located at their own pointers."""
    normalized: list[NormalizedIdentifier] = []
    errors = []
    for item in identifiers:
        try:
            normalized.append(policy.normalize(item.type, item.value, region))
        except InvalidIdentifierError as exc:
            errors.append(exc.at(item.pointer))
    if errors:
        raise BatchValidationError(list(errors))
    return tuple(normalized)


def ingest_and_audit(
    container: Container, metrics: Metrics, events: list[IdentityEvent], actor: str
) -> list[EventOutcome]:
    """Ingest ``events`` in one transaction, then audit the consent records they stored."""
    with metrics.time_store(StoreOperation.INGEST):
        outcomes = container.engine.ingest(events)
    metrics.record_ingest(outcomes)
    audit_consents(container, actor, events, outcomes)
    return outcomes


def audit_consents(
    container: Container,
    actor: str,
    events: Sequence[IdentityEvent],
    outcomes: Sequence[EventOutcome],
) -> None:
    """Append one ``consent.recorded`` entry per stored consent record (after the commit).

    Raises :class:`ConsentAuditError` (503) when the append fails; the error log line
    ``consent_audit_missing`` then holds what the entries would have held (no personal data).
    """
    drafts = []
    for event, outcome in zip(events, outcomes, strict=True):
        if outcome.consents_recorded and outcome.person_id is not None:
            reference = container.audit.person_ref(outcome.person_id)
            drafts += consent_audit_drafts(actor, reference, event.source, event.consents)
    if not drafts:
        return
    try:
        container.audit.append(drafts)
    except StoreUnavailableError as exc:
        log.exception(
            "consent_audit_missing",
            error=type(exc).__name__,
            actor=actor,
            entries=[
                {
                    "purpose": d.purpose,
                    "person_ref": d.person_id,
                    "decision": d.decision,
                    "details": dict(d.details),
                }
                for d in drafts
            ],
        )
        raise ConsentAuditError(len(drafts)) from exc


def records_out(outcome: EventOutcome, consents: Sequence[ConsentInput]) -> list[ConsentRecordOut]:
    """The records an event stored (none when its identifiers were all refused)."""
    if not outcome.consents_recorded:
        return []
    return [
        ConsentRecordOut(
            purpose=c.purpose,
            granted=c.granted,
            signal=c.signal.value,
            decided_at=c.at,
            lawful_basis=c.lawful_basis,
        )
        for c in consents
    ]


def gpp_out(report: GppReport | None) -> GppOut | None:
    """The response's account of a GPP string's sections."""
    if report is None:
        return None
    return GppOut(
        applied=list(report.applied),
        not_applied=[
            GppSectionOut(id=section, name=report.section_name(section))
            for section in report.not_applied
        ],
    )
