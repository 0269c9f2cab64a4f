"""Audit entries for recorded consent, and what happens when they cannot be written.

Every consent record the graph store commits gets one audit entry (action
``consent.recorded``), appended right after the store commit, in the same request. The order is
deliberate: the store commit is the fact; an entry written first would claim a change that a
failed commit then never made. The price is a window in which the record exists without its
entry. When the append fails, the request answers 503 :class:`ConsentAuditError` (the records
*are* stored; the response says so) and the error log line ``consent_audit_missing`` carries
everything the entries would have held, so an operator can append them. Resending the request
with the same ``timestamp`` is harmless: the same decision at the same time changes no consent
state (latest wins by decision time), and the resent request writes the entries.

Entries hold no personal data: the person is referenced by :func:`privacy.auditing.log.person_ref`,
the proof is a digest, and the caller-chosen ``source`` is kept only if the log redaction filter
would not scrub it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from identity.errors import StoreUnavailableError
from identity.model import ConsentInput
from privacy.auditing.log import AuditDraft, AuditRef, DetailValue
from privacy.scanning.redaction import REDACTED, redact_text

CONSENT_RECORDED = "consent.recorded"


class ConsentAuditError(StoreUnavailableError):
    """Consent records were stored, but their audit entries could not be appended (503)."""

    code = "consent-audit-failed"

    def __init__(self, recorded: int) -> None:
        self.recorded = recorded
        super().__init__(
            f"{recorded} consent record(s) were stored, but their audit entries could not be "
            "written; resend the request with the same timestamp to write them (it changes no "
            "consent state)"
        )


def webhook_actor(source: str) -> str:
    """The audit actor for a signed webhook from a configured source."""
    return f"webhook:{source}"


def _safe(text: str) -> str:
    return text if redact_text(text) == text else REDACTED


def consent_audit_drafts(
    actor: str, reference: str, source: str, consents: Sequence[ConsentInput]
) -> list[AuditDraft]:
    """One ``consent.recorded`` entry per recorded consent of one person.

    ``decision`` is ``allow`` for a grant and ``deny`` for a denial or opt-out; ``details`` hold
    the signal, the lawful basis, the source (if it is not identifier-like), the proof digest and
    the decision time.
    """
    safe_source = _safe(source)
    drafts: list[AuditDraft] = []
    for consent in consents:
        details: dict[str, DetailValue] = {
            "signal": consent.signal,
            "lawful_basis": consent.lawful_basis,
            "source": safe_source,
            "proof": AuditRef(consent.proof),  # a SHA-256 digest: typed, not free text
            "decided_at": consent.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        drafts.append(
            AuditDraft(
                actor=actor,
                action=CONSENT_RECORDED,
                purpose=consent.purpose,
                person_id=reference,
                decision="allow" if consent.granted else "deny",
                reason=f"{consent.signal.value} {'grant' if consent.granted else 'denial'}",
                details=details,
            )
        )
    return drafts
