"""Consent signals: ``POST /v1/consent`` (API key) and ``POST /v1/webhooks/consent/{source}``
(Standard Webhooks signature)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api.consent import GpcHeader, gpc_requested, gpp_out, records_out
from api.deps import ConsentKey, Ingest, RawBody
from api.problems import JSON_BODY_PROBLEMS, PROBLEM_JSON
from api.schemas import (
    ConsentRequest,
    ConsentResponse,
    WebhookConsentResponse,
    refusals_out,
)
from privacy.access.api_keys import Scope
from privacy.auditing.log import api_key_actor
from services.ingest import ConsentSubmission

router = APIRouter(prefix="/v1", tags=["consent"])


def _problems(statuses: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"description": text, "content": {PROBLEM_JSON: {}}}
        for status, text in statuses.items()
    }


CONSENT_PROBLEMS = _problems(
    {
        400: "Malformed JSON",
        401: "Missing or unknown API key",
        403: "API key lacks the `consent` scope",
        413: "Body too large",
        422: "Invalid input (unknown purpose, undecodable TC/GPP string); nothing was written",
        503: "Store unavailable, or the consent was stored but its audit entry was not",
    }
)
WEBHOOK_PROBLEMS = _problems(
    {
        401: "Signature refused: missing/malformed headers, stale or future timestamp, no valid "
        "signature (also for an unknown source), or a replayed webhook-id; nothing was written",
        413: "Body too large",
        422: "Signed payload that cannot be applied; nothing was written, the id is not used up",
        503: "Store unavailable, or the consent was stored but its audit entry was not",
    }
)


@router.post(
    "/consent",
    response_model=ConsentResponse,
    response_model_exclude_none=True,
    responses={**CONSENT_PROBLEMS, **JSON_BODY_PROBLEMS},
)
def record_consent(
    body: ConsentRequest,
    raw: RawBody,
    service: Ingest,
    key: ConsentKey,
    sec_gpc: GpcHeader = None,
) -> ConsentResponse:
    """Record consent signals for the person the identifiers resolve to (scope `consent`).

    Any of `decisions`, `tcf`, `gpp`, and the `Sec-GPC: 1` header. Identifiers are linked as by
    `identify`, and the records are stored with them in one transaction; each stored record
    gets a `consent.recorded` audit entry. `person_id` is returned to keys that may resolve.
    """
    submission = ConsentSubmission(
        identifiers=[(i.type, i.value) for i in body.identifiers],
        source=body.source,
        proof=raw,
        at=body.timestamp,
        decisions=body.decisions,
        tc_string=body.tcf,
        gpp_string=body.gpp,
        gpc=gpc_requested(sec_gpc),
    )
    result = service.record_consent(submission, actor=api_key_actor(key.key_id))
    outcome, translation = result.outcome, result.translation
    return ConsentResponse(
        outcome=outcome.outcome.value,
        person_id=outcome.person_id if key.allows(Scope.RESOLVE) else None,
        new_identifiers=outcome.new_identifiers,
        refused=refusals_out(outcome, "#"),
        recorded=records_out(outcome, translation.consents),
        dropped=outcome.consents_dropped,
        gpp=gpp_out(translation.gpp),
    )


@router.post(
    "/webhooks/consent/{source}",
    response_model=WebhookConsentResponse,
    response_model_exclude_none=True,
    responses=WEBHOOK_PROBLEMS,
)
def consent_webhook(
    source: str, request: Request, raw: RawBody, service: Ingest
) -> WebhookConsentResponse:
    """A consent change from a CMP, authenticated by its Standard Webhooks signature.

    No API key: each configured source has its own `whsec_` secrets. The `webhook-id` is the
    idempotency key: a second delivery of an accepted id is refused with 401 and writes nothing.
    The payload format (generic or Didomi) is set per source; see docs/consent-signals.md.
    """
    result = service.consent_webhook(source, request.headers, raw)
    if result.outcome is None or result.translation is None:
        return WebhookConsentResponse(
            webhook_id=result.webhook_id,
            ignored=result.payload.ignored,
            ignored_purposes=result.payload.ignored_purposes,
        )
    return WebhookConsentResponse(
        webhook_id=result.webhook_id,
        outcome=result.outcome.outcome.value,
        recorded=records_out(result.outcome, result.translation.consents),
        dropped=result.outcome.consents_dropped,
        gpp=gpp_out(result.translation.gpp),
        ignored_purposes=result.payload.ignored_purposes,
    )
