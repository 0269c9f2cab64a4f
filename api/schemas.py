"""HTTP request and response schemas (kept apart from the domain types in ``identity.model``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    field_validator,
)

SOURCE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$"
TYPE_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
MAX_CLOCK_SKEW = timedelta(hours=24)

Source = Annotated[
    str,
    Field(pattern=SOURCE_PATTERN, description="Where the event came from, e.g. `web`, `crm:sf`."),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IdentifierIn(_Strict):
    """One identifier as sent by a caller. ``value`` is raw and is hashed on arrival."""

    type: Annotated[str, Field(pattern=TYPE_PATTERN, examples=["email"])]
    # A hard cap for every type; policies/identity.yaml sets tighter per-type limits.
    value: Annotated[str, Field(min_length=1, max_length=4096, examples=["ann@shop.example.de"])]


NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Text = Annotated[str, StringConstraints(max_length=4096)]
# Strict types: "5" stays a string and 5 an integer; the policy decides what a key may hold.
Scalar = StrictBool | StrictInt | StrictFloat | Text
TraitValue = Scalar | Annotated[list[Text], Field(max_length=50)]


class EventIn(_Strict):
    """Something the person did. Its properties are typed by policies/categories.yaml."""

    name: Annotated[Name, Field(examples=["purchase"])]
    timestamp: AwareDatetime | None = Field(default=None, description="Default: the event time.")
    properties: Annotated[dict[Name, Scalar], Field(max_length=50)] = Field(default_factory=dict)


class IdentifyRequest(_Strict):
    """Identifiers seen together in one event, optionally with traits and events."""

    identifiers: Annotated[list[IdentifierIn], Field(min_length=1, max_length=200)]
    source: Source
    traits: Annotated[dict[Name, TraitValue], Field(max_length=100)] | None = Field(
        default=None,
        description="Attributes of the person (keys from policies/categories.yaml), "
        "anchored to the highest-priority identifier of the event; encrypted at rest.",
        examples=[{"city": "Berlin", "age_band": "25-34", "visit_count": 3}],
    )
    events: Annotated[list[EventIn], Field(max_length=50)] = Field(default_factory=list)
    timestamp: AwareDatetime | None = Field(
        default=None,
        description="When the identifiers were seen (RFC 3339 with offset). Default: now.",
    )

    @field_validator("timestamp")
    @classmethod
    def _not_in_future(cls, value: datetime | None) -> datetime | None:
        # Clock skew of a day is tolerated; a later time is a bug that would pin last_seen.
        if value is not None and value > datetime.now(UTC) + MAX_CLOCK_SKEW:
            raise ValueError("timestamp is more than 24 hours in the future")
        return value


class IngestRequest(_Strict):
    """A batch of events, applied in one transaction (all or nothing on invalid input)."""

    events: Annotated[list[IdentifyRequest], Field(min_length=1, max_length=10_000)]


class RefusalOut(_Strict):
    """An identifier of the event that was not linked."""

    pointer: str = Field(description="JSON pointer of the refused identifier in the request.")
    type: str
    reason: str = Field(description="blocked_value | blocked_pattern | limit_exceeded")
    detail: str


class FactsOut(_Strict):
    """What became of the traits and events of a request."""

    stored: int = Field(description="Stored encrypted (redacted first where the policy says).")
    quarantined: int = Field(description="Stored encrypted, invisible to reads until released.")
    dropped: int = Field(description="Not stored: no identifier of the event could be linked.")


class IdentifyResponse(_Strict):
    """What one event did. No person id: use /v1/resolve with the `resolve` scope."""

    outcome: str = Field(description="created | linked | merged | unchanged | refused")
    new_identifiers: int
    refused: list[RefusalOut]
    facts: FactsOut


class IngestResult(IdentifyResponse):
    """The result of one event of a batch."""

    index: int


class IngestResponse(_Strict):
    """What a batch did, in total and per event."""

    events: int
    outcomes: dict[str, int]
    refused_identifiers: int
    results: list[IngestResult]


class ResolveRequest(_Strict):
    """One identifier to resolve."""

    identifier: IdentifierIn


class ResolveResponse(_Strict):
    """The opaque person id only; no data about the person."""

    person_id: str


class PairRequest(_Strict):
    """Two identifiers (for explain and unlink)."""

    a: IdentifierIn
    b: IdentifierIn


class HopOut(_Strict):
    """One link on the path: opaque node ids and types only, never values."""

    from_node: str
    from_type: str
    to_node: str
    to_type: str
    sources: list[str]
    first_linked_at: datetime
    last_linked_at: datetime


class ExplainResponse(_Strict):
    """Whether and how two identifiers are linked."""

    linked: bool
    person_id: str | None
    hops: list[HopOut]


class UnlinkResponse(_Strict):
    """What unlink did."""

    removed_links: int
    split: bool
    person_id_a: str
    person_id_b: str


class HealthResponse(_Strict):
    """Liveness/readiness."""

    status: str
