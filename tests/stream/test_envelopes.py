"""Envelope mapping: the API's shape and Segment/RudderStack identify/track records."""

from __future__ import annotations

import json

import pytest

from stream.envelopes import EnvelopeError, parse, snake_case


def _parse(document: object, header_id: str | None = None) -> object:
    return parse(json.dumps(document).encode(), "sdk", header_id)


def test_the_api_shape_passes_through_with_its_message_id_taken_out() -> None:
    envelope = parse(
        json.dumps(
            {"identifiers": [{"type": "email", "value": "a@x.de"}], "message_id": "m-1"}
        ).encode(),
        "sdk",
        None,
    )
    assert envelope.shape == "idgraph"
    assert envelope.message_id == "m-1"
    assert envelope.request == {
        "identifiers": [{"type": "email", "value": "a@x.de"}],
        "source": "sdk",
    }


def test_a_header_message_id_is_used_when_the_body_has_none() -> None:
    envelope = parse(b'{"identifiers": [], "source": "web"}', "sdk", "hdr-1")
    assert (envelope.message_id, envelope.request["source"]) == ("hdr-1", "web")


def test_a_segment_identify_maps_ids_and_traits_by_the_documented_policy() -> None:
    envelope = parse(
        json.dumps(
            {
                "type": "identify",
                "messageId": "seg-1",
                "userId": 42,
                "anonymousId": "anon-7",
                "traits": {"email": "Ann@X.de", "firstVisit": "2026-01-01", "city": "Porto"},
                "context": {"device": {"type": "ios", "advertisingId": "ad-1"}, "ip": "1.2.3.4"},
                "timestamp": "2026-03-01T09:00:00Z",
            }
        ).encode(),
        "sdk",
        None,
    )
    assert envelope.shape == "segment.identify"
    assert envelope.message_id == "seg-1"
    assert envelope.request == {
        "identifiers": [
            {"type": "customer_id", "value": "42"},
            {"type": "anonymous_id", "value": "anon-7"},
            {"type": "email", "value": "Ann@X.de"},
            {"type": "idfa", "value": "ad-1"},
        ],
        "source": "sdk",
        "timestamp": "2026-03-01T09:00:00Z",
        "traits": {"first_visit": "2026-01-01", "city": "Porto"},
    }


def test_a_segment_track_becomes_one_event_with_snake_case_names() -> None:
    envelope = parse(
        json.dumps(
            {
                "type": "track",
                "event": "Order Completed",
                "anonymousId": "anon-7",
                "properties": {"orderTotal": 12.5},
                "context": {"traits": {"phone": "+4915112345678"}},
            }
        ).encode(),
        "sdk",
        None,
    )
    assert envelope.request["events"] == [
        {"name": "order_completed", "properties": {"order_total": 12.5}}
    ]
    assert {"type": "phone", "value": "+4915112345678"} in envelope.request["identifiers"]
    assert envelope.message_id is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty-record"),
        (b'{"x": "\xc3"}', "not-utf8"),
        (b"{not json", "not-json"),
        (b"[1, 2]", "not-an-object"),
        (b'{"type": "page"}', "unknown-envelope"),
        (b'{"type": "track", "anonymousId": "a"}', "invalid-track"),
        (b'{"identifiers": [], "message_id": 5}', "invalid-message-id"),
    ],
)
def test_a_record_of_no_known_shape_is_refused_with_a_reason_and_no_value(
    value: bytes | None, reason: str
) -> None:
    with pytest.raises(EnvelopeError) as caught:
        parse(value, "sdk", None)
    assert caught.value.reason == reason
    assert "anonymousId" not in str(caught.value) or reason == "invalid-track"


def test_snake_case() -> None:
    assert snake_case("Order Completed") == "order_completed"
    assert snake_case("orderId") == "order_id"
    assert snake_case("  --  ") == ""
