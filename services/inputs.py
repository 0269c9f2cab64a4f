"""The input shapes of the ingest use cases: an identify event, a batch of them.

Shared by every ingest path (the HTTP API, bulk files, a stream consumer) so that each accepts
exactly the same input. Raw identifier values arrive here and are hashed by the use case; these
models only check structure, sizes and patterns (the identity policy checks the values).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import (
    AfterValidator,
    AllowInfNan,
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
# Timestamps before year 1000 are typos or probes (and four-digit years are what every store
# writes and sorts as text); after 9998 a time zone shift leaves datetime's range.
MIN_YEAR, MAX_YEAR = 1000, 9998


def in_range(value: datetime | None) -> datetime | None:
    """``value`` if its year (in UTC) is within [MIN_YEAR, MAX_YEAR]; ValueError otherwise."""
    if value is None:
        return None
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"the year must be between {MIN_YEAR} and {MAX_YEAR}")
    if not MIN_YEAR <= value.astimezone(UTC).year <= MAX_YEAR:
        raise ValueError(f"the year (in UTC) must be between {MIN_YEAR} and {MAX_YEAR}")
    return value


# Every timestamp a caller sends: RFC 3339 with an offset, year 1000-9998.
Timestamp = Annotated[AwareDatetime, AfterValidator(in_range)]

Source = Annotated[
    str,
    Field(pattern=SOURCE_PATTERN, description="Where the event came from, e.g. `web`, `crm:sf`."),
]


class StrictModel(BaseModel):
    """Frozen, unknown fields refused: the base of every request and response schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class IdentifierIn(StrictModel):
    """One identifier as sent by a caller. ``value`` is raw and is hashed on arrival."""

    type: Annotated[str, Field(pattern=TYPE_PATTERN, examples=["email"])]
    # A hard cap for every type; policies/identity.yaml sets tighter per-type limits.
    value: Annotated[str, Field(min_length=1, max_length=4096, examples=["ann@shop.example.de"])]


NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
# Printable ASCII: a sender's event id (Segment's messageId, a UUID, a database key).
MessageId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[!-~]+$")]
Text = Annotated[str, StringConstraints(max_length=4096)]
# Strict types: "5" stays a string and 5 an integer; the policy decides what a key may hold.
# Finite only: Python's json module reads NaN and Infinity, which are not JSON and could not be
# written back out in a JSON response.
FiniteFloat = Annotated[StrictFloat, AllowInfNan(False)]
Scalar = StrictBool | StrictInt | FiniteFloat | Text
TraitValue = Scalar | Annotated[list[Text], Field(max_length=50)]


class EventIn(StrictModel):
    """Something the person did. Its properties are typed by policies/categories.yaml."""

    name: Annotated[Name, Field(examples=["purchase"])]
    timestamp: Timestamp | None = Field(default=None, description="Default: the event time.")
    properties: Annotated[dict[Name, Scalar], Field(max_length=50)] = Field(default_factory=dict)


class IdentifyRequest(StrictModel):
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
    timestamp: Timestamp | None = Field(
        default=None,
        description="When the identifiers were seen (RFC 3339 with offset). Default: now.",
    )
    message_id: MessageId | None = Field(
        default=None,
        description="The sender's id for this event: an event whose (source, message_id) was "
        "applied before (within the dedup window, 7 days) is answered `duplicate` and changes "
        "nothing, so a retry after a lost response is harmless. Stored only as a keyed digest.",
        examples=["evt-2026-03-01-0001"],
    )

    @field_validator("timestamp")
    @classmethod
    def _not_in_future(cls, value: datetime | None) -> datetime | None:
        # Clock skew of a day is tolerated; a later time is a bug that would pin last_seen.
        if value is not None and value > datetime.now(UTC) + MAX_CLOCK_SKEW:
            raise ValueError("timestamp is more than 24 hours in the future")
        return value


class IngestRequest(StrictModel):
    """A batch of events, applied in one transaction (all or nothing on invalid input)."""

    events: Annotated[list[IdentifyRequest], Field(min_length=1, max_length=10_000)]


# A location segment is echoed only when it is an array index, a name of the schema's shape
# (field, header, policy key) or pydantic's ``[key]`` marker. Anything else is a key the caller
# sent that the schema refused, and a key can be a value: ``{"traits": {"ann@x.de": 1}}``.
_ECHOABLE_SEGMENT = re.compile(r"[a-z_][a-z0-9_-]{0,63}|\[key\]")


def pointer_from_location(location: Iterable[int | str]) -> str:
    """An RFC 6901 JSON pointer for a pydantic error location, ending before an unsafe segment.

    A segment that could be a value (a key the caller chose) is never echoed; the pointer then
    names the object that holds it, which is still a real pointer into the request (a ``*``
    stand-in is not: no client can resolve it).
    """
    parts: list[str] = []
    for segment in location:
        if segment == "body" and not parts:
            continue
        if not (isinstance(segment, int) or _ECHOABLE_SEGMENT.fullmatch(segment)):
            break
        parts.append(str(segment))
    return "#/" + "/".join(parts) if parts else "#"


def withheld_member(location: Iterable[int | str]) -> bool:
    """Whether :func:`pointer_from_location` stopped short of ``location``'s last segment."""
    segments = list(location)
    if segments[:1] == ["body"]:
        segments = segments[1:]
    return any(not (isinstance(s, int) or _ECHOABLE_SEGMENT.fullmatch(s)) for s in segments)
