"""Downstream deletion webhooks: signed, retried with backoff, visible in the request status.

The receiver is a real HTTP server on 127.0.0.1 in a thread (no internet); it verifies the
Standard Webhooks signature with the destination's secret, as a downstream system would.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from privacy.transport.webhooks import WebhookVerificationError, WebhookVerifier
from tests.api.test_dsr_api import EMAIL, Dsr, _person, _subject, dsr_settings, open_dsr


def _secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Receiver:
    """Answers the first ``fail_first`` deliveries with 500, then 204; records what it got."""

    def __init__(self, secret: str, fail_first: int) -> None:
        self.verifier = WebhookVerifier([secret])
        self.fail_first = fail_first
        self.received: list[dict[str, Any]] = []
        self.bodies: list[bytes] = []
        self.rejected = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.bodies.append(body)
                try:
                    verified = receiver.verifier.verify(dict(self.headers.items()), body)
                except WebhookVerificationError:
                    receiver.rejected += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                receiver.received.append(
                    {"id": verified.webhook_id, "body": json.loads(body), "path": self.path}
                )
                failing = len(receiver.received) <= receiver.fail_first
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def secret() -> str:
    return _secret()


@pytest.fixture
def receiver(secret: str) -> Iterator[Receiver]:
    opened = Receiver(secret, fail_first=1)
    yield opened
    opened.close()


@pytest.fixture
def app(tmp_path: Path, receiver: Receiver, secret: str, log_stream: io.StringIO) -> Iterator[Dsr]:
    destinations = {"crm": {"url": receiver.url + "/erasures", "secret": secret}}
    settings = dsr_settings(
        tmp_path,
        dsr_destinations=json.dumps(destinations),
        dsr_callback_secret=secret,
        dsr_webhook_backoff_seconds=0,
        dsr_webhook_max_attempts=3,
        outbound_allow_private=True,  # the receiver listens on 127.0.0.1
    )
    with open_dsr(settings) as opened:
        yield opened


def test_completed_erasure_is_delivered_signed_after_a_failing_first_attempt(
    app: Dsr, receiver: Receiver
) -> None:
    _person(app)
    app.submit(request_id="er-1", type="erasure", subject_identities=_subject())
    app.process()  # erases, then the first delivery gets a 500
    first = app.status("er-1")["deliveries"]
    app.process()  # backoff 0 in this test: the retry is due at once and gets a 204

    (delivery,) = app.status("er-1")["deliveries"]
    assert first[0]["state"] == "pending"
    assert first[0]["attempts"] == 1
    assert first[0]["last_status"] == 500
    assert delivery["state"] == "delivered"
    assert delivery["attempts"] == 2
    assert delivery["last_status"] == 204
    assert delivery["destination"] == "crm"
    assert receiver.rejected == 0
    assert len(receiver.received) == 2
    # The same webhook id on every attempt: the receiver's idempotency key.
    assert {r["id"] for r in receiver.received} == {delivery["webhook_id"]}
    body = receiver.received[-1]["body"]
    assert body["type"] == "dsr.erasure.completed"
    assert body["data"]["request_id"] == "er-1"
    assert body["data"]["status"] == "completed"
    assert body["data"]["counts"]["persons_erased"] == 1
    assert receiver.received[-1]["path"] == "/erasures"
    # No personal data in what left the service.
    for raw in receiver.bodies:
        assert EMAIL.encode() not in raw
        assert b"p_" not in raw


def test_callback_urls_are_notified_of_every_terminal_status(app: Dsr, receiver: Receiver) -> None:
    receiver.fail_first = 0
    app.submit(
        request_id="cb-1",
        type="access",
        subject_identities=_subject(),
        callback_urls=[receiver.url + "/callback"],
    )
    app.process()

    (delivery,) = app.status("cb-1")["deliveries"]
    assert delivery["destination"] == "callback:0"
    assert delivery["state"] == "delivered"
    assert receiver.received[0]["body"]["type"] == "dsr.access.completed"
    # Access requests do not notify the deletion destinations.
    assert [r["path"] for r in receiver.received] == ["/callback"]


def test_delivery_gives_up_after_the_last_attempt_and_says_so(app: Dsr, receiver: Receiver) -> None:
    receiver.fail_first = 100
    app.submit(request_id="er-2", type="erasure", subject_identities=_subject())
    for _ in range(5):
        app.process()

    (delivery,) = app.status("er-2")["deliveries"]
    assert delivery["state"] == "failed"
    assert delivery["attempts"] == 3
    assert delivery["last_status"] == 500
    assert delivery["next_attempt_at"] is None


def test_unreachable_destination_is_retried_with_exponential_backoff(
    tmp_path: Path, secret: str, log_stream: io.StringIO
) -> None:
    closed = Receiver(secret, fail_first=0)
    closed.close()  # nothing listens on this port any more
    destinations = {"gone": {"url": closed.url, "secret": secret}}
    settings = dsr_settings(
        tmp_path,
        dsr_destinations=json.dumps(destinations),
        dsr_webhook_backoff_seconds=60,
        outbound_allow_private=True,
    )
    with open_dsr(settings) as app:
        app.submit(request_id="er-3", type="erasure", subject_identities=_subject())
        app.process()
        (first,) = app.status("er-3")["deliveries"]
        service = app.container.dsr
        clock = service.clock
        service.clock = lambda: clock() + timedelta(seconds=61)
        app.process()
        (second,) = app.status("er-3")["deliveries"]

    assert first["last_error"] == "connection_failed"
    assert first["last_status"] is None
    waits = [(d["next_attempt_at"], d["attempts"]) for d in (first, second) if d["next_attempt_at"]]
    assert [attempts for _, attempts in waits] == [1, 2]
    # 60 s after the first failure, 120 s after the second.
    gap = datetime.fromisoformat(second["next_attempt_at"]) - datetime.fromisoformat(
        first["next_attempt_at"]
    )
    assert timedelta(seconds=115) < gap < timedelta(seconds=130)


def test_callback_urls_without_a_signing_secret_are_refused(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    with open_dsr(dsr_settings(tmp_path)) as plain:
        response = plain.submit(
            request_id="cb-2",
            type="access",
            subject_identities=_subject(),
            callback_urls=["https://dsr-tool.example/callback"],
        )
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "#/callback_urls"


def test_invalid_destination_setting_stops_start_up(tmp_path: Path) -> None:
    from bootstrap.container import build_container
    from identity.errors import ConfigurationError

    settings = dsr_settings(
        tmp_path, dsr_destinations=json.dumps({"crm": {"url": "ftp://x", "secret": _secret()}})
    )
    container = build_container(settings)
    try:
        with pytest.raises(ConfigurationError, match="crm"):
            _ = container.dsr
    finally:
        container.close()
