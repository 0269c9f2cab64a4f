"""The input shapes of the ingest use cases: an identify event, a batch of them.

Shared by every ingest path (the HTTP API, bulk files, a stream consumer) so that each accepts
exactly the same input. Raw identifier values arrive here and are hashed by the use case; these
models only check structure, sizes and patterns (the identity policy checks the values).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, NamedTuple

from pydantic import (
    AfterValidator,
    AliasChoices,
    AllowInfNan,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_core import CoreSchema, core_schema

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


class EventFields(NamedTuple):
    """A validated event of an identify input (what :class:`EventIn` holds)."""

    name: str
    timestamp: datetime | None
    properties: Mapping[str, Any]


class IdentifyInput(NamedTuple):
    """A validated identify event as plain values: what the ingest use case reads.

    Made from an :class:`IdentifyRequest` (:meth:`of`) or, for bulk rows, directly from the
    decoded row by :func:`identify_input`, which builds no Pydantic model. (A named tuple: it is
    made once per bulk row, and a tuple is the cheapest immutable record Python has.)
    """

    identifiers: tuple[tuple[str, str], ...]
    source: str
    timestamp: datetime | None
    traits: Mapping[str, Any] | None
    events: tuple[EventFields, ...]
    message_id: str | None

    @classmethod
    def of(cls, request: IdentifyRequest) -> IdentifyInput:
        """The plain values of a validated request."""
        return cls(
            tuple((i.type, i.value) for i in request.identifiers),
            request.source,
            request.timestamp,
            request.traits,
            tuple(EventFields(e.name, e.timestamp, e.properties) for e in request.events),
            request.message_id,
        )


# -- identify rows without a model -------------------------------------------------------------
# Bulk files hold millions of rows and nearly all are valid; building an IdentifyRequest per row
# was a measurable share of the bulk path's CPU. identify_input() checks a decoded row against
# exactly the constraints of IdentifyRequest, with plain Python, and returns its values. It is
# deliberately *conservative*: it answers only for rows in the plain shape it can certify
# (JSON strings, numbers, lists and objects; RFC 3339 timestamps in the usual form) and returns
# None for anything else, valid or not. The caller then validates that row with the model, so a
# rejected row gets the model's own messages and pointers, and nothing the model refuses is ever
# accepted (tests/services/test_bulk_validation.py compares both over generated rows).
# Python's re.fullmatch on the same character classes behaves as the model's anchored patterns
# (pydantic's Rust regex: "$" is the end of the text, never before a trailing newline).
_SOURCE_RE: Final = re.compile(SOURCE_PATTERN[1:-1])
_TYPE_RE: Final = re.compile(TYPE_PATTERN[1:-1])
_NAME_RE: Final = re.compile(NAME_PATTERN[1:-1])
_MESSAGE_ID_RE: Final = re.compile(r"[^\x00-\x1f\x7f]+")
# The common RFC 3339 form; datetime.fromisoformat reads it exactly as pydantic does. Other forms
# pydantic accepts (a space for "T", no seconds, more fraction digits, unix numbers) go to it.
_TIMESTAMP_RE: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)
_IDENTIFY_KEYS: Final = frozenset(
    {"identifiers", "source", "traits", "events", "timestamp", "message_id", "messageId"}
)
_IDENTIFIER_KEYS: Final = frozenset({"type", "value"})
_EVENT_KEYS: Final = frozenset({"name", "timestamp", "properties"})
MAX_TEXT: Final = 4096
MAX_IDENTIFIER_VALUE: Final = 4096


class _ModelNeededError(Exception):
    """A row :func:`identify_input` leaves to the model (never leaves this module)."""


def _need(ok: bool) -> None:
    if not ok:
        raise _ModelNeededError


def _is_text(value: object, max_length: int) -> bool:
    # A str the model reads as is: within the length, and UTF-8 encodable (the model refuses
    # lone surrogates). Exact type: a str subclass goes to the model.
    if type(value) is not str or len(value) > max_length:
        return False
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _is_scalar(value: object) -> bool:
    if type(value) is bool or type(value) is int:
        return True
    if type(value) is float:
        return math.isfinite(value)
    return _is_text(value, MAX_TEXT)


def _is_trait_value(value: object) -> bool:
    if type(value) is list:
        return len(value) <= 50 and all(_is_text(v, MAX_TEXT) for v in value)
    return _is_scalar(value)


def _named(mapping: object, max_entries: int, value_ok: Callable[[object], bool]) -> dict[str, Any]:
    """A copy of a ``dict[Name, ...]`` field the model would accept as it stands."""
    _need(isinstance(mapping, dict) and len(mapping) <= max_entries)
    assert isinstance(mapping, dict)  # noqa: S101 - narrowing for mypy; checked just above
    for key, value in mapping.items():
        _need(_is_name(key) and value_ok(value))
    return {k: list(v) if type(v) is list else v for k, v in mapping.items()}


def _timestamp(value: object) -> datetime | None:
    """The datetime of a timestamp the model would accept as it stands."""
    if value is None:
        return None
    _need(type(value) is str and bool(_TIMESTAMP_RE.fullmatch(value)))
    assert isinstance(value, str)  # noqa: S101 - narrowing for mypy; checked just above
    try:
        return in_range(datetime.fromisoformat(value))
    except ValueError:
        raise _ModelNeededError from None


class _Matches:
    """``pattern.fullmatch`` with the answers for the last few hundred distinct strings kept:
    bulk rows repeat the same identifier types, sources and names on every line."""

    __slots__ = ("_pattern", "known")

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self._pattern = pattern
        # The answers kept (str -> bool; read directly by loops that check many strings).
        self.known: dict[str, bool] = {}

    def __call__(self, value: object) -> bool:
        if type(value) is not str:
            return False
        known = self.known.get(value)
        if known is None:
            known = self._pattern.fullmatch(value) is not None
            if len(self.known) >= 512:
                self.known.clear()
            self.known[value] = known
        return known


_is_type = _Matches(_TYPE_RE)
_is_source = _Matches(_SOURCE_RE)
_is_name = _Matches(_NAME_RE)


def _event_fields(event: object) -> EventFields:
    _need(isinstance(event, dict) and _EVENT_KEYS.issuperset(event))
    assert isinstance(event, dict)  # noqa: S101 - narrowing for mypy; checked just above
    name = event.get("name")
    _need(_is_name(name))
    properties = _named(event.get("properties", {}), 50, _is_scalar)
    return EventFields(str(name), _timestamp(event.get("timestamp")), properties)


def _certified(row: Mapping[str, Any]) -> IdentifyInput:
    _need(isinstance(row, dict) and _IDENTIFY_KEYS.issuperset(row))
    identifiers = row.get("identifiers")
    _need(type(identifiers) is list and 1 <= len(identifiers) <= 200)
    pairs = []
    # The checks of _need, _is_type and _is_text, inlined: this loop runs for every identifier
    # of a bulk file (a million), and four calls each were a quarter of certifying a row.
    known_types = _is_type.known
    for item in identifiers:  # type: ignore[union-attr]
        # An identifier is an object of exactly "type" and "value" (extra keys are refused).
        if not (isinstance(item, dict) and item.keys() == _IDENTIFIER_KEYS):
            raise _ModelNeededError
        kind, value = item["type"], item["value"]
        if not (
            type(kind) is str
            and (known_types.get(kind) or _is_type(kind))
            and type(value) is str
            and value
            and len(value) <= MAX_IDENTIFIER_VALUE
            and (value.isascii() or _is_text(value, MAX_IDENTIFIER_VALUE))
        ):
            raise _ModelNeededError
        pairs.append((kind, value))
    source = row.get("source")
    _need(_is_source(source))
    _need(not ("messageId" in row and "message_id" in row))  # both: the model names the error
    message_id = row.get("message_id", row.get("messageId"))
    if message_id is not None:
        _need(_is_text(message_id, 256) and bool(_MESSAGE_ID_RE.fullmatch(message_id)))
    timestamp = _timestamp(row.get("timestamp"))
    try:
        not_in_future(timestamp)
    except ValueError:
        raise _ModelNeededError from None
    traits = row.get("traits")
    if traits is not None:
        traits = _named(traits, 100, _is_trait_value)
    events = row.get("events")
    if events is None and "events" not in row:
        events = []
    _need(type(events) is list and len(events) <= 50)
    return IdentifyInput(
        tuple(pairs),
        str(source),
        timestamp,
        traits,
        tuple(_event_fields(event) for event in events) if events else (),
        message_id,
    )


def identify_input(row: Mapping[str, Any]) -> IdentifyInput | None:
    """The values of ``row`` if :class:`IdentifyRequest` accepts it, without building the model;
    ``None`` when the row must go through the model (it may be valid or not)."""
    try:
        return _certified(row)
    except _ModelNeededError:
        return None


# The most events one ``POST /v1/ingest`` body may hold (the schema's bound; the service's own
# limit, IDGRAPH_MAX_BATCH_EVENTS, is lower by default and answered as an input limit).
MAX_BODY_EVENTS: Final = 10_000


class IngestRequest(StrictModel):
    """A batch of events, applied in one transaction (all or nothing on invalid input)."""

    events: Annotated[list[IdentifyRequest], Field(min_length=1, max_length=MAX_BODY_EVENTS)]


def ingest_inputs(document: object) -> tuple[IdentifyInput, ...] | None:
    """The events of ``document`` if :class:`IngestRequest` accepts it, certified event by event
    as :func:`identify_input` certifies a bulk row (no model per event); ``None`` when the model
    must decide (the body may be valid or not)."""
    if type(document) is not dict or document.keys() != {"events"}:
        return None
    events = document["events"]
    if type(events) is not list or not 1 <= len(events) <= MAX_BODY_EVENTS:
        return None
    try:
        return tuple([_certified(event) for event in events])
    except _ModelNeededError:
        return None


@dataclass(frozen=True, slots=True)
class IngestBatch:
    """A ``POST /v1/ingest`` body that :class:`IngestRequest` accepts, as plain values.

    Validated against the model's schema (the OpenAPI document names :class:`IngestRequest`,
    and refused bodies get the model's own errors and locations), but a body whose events are
    all in the plain shape, nearly every body, is certified by :func:`ingest_inputs` without
    building the model: for a 50-event batch that is some 250 model objects (and their
    conversion to :class:`IdentifyInput`) per request, which bulk rows do not pay either. Every
    other body goes through the model, so nothing it refuses is accepted and each error is
    located as before (tests/api/test_ingest_certified.py compares both paths).
    """

    events: tuple[IdentifyInput, ...]

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: object, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        """The model's schema, wrapped by :func:`_ingest_batch` (same JSON schema, same errors:
        a wrap validator adds no location of its own)."""
        return core_schema.no_info_wrap_validator_function(
            _ingest_batch, handler.generate_schema(IngestRequest)
        )


def _ingest_batch(value: object, model: ValidatorFunctionWrapHandler) -> IngestBatch:
    certified = ingest_inputs(value)
    if certified is not None:
        return IngestBatch(certified)
    request: IngestRequest = model(value)
    return IngestBatch(tuple(IdentifyInput.of(event) for event in request.events))


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
