"""Outbound DSR webhooks: destinations, the payload, the sender and the retry schedule.

Every completed erasure is announced to each registered downstream destination, and every request
that ends (completed, failed, cancelled) to the request's own callback URLs, with a Standard
Webhooks signed ``POST`` (:func:`privacy.transport.webhooks.sign_headers`). The payload carries the
request
id, its type and status and the result counts: **no personal data** (the receiver matches the
request id with its own copy of the request).

Deliveries go through an outbox table (:class:`~privacy.dsr.store.SqliteDsrStore`), written in
the same transaction as the request's terminal status, so a crash cannot lose one; the worker
sends what is due, and retries a failure (no answer, or a non-2xx answer) with exponential backoff
up to a maximum number of attempts. The ``webhook-id`` stays the same across retries (the
receiver's idempotency key); each attempt is signed with a fresh timestamp.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from identity.errors import ConfigurationError
from privacy.transport.outbound import OutboundPolicy
from privacy.transport.webhooks import parse_secret


@dataclass(frozen=True, slots=True)
class Destination:
    """A downstream system to notify of erasures: its URL and signing secrets (``whsec_...``)."""

    name: str
    url: str
    secrets: tuple[str, ...]


def parse_destinations(raw: str | None, outbound: OutboundPolicy) -> dict[str, Destination]:
    """``IDGRAPH_DSR_DESTINATIONS``: ``{"name": {"url": ..., "secret": "whsec_..."}}``.

    ``secret`` may also be a list (rotation: every secret signs, the receiver accepts any).
    Raises :class:`ConfigurationError` naming the entry, never a secret.
    """
    if raw is None or not raw.strip():
        return {}
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"IDGRAPH_DSR_DESTINATIONS is not JSON: {exc.msg}") from None
    if not isinstance(document, dict):
        raise ConfigurationError("IDGRAPH_DSR_DESTINATIONS must be a JSON object of destinations")
    destinations: dict[str, Destination] = {}
    for name, spec in document.items():
        where = f"IDGRAPH_DSR_DESTINATIONS.{name}"
        if not isinstance(name, str) or not name.isidentifier() or len(name) > 64:
            raise ConfigurationError(f"{where}: the name must be an identifier-like token")
        if not isinstance(spec, dict) or set(spec) - {"url", "secret"}:
            raise ConfigurationError(f"{where}: expected an object with url and secret")
        secret = spec.get("secret")
        secrets = (secret,) if isinstance(secret, str) else tuple(secret or ())
        if not secrets or not all(isinstance(s, str) for s in secrets):
            raise ConfigurationError(f"{where}.secret: a whsec_ secret (or a list) is required")
        try:
            url = outbound.check_url(str(spec.get("url", "")), f"{where}.url")
            for s in secrets:
                parse_secret(s)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}.secret: {exc}") from None
        destinations[name] = Destination(name, url, secrets)
    return destinations


def payload(
    event: str,
    at: datetime,
    request_id: str,
    request_type: str,
    status: str,
    regulation: str,
    result: Mapping[str, int],
) -> bytes:
    """The webhook body (Standard Webhooks shape: ``type``, ``timestamp``, ``data``)."""
    body = {
        "type": event,
        "timestamp": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "data": {
            "request_id": request_id,
            "request_type": request_type,
            "status": status,
            "regulation": regulation,
            "counts": dict(sorted(result.items())),
        },
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def backoff(attempts: int, base: timedelta, cap: timedelta) -> timedelta:
    """The wait after the ``attempts``-th failed attempt: ``base * 2**(attempts-1)``, capped."""
    wait: timedelta = base * (2 ** max(attempts - 1, 0))
    return min(wait, cap)


class WebhookSender(Protocol):
    """Sends one signed POST; returns the HTTP status, raises :class:`OSError` without one."""

    def __call__(self, url: str, headers: Mapping[str, str], body: bytes, timeout: float) -> int:
        """POST ``body`` with ``headers`` to ``url``."""
        ...
