"""The input shapes of the ingest use cases: an identify event, a batch of them.

Shared by every ingest path (the HTTP API, bulk files, a stream consumer) so that each accepts
exactly the same input. Raw identifier values arrive here and are hashed by the use case; these
models only check structure, sizes and patterns (the identity policy checks the values).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasChoices,
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


def not_in_future(value: datetime | None) -> datetime | None:
    """``value`` unless it is more than :data:`MAX_CLOCK_SKEW` ahead of now (ValueError)."""
    # Clock skew of a day is tolerated; a later time is a bug that would pin last_seen.
    if value is not None and value > datetime.now(UTC) + MAX_CLOCK_SKEW:
        raise ValueError("timestamp is more than 24 hours in the future")
    return value


# Every timestamp a caller sends: RFC 3339 with an offset, year 1000-9998.
Timestamp = Annotated[AwareDatetime, AfterValidator(in_range)]

Source = Annotated[
    str,
    Field(pattern=SOURCE_PATTERN, description="Where the event came from, e.g. `web`, `crm:sf`."),
]


# The sender's id of one event (Segment/RudderStack's ``messageId``): any printable text, hashed
# with a key before it is stored (it may hold anything, an email included).
# (The pattern also refuses lone surrogates: pydantic cannot match them, so they are a 422.)
MessageId = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]


def message_id_field() -> Any:
    """The optional ``message_id`` field of an ingest body (``messageId`` accepted too)."""
    return Field(
        default=None,
        validation_alias=AliasChoices("message_id", "messageId"),
        description="Your id for this event (`messageId` is accepted too). An event whose id "
        "was applied within the message window (IDGRAPH_MESSAGE_ID_WINDOW_DAYS) is not applied "
        "again: it is answered `duplicate` with `deduplicated: true`.",
        examples=["ajs-5f1c2b7e9d0a4c3b"],
    )


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
    message_id: MessageId | None = message_id_field()

    @field_validator("timestamp")
    @classmethod
    def _not_in_future(cls, value: datetime | None) -> datetime | None:
        return not_in_future(value)


class IngestRequest(StrictModel):
    """A batch of events, applied in one transaction (all or nothing on invalid input)."""

    events: Annotated[list[IdentifyRequest], Field(min_length=1, max_length=10_000)]


# -- consent signals ---------------------------------------------------------------------------

MAX_CONSENT_STRING = 65_536


class ConsentRequest(StrictModel):
    """Consent signals for the person the identifiers resolve to (``POST /v1/consent``)."""

    identifiers: Annotated[list[IdentifierIn], Field(min_length=1, max_length=200)]
    source: Source = "api"
    decisions: Annotated[dict[Name, StrictBool], Field(max_length=64)] = Field(
        default_factory=dict,
        description="Direct decisions, {purpose: granted}; purposes from policies/purposes.yaml.",
        examples=[{"marketing_email": True, "analytics": False}],
    )
    tcf: Annotated[str, Field(min_length=1, max_length=MAX_CONSENT_STRING)] | None = Field(
        default=None, description="An IAB TCF v2.2 TC string; decided at its LastUpdated."
    )
    gpp: Annotated[str, Field(min_length=1, max_length=MAX_CONSENT_STRING)] | None = Field(
        default=None,
        description="An IAB GPP string (tcfeuv2, uspv1, usnat and US state sections apply).",
    )
    timestamp: Timestamp | None = Field(
        default=None,
        description="When the person decided (decisions, GPC, GPP usnat). Default: now. Send it "
        "when a request may be resent: the same decision at the same time changes nothing.",
    )
    message_id: MessageId | None = message_id_field()

    @field_validator("timestamp")
    @classmethod
    def _not_in_future(cls, value: datetime | None) -> datetime | None:
        return not_in_future(value)


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
