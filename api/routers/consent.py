"""Consent signals: ``POST /v1/consent`` (API key) and ``POST /v1/webhooks/consent/{source}``
(Standard Webhooks signature)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from api.auth import Scope
from api.consent import (
    GpcHeader,
    gpc_requested,
    gpp_out,
    ingest_and_audit,
    normalize_mapped,
    records_out,
)
from api.deps import AppContainer, AppMetrics, ConsentKey, RawBody
from api.problems import JSON_BODY_PROBLEMS, PROBLEM_JSON
from api.schemas import ConsentRequest, ConsentResponse, RefusalOut, WebhookConsentResponse
from identity.errors import BatchValidationError, InputLimitError, InvalidFieldError
from identity.identifiers import NormalizedIdentifier
from identity.intake import normalize_all
from identity.model import IdentityEvent
from privacy.audit import api_key_actor
from privacy.consent.recording import webhook_actor
from privacy.consent.signals import ConsentSignals, Translation, signal_digest

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


def _collect(
    errors: list[InvalidFieldError], exc: InvalidFieldError | BatchValidationError
) -> None:
    errors.extend(exc.errors if isinstance(exc, BatchValidationError) else [exc])


@router.post(
    "/consent",
    response_model=ConsentResponse,
    response_model_exclude_none=True,
    responses={**CONSENT_PROBLEMS, **JSON_BODY_PROBLEMS},
)
def record_consent(
    body: ConsentRequest,
    raw: RawBody,
    container: AppContainer,
    metrics: AppMetrics,
    key: ConsentKey,
    sec_gpc: GpcHeader = None,
) -> ConsentResponse:
    """Record consent signals for the person the identifiers resolve to (scope `consent`).

    Any of `decisions`, `tcf`, `gpp`, and the `Sec-GPC: 1` header. Identifiers are linked as by
    `identify`, and the records are stored with them in one transaction; each stored record
    gets a `consent.recorded` audit entry. `person_id` is returned to keys that may resolve.
    """
    now = datetime.now(UTC)
    settings = container.settings
    errors: list[InvalidFieldError] = []
    identifiers: tuple[NormalizedIdentifier, ...] = ()
    translation = Translation(())
    if len(body.identifiers) > settings.max_identifiers_per_event:
        raise InputLimitError(
            "#/identifiers",
            f"at most {settings.max_identifiers_per_event} identifiers per event "
            "(IDGRAPH_MAX_IDENTIFIERS_PER_EVENT)",
        )
    try:
        identifiers = normalize_all(
            ((i.type, i.value) for i in body.identifiers),
            container.identity_policy,
            settings.default_region,
            "#/identifiers",
        )
    except BatchValidationError as exc:
        _collect(errors, exc)
    at = body.timestamp or now
    signals = ConsentSignals(
        at=at,
        body_digest=signal_digest(raw),
        decisions=body.decisions,
        tc_string=body.tcf,
        gpp_string=body.gpp,
        gpc=gpc_requested(sec_gpc),
    )
    try:
        translation = container.consent_signals.translate(signals, now)
    except (BatchValidationError, InvalidFieldError) as exc:
        _collect(errors, exc)
    if errors:
        raise BatchValidationError(errors)
    event = IdentityEvent(identifiers, body.source, at, consents=translation.consents)
    (outcome,) = ingest_and_audit(container, metrics, [event], api_key_actor(key.key_id))
    return ConsentResponse(
        outcome=outcome.outcome.value,
        person_id=outcome.person_id if key.allows(Scope.RESOLVE) else None,
        new_identifiers=outcome.new_identifiers,
        refused=[
            RefusalOut(
                pointer=f"#/identifiers/{r.position}",
                type=r.hashed.type,
                reason=r.reason.value,
                detail=r.detail,
            )
            for r in outcome.refusals
        ],
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
    source: str,
    request: Request,
    raw: RawBody,
    container: AppContainer,
    metrics: AppMetrics,
) -> WebhookConsentResponse:
    """A consent change from a CMP, authenticated by its Standard Webhooks signature.

    No API key: each configured source has its own `whsec_` secrets. The `webhook-id` is the
    idempotency key: a second delivery of an accepted id is refused with 401 and writes nothing.
    The payload format (generic or Didomi) is set per source; see docs/consent-signals.md.
    """
    webhooks = container.webhooks
    # 1. Signature first: nothing about the body is looked at before it is authenticated.
    verified = webhooks.verify(source, request.headers, raw)
    # 2. Map and validate before the id is used up: a payload that cannot be applied is refused
    #    with 422 and the sender's retry gets the same answer (not a misleading "replayed").
    mapped = webhooks.mapper(source).map(raw)
    if mapped.signals is None:
        webhooks.claim(source, verified)
        return WebhookConsentResponse(
            webhook_id=verified.webhook_id,
            ignored=mapped.ignored,
            ignored_purposes=mapped.ignored_purposes,
        )
    errors: list[InvalidFieldError] = []
    identifiers: tuple[NormalizedIdentifier, ...] = ()
    translation = Translation(())
    try:
        identifiers = normalize_mapped(
            mapped.identifiers, container.identity_policy, container.settings.default_region
        )
    except BatchValidationError as exc:
        _collect(errors, exc)
    try:
        translation = container.consent_signals.translate(mapped.signals, datetime.now(UTC))
    except (BatchValidationError, InvalidFieldError) as exc:
        _collect(errors, exc)
    if errors:
        raise BatchValidationError(errors)
    event = IdentityEvent(
        identifiers, f"cmp:{source}", mapped.signals.at, consents=translation.consents
    )
    # 3. Claim the id (401 "replayed" if taken), 4. write; on any failure give the id back so
    #    the sender's retry is applied: a retry records the same decisions at the same time.
    webhooks.claim(source, verified)
    try:
        (outcome,) = ingest_and_audit(container, metrics, [event], webhook_actor(source))
    except BaseException:
        webhooks.release(source, verified)
        raise
    return WebhookConsentResponse(
        webhook_id=verified.webhook_id,
        outcome=outcome.outcome.value,
        recorded=records_out(outcome, translation.consents),
        dropped=outcome.consents_dropped,
        gpp=gpp_out(translation.gpp),
        ignored_purposes=mapped.ignored_purposes,
    )
