"""Issue 13, finding 2: SSRF through DSR callback URLs and deletion webhooks.

Real local listeners on 127.0.0.1 stand in for "an internal service": with the default policy
nothing may reach them, whether the URL names the address literally (422 at submission) or a
name that resolves to it (refused at delivery, after DNS resolution). The delivery record a
caller sees does not say whether a host or port answered.
"""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from privacy.transport.outbound import DestinationRefusedError, OutboundPolicy, PinnedWebhookSender
from tests.api.test_dsr_api import Dsr, _subject, dsr_settings, open_dsr
from tests.privacy.dsr.test_dsr_webhooks import _secret


class Listener:
    """A local HTTP server that records every request; answers ``status`` (and ``location``)."""

    def __init__(self, status: int = 204, location: str | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                listener.requests.append(
                    {
                        "path": self.path,
                        "host": self.headers["host"],
                        "body": self.rfile.read(length),
                    }
                )
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, host: str = "127.0.0.1", path: str = "/cb") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    opened = Listener()
    yield opened
    opened.close()


def _app(tmp_path: Path, **extra: Any) -> Any:
    return open_dsr(dsr_settings(tmp_path, dsr_callback_secret=_secret(), **extra))


# -- at submission: literal addresses, scheme, allowlist --------------------------------------

INTERNAL = [
    "http://127.0.0.1:8080/cb",
    "http://[::1]/cb",
    "http://10.1.2.3/cb",
    "http://192.168.0.10/cb",
    "http://172.16.5.4/cb",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://100.64.0.1/cb",
    "http://224.0.0.1/cb",
    "http://0.0.0.0/cb",
    "http://[::ffff:127.0.0.1]/cb",
    "http://[fe80::1]/cb",
]


@pytest.mark.parametrize("url", INTERNAL)
def test_callback_url_with_an_internal_literal_address_is_422_at_submission(
    tmp_path: Path, log_stream: io.StringIO, url: str
) -> None:
    with _app(tmp_path) as app:
        response = app.submit(
            request_id="cb-1", type="erasure", subject_identities=_subject(), callback_urls=[url]
        )
        stored = app.container.dsr.list_requests()

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["pointer"] == "#/callback_urls/0"
    assert stored == []


def test_metadata_address_is_refused_even_when_private_networks_are_allowed(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    with _app(tmp_path, outbound_allow_private=True) as app:
        metadata = app.submit(
            request_id="cb-m",
            type="erasure",
            subject_identities=_subject(),
            callback_urls=["http://169.254.169.254/latest/"],
        )
        private = app.submit(
            request_id="cb-p",
            type="erasure",
            subject_identities=_subject(),
            callback_urls=["http://10.1.2.3/cb"],
        )

    assert metadata.status_code == 422, metadata.text
    assert private.status_code == 202, private.text


def test_callback_url_off_the_allowlist_is_422(tmp_path: Path, log_stream: io.StringIO) -> None:
    with _app(tmp_path, outbound_allowed_hosts=["*.dsr-tool.example", "hooks.example"]) as app:

        def submit(request_id: str, url: str) -> int:
            return int(
                app.submit(
                    request_id=request_id,
                    type="erasure",
                    subject_identities=_subject(),
                    callback_urls=[url],
                ).status_code
            )

        assert submit("a-1", "https://eu.dsr-tool.example/cb") == 202
        assert submit("a-2", "https://hooks.example/cb") == 202
        assert submit("a-3", "https://dsr-tool.example.evil.test/cb") == 422
        assert submit("a-4", "https://evil-dsr-tool.example/cb") == 422
        assert submit("a-5", "https://other.example/cb") == 422


def test_production_refuses_http_callbacks(tmp_path: Path) -> None:
    policy = OutboundPolicy(allow_http=False)

    with pytest.raises(ValueError, match="https"):
        policy.check_url("http://dsr-tool.example/cb", "callback URL")
    assert policy.check_url("https://dsr-tool.example/cb", "callback URL")


# -- at delivery: after DNS resolution, pinned, no redirects ----------------------------------


def _deliver(app: Dsr, url: str, request_id: str = "cb-d") -> dict[str, Any]:
    response = app.submit(
        request_id=request_id, type="erasure", subject_identities=_subject(), callback_urls=[url]
    )
    assert response.status_code == 202, response.text
    app.process()
    (delivery,) = app.status(request_id)["deliveries"]
    return dict(delivery)


def test_a_name_resolving_to_loopback_is_refused_at_delivery_and_nothing_is_sent(
    tmp_path: Path, listener: Listener, log_stream: io.StringIO
) -> None:
    # "localhost" is not a literal address: it passes submission, and must fail the check made
    # on what it resolves to.
    with _app(tmp_path) as app:
        delivery = _deliver(app, listener.url("localhost"))

    assert listener.requests == []
    assert delivery["state"] == "failed"
    assert delivery["last_status"] is None
    assert delivery["last_error"] == "undeliverable"


def test_refused_closed_and_silent_destinations_look_the_same_to_the_caller(
    tmp_path: Path, listener: Listener, log_stream: io.StringIO
) -> None:
    closed = Listener()
    closed.close()  # nothing listens there any more
    with _app(tmp_path, dsr_webhook_max_attempts=1) as app:
        refused = _deliver(app, listener.url("localhost"), "cb-r")
    with _app(tmp_path / "b", outbound_allow_private=True, dsr_webhook_max_attempts=1) as app:
        unreachable = _deliver(app, closed.url(), "cb-u")

    shown = ("state", "last_status", "last_error")
    assert [refused[k] for k in shown] == [unreachable[k] for k in shown]


def test_a_private_listener_is_reached_only_when_private_networks_are_allowed(
    tmp_path: Path, listener: Listener, log_stream: io.StringIO
) -> None:
    with _app(tmp_path, outbound_allow_private=True) as app:
        delivery = _deliver(app, listener.url("localhost"))

    assert delivery["state"] == "delivered", delivery
    assert len(listener.requests) == 1


def test_connection_goes_to_the_checked_address_when_dns_changes_its_answer(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DNS rebinding: the first answer (checked) is the listener; every later answer points to an
    # address nothing listens on. A sender that looked the name up again would fail.
    answers: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        if host[0].isdigit():  # the connect of a literal address: not a DNS answer
            return real(host, port, *args, **kwargs)
        target = "127.0.0.1" if not answers else "127.0.0.2"
        answers.append(target)
        return real(target, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    sender = PinnedWebhookSender(OutboundPolicy(allow_http=True, allow_private=True))

    status = sender(listener.url("rebind.test"), {"content-type": "application/json"}, b"{}", 5)

    assert status == 204
    assert answers == ["127.0.0.1"]  # resolved once, connected to that address
    assert listener.requests[0]["host"] == f"rebind.test:{listener.port}"


def test_a_name_with_any_internal_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def mixed(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", mixed)
    sender = PinnedWebhookSender(OutboundPolicy())

    with pytest.raises(DestinationRefusedError):
        sender("https://mixed.example/cb", {}, b"{}", 5)


def test_redirects_are_not_followed(tmp_path: Path, log_stream: io.StringIO) -> None:
    target = Listener()
    redirecting = Listener(status=302, location=target.url(path="/stolen"))
    try:
        with _app(tmp_path, outbound_allow_private=True, dsr_webhook_max_attempts=1) as app:
            delivery = _deliver(app, redirecting.url())
    finally:
        target.close()
        redirecting.close()

    assert len(redirecting.requests) == 1
    assert target.requests == []
    assert delivery["last_status"] == 302
    assert delivery["state"] == "failed"


def test_destination_setting_with_an_internal_address_stops_start_up(tmp_path: Path) -> None:
    from bootstrap.container import build_container
    from identity.errors import ConfigurationError

    destinations = {"crm": {"url": "http://169.254.169.254/", "secret": _secret()}}
    container = build_container(dsr_settings(tmp_path, dsr_destinations=json.dumps(destinations)))
    try:
        with pytest.raises(ConfigurationError, match="metadata"):
            _ = container.dsr
    finally:
        container.close()
