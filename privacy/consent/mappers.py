"""Webhook payload mappers: a CMP's JSON body to identifiers and consent signals.

Each webhook source is configured with one format (``IDGRAPH_WEBHOOK_SOURCES``, see
``docs/consent-signals.md``). A mapper reads the raw, already signature-checked body and returns a
:class:`MappedPayload`: the identifiers the consent belongs to, the signals (for
:class:`~privacy.consent.signals.ConsentSignalTranslator`), or the reason the message carries no
consent (a CMP's "user deleted" notification, say). Pure; no I/O.

Two formats:

* ``generic`` (:class:`GenericPayload`): idgraph's own documented shape, the body of
  ``POST /v1/consent`` plus a required ``timestamp``.
* ``didomi``: the body Didomi's webhooks send (``{"type": "event.created", "parameters":
  {"entity": <consent event>}}``, the event being a Didomi Consents API v2 event with
  ``user.organization_user_id`` and ``consents.purposes[{id, enabled}]`` / ``consents.tcfcs``).
  Didomi purpose ids are the organization's own, so each source maps them to idgraph purposes.

Why the decision time is required (the generic ``timestamp``, Didomi's ``created_at``): a sender
retries a delivery, and every attempt has a new ``webhook-timestamp``. If the decision time were
taken from the attempt, a late retry of an old "yes" would outrank a newer "no" delivered in
between. With the time from the payload, a retry records the same decision at the same time,
which changes nothing.

Errors are :class:`~identity.errors.InvalidFieldError` located by JSON pointer (422); their
messages come from the schema and never carry a submitted value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, ValidationError

from identity.errors import BatchValidationError, ConfigurationError, InvalidFieldError
from identity.policy import IdentityPolicy
from identity.strict_json import MalformedJsonError, loads_strict
from privacy.access.purposes import PurposesPolicy
from privacy.consent.signals import ConsentSignals, SignalPointers, signal_digest

_NAME = r"^[a-z][a-z0-9_]{0,63}$"
_TYPE = r"^[a-z][a-z0-9_]{0,39}$"
_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")
# Consent strings: base64url, '.', '~' (GPP). The decoders are strict; this only bounds size.
MAX_CONSENT_STRING = 65_536


class WebhookFormat(StrEnum):
    """The payload formats a webhook source can be configured with."""

    GENERIC = "generic"
    DIDOMI = "didomi"


class WebhookSourceConfig(BaseModel):
    """One webhook source of ``IDGRAPH_WEBHOOK_SOURCES``.

    ``purposes`` maps the CMP's purpose ids to idgraph purposes (Didomi); a CMP purpose without
    an entry is ignored and counted in the response. ``organization_user_id_type`` is the
    identifier type of Didomi's ``user.organization_user_id`` (your own user id, as you gave it
    to Didomi); ``user_id_type``, if set, the type Didomi's own ``user.id`` is linked as.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: WebhookFormat = WebhookFormat.GENERIC
    purposes: dict[Annotated[str, Field(min_length=1, max_length=200)], str] = Field(
        default_factory=dict
    )
    organization_user_id_type: Annotated[str, Field(pattern=_TYPE)] = "customer_id"
    user_id_type: Annotated[str, Field(pattern=_TYPE)] | None = None


def check_source_config(
    name: str, config: WebhookSourceConfig, purposes: PurposesPolicy, identity: IdentityPolicy
) -> None:
    """Refuse a source whose purpose map or identifier types name nothing that exists."""
    for cmp_purpose, purpose in config.purposes.items():
        if purposes.get(purpose) is None:
            raise ConfigurationError(
                f"IDGRAPH_WEBHOOK_SOURCES.{name}.purposes: {cmp_purpose!r} maps to unknown "
                f"purpose {purpose!r}; purposes: {', '.join(purposes.ids)}"
            )
    for setting in ("organization_user_id_type", "user_id_type"):
        type_name = getattr(config, setting)
        if type_name is not None and type_name not in identity.types:
            raise ConfigurationError(
                f"IDGRAPH_WEBHOOK_SOURCES.{name}.{setting}: unknown identifier type {type_name!r}"
            )


@dataclass(frozen=True, slots=True)
class MappedIdentifier:
    """A raw identifier from a payload, with the JSON pointer of its value (for errors)."""

    type: str
    value: str = field(repr=False)
    pointer: str


@dataclass(frozen=True, slots=True)
class MappedPayload:
    """What a webhook body says. ``signals`` is ``None`` when the message carries no consent
    (``ignored`` then says why); ``ignored_purposes`` counts CMP purposes without a mapping."""

    identifiers: tuple[MappedIdentifier, ...] = ()
    signals: ConsentSignals | None = None
    ignored: str | None = None
    ignored_purposes: int = 0


class PayloadMapper(Protocol):
    """Turns a verified webhook body into identifiers and signals."""

    def map(self, body: bytes) -> MappedPayload:
        """Map ``body`` (raw bytes); raise ``BatchValidationError``/``InvalidFieldError``."""
        ...


# -- shared parsing ----------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Lenient(BaseModel):
    # CMP payloads grow fields over time; unknown fields are ignored, not refused.
    model_config = ConfigDict(frozen=True, extra="ignore")


def _parse(model: type[_M], body: bytes) -> _M:
    """Validate ``body`` as ``model``; every problem as a located, value-free error."""
    try:
        document = loads_strict(body)
    except MalformedJsonError as exc:
        raise InvalidFieldError(
            exc.reason, f"the webhook body: {exc.message}", exc.pointer
        ) from None
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        # Only pydantic's message and location: its ``input`` and ``ctx`` can hold the value.
        raise BatchValidationError(
            [
                InvalidFieldError(
                    "invalid_payload",
                    str(error.get("msg", "invalid")),
                    _pointer("#", error.get("loc", ())),
                )
                for error in exc.errors()[:50]
            ]
        ) from None


# A location segment is echoed only when it is an array index, a name of the schema's shape or
# pydantic's ``[key]`` marker. Anything else is a key the sender chose, and a key can be a value
# (``{"decisions": {"ann@shop.example.de": true}}``): it never reaches an error body or a log.
_ECHOABLE_SEGMENT = re.compile(r"[a-z_][a-z0-9_-]{0,63}|\[key\]")


def _pointer(base: str, location: Iterable[int | str]) -> str:
    parts = [
        str(part) if isinstance(part, int) or _ECHOABLE_SEGMENT.fullmatch(part) else "*"
        for part in location
    ]
    return "/".join([base, *parts])


# -- generic -----------------------------------------------------------------------------------


class GenericIdentifier(_Strict):
    """One identifier, as in ``POST /v1/identify``."""

    type: Annotated[str, Field(pattern=_TYPE)]
    value: Annotated[str, Field(min_length=1, max_length=4096)]


class GenericPayload(_Strict):
    """The generic webhook body (documented in ``docs/consent-signals.md``)."""

    identifiers: Annotated[list[GenericIdentifier], Field(min_length=1, max_length=20)]
    timestamp: AwareDatetime = Field(description="When the person decided (required).")
    decisions: Annotated[
        dict[Annotated[str, Field(pattern=_NAME)], StrictBool], Field(max_length=64)
    ] = Field(default_factory=dict)
    tcf: Annotated[str, Field(min_length=1, max_length=MAX_CONSENT_STRING)] | None = None
    gpp: Annotated[str, Field(min_length=1, max_length=MAX_CONSENT_STRING)] | None = None
    gpc: StrictBool = False


class GenericMapper:
    """Maps the generic format."""

    def map(self, body: bytes) -> MappedPayload:
        """Identifiers and signals of a generic payload."""
        payload = _parse(GenericPayload, body)
        identifiers = tuple(
            MappedIdentifier(item.type, item.value, f"#/identifiers/{index}")
            for index, item in enumerate(payload.identifiers)
        )
        signals = ConsentSignals(
            at=payload.timestamp,
            body_digest=signal_digest(body),
            decisions=dict(payload.decisions),
            tc_string=payload.tcf,
            gpp_string=payload.gpp,
            gpc=payload.gpc,
            via_webhook=True,
        )
        return MappedPayload(identifiers, signals)


# -- Didomi ------------------------------------------------------------------------------------


class DidomiUser(_Lenient):
    """``user`` of a Didomi consent event."""

    id: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    organization_user_id: Annotated[str, Field(min_length=1, max_length=4096)] | None = None


class DidomiPurpose(_Lenient):
    """One entry of ``consents.purposes``; ``enabled: null`` means no choice was made."""

    id: Annotated[str, Field(min_length=1, max_length=200)]
    enabled: StrictBool | None = None


class DidomiConsents(_Lenient):
    """``consents`` of a Didomi consent event."""

    purposes: Annotated[list[DidomiPurpose], Field(max_length=500)] = Field(default_factory=list)
    tcfcs: Annotated[str, Field(max_length=MAX_CONSENT_STRING)] | None = None


class DidomiEvent(_Lenient):
    """A Didomi Consents API v2 event (the fields idgraph reads)."""

    id: str | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime | None = None
    user: DidomiUser
    consents: DidomiConsents = Field(default_factory=DidomiConsents)


class DidomiEnvelope(_Lenient):
    """The webhook body: an event type and its parameters."""

    type: Annotated[str, Field(min_length=1, max_length=100)]
    parameters: dict[str, Any]


_DIDOMI_APPLIED: Mapping[str, Literal["entity", "new_entity"]] = {
    "event.created": "entity",
    "event.updated": "new_entity",
}


class DidomiMapper:
    """Maps Didomi's webhook body (``event.created`` and ``event.updated``).

    Other types (``event.deleted``, ``user.*``) are acknowledged and ignored: deleting a Didomi
    event does not withdraw a decision (a withdrawal arrives as a new event), and ``user.*``
    notifications repeat what the events already said.
    """

    def __init__(self, config: WebhookSourceConfig) -> None:
        self._config = config

    def map(self, body: bytes) -> MappedPayload:
        """Identifiers and signals of a Didomi consent event."""
        envelope = _parse(DidomiEnvelope, body)
        key = _DIDOMI_APPLIED.get(envelope.type)
        if key is None:
            return MappedPayload(ignored="didomi event type carries no consent to apply")
        pointer = f"#/parameters/{key}"
        entity = _located(lambda: DidomiEvent.model_validate(envelope.parameters.get(key)), pointer)
        user = entity.user
        identifiers: list[MappedIdentifier] = []
        if user.organization_user_id is not None:
            identifiers.append(
                MappedIdentifier(
                    self._config.organization_user_id_type,
                    user.organization_user_id,
                    f"{pointer}/user/organization_user_id",
                )
            )
        if user.id is not None and self._config.user_id_type is not None:
            identifiers.append(
                MappedIdentifier(self._config.user_id_type, user.id, f"{pointer}/user/id")
            )
        if not identifiers:
            raise InvalidFieldError(
                "no_identifier",
                "the event's user has no identifier this source is configured to link "
                "(organization_user_id, or id with user_id_type)",
                f"{pointer}/user",
            )
        decisions: dict[str, bool] = {}
        ignored = 0
        for item in entity.consents.purposes:
            purpose = self._config.purposes.get(item.id)
            if purpose is None:
                ignored += 1
                continue
            if item.enabled is None:
                continue  # no choice for this purpose in this event
            # Two Didomi purposes mapped to one of ours: both must be enabled to grant it.
            decisions[purpose] = decisions.get(purpose, True) and item.enabled
        signals = ConsentSignals(
            at=entity.updated_at or entity.created_at,
            body_digest=signal_digest(body),
            decisions=decisions,
            tc_string=entity.consents.tcfcs or None,
            via_webhook=True,
            pointers=SignalPointers(
                decisions=f"{pointer}/consents/purposes",
                tcf=f"{pointer}/consents/tcfcs",
                timestamp=f"{pointer}/created_at",
            ),
        )
        if signals.empty:
            return MappedPayload(
                tuple(identifiers),
                ignored="the event holds no decision for a mapped purpose and no TC string",
                ignored_purposes=ignored,
            )
        return MappedPayload(tuple(identifiers), signals, ignored_purposes=ignored)


def _located(build: Callable[[], _T], pointer: str) -> _T:
    try:
        return build()
    except ValidationError as exc:
        raise BatchValidationError(
            [
                InvalidFieldError(
                    "invalid_payload",
                    str(error.get("msg", "invalid")),
                    _pointer(pointer, error.get("loc", ())),
                )
                for error in exc.errors()[:50]
            ]
        ) from None


def build_mapper(config: WebhookSourceConfig) -> PayloadMapper:
    """The mapper for a source's configured format."""
    if config.format is WebhookFormat.DIDOMI:
        return DidomiMapper(config)
    return GenericMapper()
