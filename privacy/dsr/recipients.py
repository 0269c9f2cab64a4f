"""Recipients of a person's data, and what each must be told (GDPR Art. 17(2), 19).

**The registry** is derived from the audit log, not kept beside it: every read that released the
person's data (``read.profile``, ``read.audience``, ``read.export``, ``read.features``) is an
allowed audit entry naming the person (``person_id``, or ``details.refs`` for pages), its actor
(``key_<API key id>``) and its purpose. The actor's API key names the downstream system (its
``consumer``). One registry per person, so a recipient is never told about data it never got.

**What a recipient holds**, and so the only key its notice may carry:

* a profile read or an audience member page: the **person id** (it asked by it, or was given it);
* a feature table: its **per-consumer pseudonym** (:mod:`privacy.access.pseudonyms`), never the
person id;
* an audience export to an ad platform: the **SHA-256 of the normalized identifiers** of the
  purpose's activation types (exactly the rows the export sent).

A notice carries those keys and nothing else of the person: no raw identifier, no attribute,
no other recipient's key. Its body sits in the outbox **sealed by the vault** (a data key per
notice, shredded once delivered or given up): a person id or an unkeyed SHA-256 of an email
address must not survive the erasure it announces in a readable outbox row.

Console reads (an operator's own actor, not an API key) are not recipients: nothing left the
service.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from privacy.auditing.log import MAX_ENTRIES_LIMIT, AuditLog

# Read actions that release data to the caller, and the kind of key each leaves it holding.
PERSON_ID_READS: Final = frozenset({"read.profile", "read.audience"})
PSEUDONYM_READS: Final = frozenset({"read.features"})
HASHED_IDENTIFIER_READS: Final = frozenset({"read.export"})
RELEASING_READS: Final = PERSON_ID_READS | PSEUDONYM_READS | HASHED_IDENTIFIER_READS
RECIPIENT_PREFIX: Final = "recipient:"  # the outbox destination of a recipient notice


@dataclass(frozen=True, slots=True)
class Received:
    """What one recipient received about one person: the purposes, and the kinds of key."""

    consumer: str
    purposes: tuple[str, ...]
    person_id: bool  # it holds the person id (profile reads, audience member pages)
    pseudonym: bool  # it holds its feature pseudonym
    export_purposes: tuple[str, ...]  # purposes of audience exports (hashed identifiers)
    first_at: datetime
    last_at: datetime


def received(
    audit: AuditLog, person_id: str, consumer_of: Callable[[str], str | None]
) -> dict[str, Received]:
    """The recipients of ``person_id``'s data by consumer, from the audit log (see module doc).

    ``consumer_of`` maps an audit actor to the API key's consumer, ``None`` for actors that are
    not API keys (operators, workers).
    """
    reference = audit.person_ref(person_id)
    found: dict[str, dict[str, Any]] = {}
    after = 0
    while batch := audit.mentioning(reference, after_seq=after, limit=MAX_ENTRIES_LIMIT):
        after = batch[-1].seq
        for entry in batch:
            if entry.decision != "allow" or entry.action not in RELEASING_READS:
                continue
            consumer = consumer_of(entry.actor)
            if consumer is None:
                continue
            seen = found.setdefault(
                consumer,
                {"purposes": set(), "kinds": set(), "exports": set(), "at": [entry.at, entry.at]},
            )
            if entry.purpose:
                seen["purposes"].add(entry.purpose)
            seen["kinds"].add(entry.action)
            if entry.action in HASHED_IDENTIFIER_READS and entry.purpose:
                seen["exports"].add(entry.purpose)
            seen["at"][0] = min(seen["at"][0], entry.at)
            seen["at"][1] = max(seen["at"][1], entry.at)
    return {
        consumer: Received(
            consumer=consumer,
            purposes=tuple(sorted(seen["purposes"])),
            person_id=bool(seen["kinds"] & PERSON_ID_READS),
            pseudonym=bool(seen["kinds"] & PSEUDONYM_READS),
            export_purposes=tuple(sorted(seen["exports"])),
            first_at=seen["at"][0],
            last_at=seen["at"][1],
        )
        for consumer, seen in sorted(found.items())
    }


def hashed_identifier(identifier_type: str, normalized: bytes) -> dict[str, str]:
    """An activation row as the audience export sent it: SHA-256 of the normalized value."""
    return {"type": identifier_type, "sha256": hashlib.sha256(normalized).hexdigest()}


@dataclass(frozen=True, slots=True)
class NoticeKeys:
    """The keys a recipient holds for one person, as they go into its notice."""

    person_id: str | None = None
    pseudonym: tuple[str, str] | None = None  # (pseudonym key id, pseudonym)
    hashed_identifiers: tuple[Mapping[str, str], ...] = ()
    # Keys the recipient holds that could not be listed: kept values whose data key was
    # shredded while the person still exists. Counted for the request's result and audit
    # entry; not part of the notice (a count tells the recipient nothing it can act on).
    unreadable: int = 0

    def as_json(self) -> dict[str, Any]:
        """The ``keys`` object of the notice (only the kinds it holds)."""
        out: dict[str, Any] = {}
        if self.person_id is not None:
            out["person_id"] = self.person_id
        if self.pseudonym is not None:
            out["pseudonym"] = {"key_id": self.pseudonym[0], "value": self.pseudonym[1]}
        if self.hashed_identifiers:
            unique = {(h["type"], h["sha256"]): h for h in self.hashed_identifiers}
            out["hashed_identifiers"] = [dict(h) for _, h in sorted(unique.items())]
        return out


def notice_body(
    event: str,
    at: datetime,
    request_id: str,
    regulation: str,
    action: str,
    purposes: Sequence[str],
    persons: Sequence[NoticeKeys],
    rectified: Sequence[str] = (),
    *,
    reason: str | None = None,
) -> bytes:
    """The notice (Standard Webhooks shape: ``type``, ``timestamp``, ``data``).

    ``data.subjects`` lists, per person of the request, the keys this recipient holds; nothing
    else about the person. ``reason`` names an erasure nobody requested (``retention``).
    """
    data: dict[str, Any] = {
        "request_id": request_id,
        "regulation": regulation,
        "action": action,
        "purposes": list(purposes),
        "subjects": [keys.as_json() for keys in persons],
    }
    if reason is not None:
        data["reason"] = reason
    if rectified:
        # Names only: the recipient re-reads the corrected data through its own reads.
        data["rectified"] = list(rectified)
    body = {
        "type": event,
        "timestamp": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
