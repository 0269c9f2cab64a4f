"""The asynchronous ingest journal's codec: validated events survive encode/decode exactly.

The encoder makes each datetime's ISO 8601 text once per datetime object of a batch (an event's
facts mostly share the event's own datetime): two datetimes that are equal as instants but carry
different UTC offsets must each keep their own offset, and the encoded form stays codec version 1
(what a journal written before this change holds decodes the same).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

from identity.identifiers import NormalizedIdentifier
from identity.model import (
    ConsentInput,
    ConsentSignal,
    FactInput,
    FactKind,
    FactStatus,
    IdentityEvent,
)
from services.async_ingest import decode_events, encode_events

AT = datetime(2026, 12, 6, 12, 0, 0, 123456, tzinfo=UTC)
# The same instant two hours east: equal to AT, with another offset.
AT_PLUS_2 = AT.astimezone(timezone(timedelta(hours=2)))


def _events() -> list[IdentityEvent]:
    return [
        IdentityEvent(
            (NormalizedIdentifier("email", "a@example.de"), NormalizedIdentifier("cookie_id", "c")),
            "web",
            AT,
            (
                FactInput(FactKind.ATTRIBUTE, "city", "location", AT, '"Köln"'.encode()),
                FactInput(
                    FactKind.EVENT,
                    "note",
                    "behavioural",
                    AT_PLUS_2,
                    b"\x00\xff raw",
                    FactStatus.QUARANTINED,
                    ("PERSON", "EMAIL_ADDRESS"),
                ),
            ),
            (ConsentInput("analytics", False, AT_PLUS_2, ConsentSignal.GPC, "consent", "d1"),),
            message_id="m-1",
        ),
        IdentityEvent((NormalizedIdentifier("customer_id", "C1"),), "crm", AT_PLUS_2),
    ]


def test_events_decode_to_what_was_encoded_when_equal_datetimes_carry_different_offsets() -> None:
    events = _events()
    assert AT == AT_PLUS_2  # equal instants: a memo keyed by value would mix up the offsets

    decoded = decode_events(encode_events(events))

    assert decoded == events
    assert decoded[0].facts[1].at.utcoffset() == timedelta(hours=2)
    assert decoded[0].consents[0].at.utcoffset() == timedelta(hours=2)
    assert decoded[1].occurred_at.utcoffset() == timedelta(hours=2)
    assert decoded[0].occurred_at.utcoffset() == timedelta(0)


def test_the_encoding_is_codec_version_1_when_payloads_are_binary() -> None:
    version, (first, _) = json.loads(encode_events(_events()))

    assert version == 1
    identifiers, source, occurred, message_id, facts, consents = first
    assert identifiers == [["email", "a@example.de"], ["cookie_id", "c"]]
    assert (source, occurred, message_id) == ("web", AT.isoformat(), "m-1")
    assert facts[1] == [
        "event",
        "note",
        "behavioural",
        AT_PLUS_2.isoformat(),
        base64.b64encode(b"\x00\xff raw").decode("ascii"),
        "quarantined",
        ["PERSON", "EMAIL_ADDRESS"],
    ]
    assert consents == [["analytics", False, AT_PLUS_2.isoformat(), "gpc", "consent", "d1"]]
