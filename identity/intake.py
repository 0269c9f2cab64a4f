"""Turning raw identifier input into normalized identifiers, with precise error locations.

Shared by the HTTP API and the bulk file ingest so both accept and refuse exactly the same
input. Errors carry a JSON pointer to the failing field and never the value.
"""

from __future__ import annotations

from collections.abc import Iterable

from identity.errors import BatchValidationError, InvalidFieldError, InvalidIdentifierError
from identity.identifiers import NormalizedIdentifier
from identity.policy import IdentityPolicy


def normalize_all(
    pairs: Iterable[tuple[str, str]],
    policy: IdentityPolicy,
    region: str | None,
    pointer: str,
) -> tuple[NormalizedIdentifier, ...]:
    """Normalize every ``(type, value)``; collect all errors, located under ``pointer``.

    ``pointer`` is the JSON pointer of the list (e.g. ``#/events/3/identifiers``); an error on
    its second item is reported at ``#/events/3/identifiers/1/value`` (or ``/type``).
    """
    normalized: list[NormalizedIdentifier] = []
    errors: list[InvalidFieldError] = []
    for index, (identifier_type, value) in enumerate(pairs):
        try:
            normalized.append(policy.normalize(identifier_type, value, region))
        except InvalidIdentifierError as exc:
            field = "type" if exc.reason == "unknown_type" else "value"
            errors.append(exc.at(f"{pointer}/{index}/{field}"))
    if errors:
        raise BatchValidationError(errors)
    return tuple(normalized)
