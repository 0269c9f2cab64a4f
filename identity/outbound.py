"""Outbound events for downstream tools: their kinds, versioned JSON documents and ids.

Each event is built in the transaction that makes the change and stored in the graph's outbox
(:class:`~identity.model.OutboundEvent`); the relay of ``idgraph consume`` (``--publish``) sends
it to Kafka and then deletes it. The documents follow the JSON Schemas in
``docs/schemas/`` (``$id`` = :data:`SCHEMA_BASE` + kind + version): a new field is a minor,
compatible change within a version; renaming or removing one is a new version, published beside
the old one for a deprecation period.

What a document may carry, and why: **person ids only** (random, never derived from an
identifier; the same pseudonymous id audience member pages deliver), purposes, decisions,
times and opaque ids. Never an identifier, a keyed hash, a fact value or a request id (a DSR
request id can be tied to the subject by whoever filed it).
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Final

from identity.model import ConsentRecord, OutboundEvent

SCHEMA_BASE: Final = "https://idgraph.dev/schemas/events/"
CONSENT_CHANGED: Final = "consent.changed"
PERSON_ERASED: Final = "person.erased"
SCHEMA_VERSIONS: Final[Mapping[str, int]] = {CONSENT_CHANGED: 1, PERSON_ERASED: 1}

_counter = itertools.count()
_counter_lock = threading.Lock()


def new_event_id() -> str:
    """A time-ordered, random event id: ``ev_`` + 14 hex µs + 4 hex sequence + 12 hex random.

    Ordered by creation time (and, within one process, by creation order) so the outbox can be
    read oldest first on any backend by sorting on the id alone; the random tail keeps ids of
    two processes apart.
    """
    with _counter_lock:
        sequence = next(_counter) & 0xFFFF
    return f"ev_{time.time_ns() // 1000:014x}{sequence:04x}{secrets.token_hex(6)}"


def schema_id(kind: str) -> str:
    """The ``$id`` of the JSON Schema an event of ``kind`` follows (current version)."""
    return f"{SCHEMA_BASE}{kind}/v{SCHEMA_VERSIONS[kind]}.json"


def _document(kind: str, event_id: str, at: datetime, body: Mapping[str, object]) -> str:
    return json.dumps(
        {
            "schema": schema_id(kind),
            "type": kind,
            "version": SCHEMA_VERSIONS[kind],
            "event_id": event_id,
            "occurred_at": at.isoformat(),
            **body,
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def consent_changed(record: ConsentRecord, person_id: str) -> OutboundEvent:
    """The event of one stored consent record, for the person its anchor belongs to."""
    event_id = new_event_id()
    payload = _document(
        CONSENT_CHANGED,
        event_id,
        record.recorded_at,
        {
            "person_id": person_id,
            "purpose": record.purpose,
            "granted": record.granted,
            "decided_at": record.at.isoformat(),
            "signal": record.signal.value,
            "source": record.source,
            "lawful_basis": record.lawful_basis,
        },
    )
    return OutboundEvent(event_id, CONSENT_CHANGED, person_id, payload, record.recorded_at)


def person_erased(person_id: str, erasure_id: str, at: datetime) -> OutboundEvent:
    """The event telling downstream tools to delete what they hold about ``person_id``.

    Held in the outbox until the erasure completes (keys shredded, audited).
    """
    event_id = new_event_id()
    payload = _document(
        PERSON_ERASED, event_id, at, {"person_id": person_id, "erasure_id": erasure_id}
    )
    return OutboundEvent(event_id, PERSON_ERASED, person_id, payload, at, erasure_id)
