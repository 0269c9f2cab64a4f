"""Plain-language explanations of the policy engine's reason codes, for operators."""

from __future__ import annotations

from typing import Final

REASONS: Final[dict[str, str]] = {
    "consent_granted": "The person's latest decision for this purpose is a grant.",
    "consent_denied": "The person's latest decision for this purpose is a denial or opt-out.",
    "consent_tie_denied": "A grant and a denial carry the same latest time; a tie denies.",
    "default_grant": "No record for this purpose; the purpose defaults to allowed.",
    "no_consent": "No consent record for this purpose, and the purpose defaults to deny.",
    "basis_without_consent": "The lawful basis (contract or legal obligation) needs no consent.",
    "objected": "The person objected (Art. 21); only withdrawing the objection lifts it.",
    "restricted": "Processing is restricted (Art. 18) and the purpose is not exempt.",
    "unknown_purpose": "No such purpose in policies/purposes.yaml.",
    "purpose_not_in_scope": "The reader's scope does not list this purpose.",
    "no_such_person": "No such person (erased, or never ingested).",
    "data_keys_destroyed": "The person's data keys were destroyed (crypto-shredded): "
    "nothing of theirs is readable.",
    "allowed": "Allowed.",
    "category_not_allowed": "The purpose does not read this data category.",
    "past_retention": "Older than the category's retention for this purpose.",
    "read_denied": "Withheld because the read as a whole is denied.",
    "not_activatable": "The purpose does not activate this identifier type.",
}


def explain(reason: str) -> str:
    """The sentence for ``reason`` (the code itself when it has none)."""
    return REASONS.get(reason, reason)
