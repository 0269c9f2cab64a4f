"""What a Kafka record on an ingest topic may look like, and how it becomes an identify request.

Translation only: the result is the raw ``POST /v1/identify`` body (a ``dict``), validated,
normalized and PII-scanned by the ingest use case exactly as the API's is. Nothing here decides
what is valid beyond the envelope's own shape.

Three shapes are read (the value is UTF-8 JSON, one object per record):

* **idgraph** (the API's shape): ``{"identifiers": [...], "source": ..., "timestamp": ...,
  "traits": {...}, "events": [...], "message_id": ...}``.
* **Segment / RudderStack ``identify``**: ``{"type": "identify", "messageId", "userId",
  "anonymousId", "traits": {...}, "context": {...}, "timestamp"}``.
* **Segment / RudderStack ``track``**: ``{"type": "track", "event", "properties", ...}``.

The mapping policy for the Segment-shaped envelopes (docs/kafka.md repeats it):

=========================================  ===================================================
envelope field                             idgraph
=========================================  ===================================================
``userId``                                 identifier ``customer_id``
``anonymousId``                            identifier ``anonymous_id``
``traits.email`` / ``context.traits.email``  identifier ``email`` (removed from the traits)
``traits.phone`` / ``context.traits.phone``  identifier ``phone`` (removed from the traits)
``context.device.advertisingId``           ``idfa`` when ``context.device.type`` is ``ios``,
                                           ``gaid`` when ``android``; otherwise ignored
other ``traits``                           traits, keys in snake_case (the facts policy decides)
``event`` (track)                          one event, its name in snake_case
``properties`` (track)                     the event's properties, keys in snake_case
``messageId``                              ``message_id`` (exactly-once per message id)
``timestamp`` / ``originalTimestamp``      ``timestamp``
=========================================  ===================================================

The ``source`` of Segment-shaped records is the topic's configured source (``--source``), since
the envelope has none of its own. Every other field (``context.ip``, ``context.page``, ...) is
ignored: idgraph keeps what its policies know and nothing else.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_NAME = re.compile(r"[^a-z0-9]+")
SEGMENT_TYPES = frozenset({"identify", "track"})


class EnvelopeError(ValueError):
    """The record is not a JSON object of a known shape. The message names no value."""

    def __init__(self, reason: str, pointer: str, message: str) -> None:
        self.reason = reason
        self.pointer = pointer
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Envelope:
    """An identify request in the API's shape, and the sender's message id (if any)."""

    request: dict[str, Any]
    message_id: str | None
    shape: str  # "idgraph", "segment.identify", "segment.track"


def snake_case(name: str) -> str:
    """``Order Completed`` -> ``order_completed``; ``orderId`` -> ``order_id``."""
    spaced = _CAMEL_BOUNDARY.sub("_", name.strip())
    return _NOT_NAME.sub("_", spaced.lower()).strip("_")


def load_object(value: bytes | None) -> dict[str, Any]:
    """The record value as a JSON object; raises :class:`EnvelopeError` (no value in it)."""
    if value is None:
        raise EnvelopeError("empty-record", "#", "the record has no value (a tombstone?)")
    try:
        document = json.loads(value)
    except UnicodeDecodeError:
        raise EnvelopeError("not-utf8", "#", "the record value is not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise EnvelopeError("not-json", "#", f"the record value is not JSON ({exc.msg})") from None
    if not isinstance(document, dict):
        raise EnvelopeError("not-an-object", "#", "the record value must be a JSON object")
    return document


def message_id_of(document: dict[str, Any], header_message_id: str | None) -> str | None:
    """Remove and return the document's ``message_id`` (else the header's); a non-string id
    raises :class:`EnvelopeError`."""
    message_id = document.pop("message_id", None)
    if message_id is not None and not isinstance(message_id, str):
        raise EnvelopeError("invalid-message-id", "#/message_id", "message_id must be a string")
    return message_id or header_message_id


def parse(value: bytes | None, default_source: str, header_message_id: str | None) -> Envelope:
    """Decode one record value; raises :class:`EnvelopeError` (no value in its message)."""
    document = load_object(value)
    kind = document.get("type")
    if isinstance(kind, str) and kind in SEGMENT_TYPES:
        return _segment(document, kind, default_source, header_message_id)
    if kind is not None and "identifiers" not in document:
        raise EnvelopeError(
            "unknown-envelope", "#/type", "type must be identify or track (Segment/RudderStack)"
        )
    message_id = message_id_of(document, header_message_id)
    if "source" not in document:
        document["source"] = default_source
    return Envelope(document, message_id, "idgraph")


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _segment(
    document: dict[str, Any], kind: str, source: str, header_message_id: str | None
) -> Envelope:
    identifiers: list[dict[str, str]] = []

    def add(identifier_type: str, value: object) -> None:
        # Non-string ids (Segment allows numbers) are identifiers all the same.
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and value.strip():
            identifiers.append({"type": identifier_type, "value": value})

    add("customer_id", document.get("userId"))
    add("anonymous_id", document.get("anonymousId"))
    context = _object(document.get("context"))
    traits: dict[str, Any] = {}
    for container in (context.get("traits"), document.get("traits")):
        if isinstance(container, dict):
            traits.update(container)
    for field_name in ("email", "phone"):
        if field_name in traits:
            add(field_name, traits.pop(field_name))
    device = _object(context.get("device"))
    ad_type = {"ios": "idfa", "android": "gaid"}.get(str(device.get("type", "")).lower())
    if ad_type is not None:
        add(ad_type, device.get("advertisingId"))
    request: dict[str, Any] = {"identifiers": identifiers, "source": source}
    timestamp = document.get("timestamp") or document.get("originalTimestamp")
    if timestamp is not None:
        request["timestamp"] = timestamp
    if kind == "identify" and traits:
        request["traits"] = {snake_case(k): v for k, v in traits.items()}
    if kind == "track":
        name = document.get("event")
        if not isinstance(name, str) or not snake_case(name):
            raise EnvelopeError("invalid-track", "#/event", "a track call needs an event name")
        properties = document.get("properties")
        event: dict[str, Any] = {"name": snake_case(name)}
        if isinstance(properties, dict) and properties:
            event["properties"] = {snake_case(k): v for k, v in properties.items()}
        if timestamp is not None:
            event["timestamp"] = timestamp
        request["events"] = [event]
    message_id = document.get("messageId")
    if message_id is not None and not isinstance(message_id, str):
        raise EnvelopeError("invalid-message-id", "#/messageId", "messageId must be a string")
    return Envelope(request, message_id or header_message_id, f"segment.{kind}")
