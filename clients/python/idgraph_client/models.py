"""The shapes of the API's answers, as ``TypedDict``s (what ``response.json()`` holds).

Kept by hand next to the server's schemas (``api/schemas.py``, ``api/read_schemas.py``); the
client's tests run against the live app, so a renamed member shows up there.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict


class Identifier(TypedDict):
    """An identifier as sent: ``{"type": "email", "value": "ann@shop.de"}``."""

    type: str
    value: str


class Refusal(TypedDict):
    """An identifier that was not linked, and why (never its value)."""

    pointer: str
    type: str
    reason: str
    detail: str


class Facts(TypedDict):
    """What happened to the event's traits and events."""

    stored: int
    quarantined: int
    dropped: int


class Consents(TypedDict):
    """Consent records of the event (only when it carried a GPC signal)."""

    recorded: int
    dropped: int


Outcome = Literal["created", "linked", "merged", "unchanged", "refused", "duplicate"]


class IdentifyResult(TypedDict):
    """``POST /v1/identify``."""

    outcome: Outcome
    new_identifiers: int
    refused: list[Refusal]
    facts: Facts
    consents: NotRequired[Consents]


class IngestItem(IdentifyResult):
    """One event of a batch."""

    index: int


class IngestResult(TypedDict):
    """``POST /v1/ingest``."""

    events: int
    outcomes: dict[str, int]
    refused_identifiers: int
    results: list[IngestItem]


class Hop(TypedDict):
    """One link on the path between two identifiers."""

    from_node: str
    from_type: str
    to_node: str
    to_type: str
    sources: list[str]
    first_linked_at: str
    last_linked_at: str


class Explanation(TypedDict):
    """``POST /v1/links/explain``."""

    linked: bool
    person_id: str | None
    hops: list[Hop]


class UnlinkResult(TypedDict):
    """``POST /v1/links/unlink``."""

    removed_links: int
    split: bool
    person_id_a: str
    person_id_b: str


class ConsentRecord(TypedDict):
    """One stored consent decision."""

    purpose: str
    granted: bool
    signal: str
    decided_at: str
    lawful_basis: str


class ConsentResult(TypedDict):
    """``POST /v1/consent``."""

    outcome: str
    person_id: NotRequired[str | None]
    new_identifiers: int
    refused: list[Refusal]
    recorded: list[ConsentRecord]
    dropped: int
    gpp: NotRequired[dict[str, Any]]


class Audience(TypedDict):
    """A stored audience definition."""

    id: str
    name: str
    purpose: str
    rules: dict[str, Any]
    created_at: str


class FeatureRow(TypedDict):
    """One person's features under the consumer's pseudonym."""

    pseudonym: str
    features: dict[str, Any]


class Dsr(TypedDict, total=False):
    """A data-subject request's status (see the API docs for every member)."""

    request_id: str
    type: str
    status: str
    regulation: str
    due_at: str
    finished_at: str | None
    result: dict[str, Any]
