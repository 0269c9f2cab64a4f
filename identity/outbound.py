"""Outbound events for downstream tools: their kinds, versioned JSON documents and ids.

Each event is built in the transaction that makes the change and stored in the graph's outbox
(:class:`~identity.model.OutboundEvent`); the relay of ``idgraph consume`` (``--publish``) sends
it to Kafka and then deletes it. The documents follow the JSON Schemas in
``docs/schemas/`` (``$id`` = :data:`SCHEMA_BASE` + kind + version): a new field is a minor,
compatible change within a version; renaming or removing one is a new version, published beside
the old one for a deprecation period.

What a document may carry, and why: **person ids only** (random, never derived from an
identifier; the same pseudonymous id audience member pages deliver) or, for audience events, the
audience owner's per-consumer pseudonym (so one consumer's audiences cannot be joined with
another's), purposes, decisions, times and opaque ids. Never an identifier, a keyed hash, a
fact value or a request id (a DSR request id can be tied to the subject by whoever filed it).
"""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Final, Literal

from identity.model import ConsentRecord, OutboundEvent

SCHEMA_BASE: Final = "https://idgraph.dev/schemas/events/"
CONSENT_CHANGED: Final = "consent.changed"
PERSON_ERASED: Final = "person.erased"
PERSON_MERGED: Final = "person.merged"
PERSON_SPLIT: Final = "person.split"
AUDIENCE_MEMBERSHIP: Final = "audience.membership.changed"
SCHEMA_VERSIONS: Final[Mapping[str, int]] = {
    CONSENT_CHANGED: 1,
    PERSON_ERASED: 1,
    PERSON_MERGED: 1,
    PERSON_SPLIT: 1,
    AUDIENCE_MEMBERSHIP: 1,
}

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


def person_merged(person_id: str, merged_person_ids: Sequence[str], at: datetime) -> OutboundEvent:
    """The event telling downstream tools that ``merged_person_ids`` are now ``person_id``.

    Why an event rather than rewriting earlier ones: a ``consent.changed`` names the person its
    record belonged to *when it was stored*, and may already have been delivered. Person ids are
    never reused, so a consumer that maps each merged id to ``person_id`` (and moves what it
    holds under them) sees every earlier and later event of the person under one id.
    """
    event_id = new_event_id()
    payload = _document(
        PERSON_MERGED,
        event_id,
        at,
        {"person_id": person_id, "merged_person_ids": sorted(merged_person_ids)},
    )
    return OutboundEvent(event_id, PERSON_MERGED, person_id, payload, at)


def person_split(
    person_id: str, split_person_ids: Sequence[str], reason: str, at: datetime
) -> OutboundEvent:
    """The event telling downstream tools that part of ``person_id`` is now other persons.

    An unlink that splits a person keeps the id on the part with the most identifiers and gives
    every other part a new random id (:meth:`identity.resolution.ResolutionEngine.unlink`). A tool
    holding data under ``person_id`` cannot tell which of it belongs to which part (the event
    names no identifier, nothing that could say), so it re-reads what it needs under each id
    through its own, policy-checked reads, and stops treating the new ids' data as
    ``person_id``'s. Keyed by ``person_id``: in order with that person's other events.
    """
    event_id = new_event_id()
    payload = _document(
        PERSON_SPLIT,
        event_id,
        at,
        {"person_id": person_id, "split_person_ids": sorted(split_person_ids), "reason": reason},
    )
    return OutboundEvent(event_id, PERSON_SPLIT, person_id, payload, at)


def audience_membership_changed(
    audience_id: str,
    purpose: str,
    consumer: str,
    member_id: str,
    pseudonym_key_id: str,
    change: Literal["joined", "left"],
    at: datetime,
    person_id: str | None = None,
) -> OutboundEvent:
    """A member joined or left an audience (``member_id``: the consumer's pseudonym of them).

    The document names the member only by the per-consumer pseudonym of the audience's owner
    (:mod:`privacy.access.pseudonyms`), never by person id: the topic reaches tools that must not
    join
    one consumer's audiences with another's. The outbox row keeps the person id of a ``joined``
    member (so an erasure drops the event while it is queued); a ``left`` member is known by its
    pseudonym only. The Kafka key is the pseudonym (:func:`partition_key`).
    """
    event_id = new_event_id()
    payload = _document(
        AUDIENCE_MEMBERSHIP,
        event_id,
        at,
        {
            "audience_id": audience_id,
            "purpose": purpose,
            "consumer": consumer,
            "member_id": member_id,
            "pseudonym_key_id": pseudonym_key_id,
            "change": change,
        },
    )
    return OutboundEvent(event_id, AUDIENCE_MEMBERSHIP, person_id or member_id, payload, at)


def partition_key(event: OutboundEvent) -> str:
    """The Kafka key of an event: the person id (one person's events in order), except for
    audience events, keyed by the member pseudonym they carry (the person id stays inside)."""
    if event.kind == AUDIENCE_MEMBERSHIP:
        return str(json.loads(event.payload)["member_id"])
    return event.person_id


def person_erased(person_id: str, erasure_id: str, at: datetime) -> OutboundEvent:
    """The event telling downstream tools to delete what they hold about ``person_id``.

    Held in the outbox until the erasure completes (keys shredded, audited).
    """
    event_id = new_event_id()
    payload = _document(
        PERSON_ERASED, event_id, at, {"person_id": person_id, "erasure_id": erasure_id}
    )
    return OutboundEvent(event_id, PERSON_ERASED, person_id, payload, at, erasure_id)
