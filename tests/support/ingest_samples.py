"""Ingest inputs and outcomes shared by the ingest, journal and metrics tests.

* :func:`email_cookie_batch`: a ``/v1/ingest`` body whose events each name an email and a
  cookie id seen together; :func:`email_of` and :func:`cookie_of` give the values it uses, so a
  test resolves them (or looks for them on disk) without spelling them again.
* :func:`sample_outcomes`: ingest outcomes with every kind of count (events by outcome, a
  refusal repeated within an event, stored, quarantined and dropped facts), for the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from identity.hashing import HashedIdentifier
from identity.model import EventOutcome, Outcome, Refusal, RefusalReason


def email_of(tag: str, k: int) -> str:
    """The email of event ``k`` of ``email_cookie_batch(tag, ...)``: mixed case (its normalized
    form differs from it) and a domain no identity rule blocks, so it is linked."""
    return f"Ingest.{tag}.{k}@Mailbox-Tests.net"


def cookie_of(tag: str, k: int) -> str:
    """The cookie id of event ``k`` of ``email_cookie_batch(tag, ...)``."""
    return f"ck-{tag}-{k}"


def email_cookie_batch(
    tag: str, n: int = 3, *, source: str = "crm", traits: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A ``/v1/ingest`` body of ``n`` events on fresh identifiers (one ``tag`` a batch), each
    naming :func:`email_of` and :func:`cookie_of` together, from ``source``, with ``traits``
    if given."""
    extra = {"traits": dict(traits)} if traits is not None else {}
    return {
        "events": [
            {
                "identifiers": [
                    {"type": "email", "value": email_of(tag, k)},
                    {"type": "cookie_id", "value": cookie_of(tag, k)},
                ],
                "source": source,
                **extra,
            }
            for k in range(n)
        ]
    }


def sample_outcomes() -> list[EventOutcome]:
    """Five outcomes: two created, one refused (the same identifier refused twice in it counts
    once), one linked, one duplicate; facts stored, quarantined and dropped."""
    at = datetime(2026, 1, 5, tzinfo=UTC)

    def refusal(digest: bytes, reason: RefusalReason, position: int) -> Refusal:
        hashed = HashedIdentifier("email", "k1", digest)
        return Refusal(hashed, reason, "detail", "web", at, position)

    twice = (
        refusal(b"a", RefusalReason.BLOCKED_VALUE, 0),
        refusal(b"a", RefusalReason.BLOCKED_VALUE, 2),  # the same identifier again: counts once
        refusal(b"b", RefusalReason.SUPPRESSED, 1),
    )
    return [
        EventOutcome(Outcome.CREATED, "p1", (), 3, (), facts_stored=2),
        EventOutcome(Outcome.CREATED, "p2", (), 1, (), facts_stored=1, facts_quarantined=1),
        EventOutcome(Outcome.REFUSED, None, (), 0, twice, facts_dropped=4),
        EventOutcome(Outcome.LINKED, "p1", (), 1, twice[2:]),
        EventOutcome(Outcome.DUPLICATE, None, (), 0, ()),
    ]
