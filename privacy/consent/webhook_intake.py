"""Inbound consent webhooks: per-source verification, payload mapping and the replay guard.

:class:`ConsentWebhooks` holds, per configured source, a Standard Webhooks verifier (one or more
``whsec_`` secrets) and a payload mapper (:mod:`privacy.consent.mappers`), and one replay guard
for all of them. The API's ``POST /v1/webhooks/consent/{source}`` uses it in this order:

1. :meth:`ConsentWebhooks.verify`: headers and signature (401 on any failure). An unknown source,
   or a source configured without secrets (development only), is checked against a random
   secret nobody holds, so it fails exactly like a wrong signature: the answer never reveals
   which sources exist.
2. :meth:`ConsentWebhooks.mapper` maps the body, and the signals are translated (422 on a bad
   payload). The webhook id is **not** consumed yet: a payload that cannot be applied must not
   use up the id, so the sender's retry gets the same 422 instead of a misleading "replayed",
   and succeeds once the configuration (a purpose map, say) is fixed.
3. :meth:`ConsentWebhooks.claim` records the id (401 ``replayed`` if it was already recorded).
4. The store write and the audit entries; if either fails, :meth:`ConsentWebhooks.release`
   gives the id back so the sender's retry is applied (nothing is lost).
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from identity.errors import ConfigurationError
from privacy.consent.mappers import PayloadMapper
from privacy.transport.webhooks import (
    DEFAULT_TOLERANCE_S,
    HEADER_ID,
    ReplayGuard,
    VerifiedWebhook,
    WebhookVerificationError,
    WebhookVerifier,
)

# How often (seconds) a delivery also prunes expired replay-guard entries. Pruning is a cheap
# indexed DELETE; doing it in-line means no scheduler is needed to keep the table small.
PRUNE_INTERVAL_S = 60


@dataclass(frozen=True, slots=True)
class WebhookSource:
    """A configured source: its ``whsec_`` secrets (none: every delivery is refused) and its
    payload mapper."""

    name: str
    secrets: tuple[str, ...] = field(repr=False)
    mapper: PayloadMapper


def build_verifiers(
    sources: Iterable[WebhookSource],
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    clock: Callable[[], float] = time.time,
) -> dict[str, WebhookVerifier]:
    """A verifier per source that has secrets; a bad secret raises ``ConfigurationError``."""
    verifiers: dict[str, WebhookVerifier] = {}
    for source in sources:
        if not source.secrets:
            continue
        try:
            verifiers[source.name] = WebhookVerifier(source.secrets, tolerance_s, clock)
        except ConfigurationError as exc:
            # The message says what is wrong with the secret, never the secret itself.
            raise ConfigurationError(f"webhook secrets of source {source.name!r}: {exc}") from None
    return verifiers


class ConsentWebhooks:
    """The configured consent-webhook sources and the replay guard they share."""

    def __init__(
        self,
        sources: Mapping[str, WebhookSource],
        guard: ReplayGuard,
        tolerance_s: int = DEFAULT_TOLERANCE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sources = dict(sources)
        self._verifiers = build_verifiers(self._sources.values(), tolerance_s, clock)
        self._guard = guard
        self._clock = clock
        decoy = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
        # Checked for unknown sources so that they fail like a wrong signature, at the same cost.
        self._decoy = WebhookVerifier([decoy], tolerance_s, clock)
        self._prune_lock = threading.Lock()
        self._pruned_at = 0.0

    @property
    def sources(self) -> tuple[str, ...]:
        """The configured source names, sorted."""
        return tuple(sorted(self._sources))

    def verify(self, source: str, headers: Mapping[str, str], body: bytes) -> VerifiedWebhook:
        """Check headers and signature for ``source``; :class:`WebhookVerificationError` if not.

        Does not consume the webhook id (see :meth:`claim`).
        """
        return self._verifiers.get(source, self._decoy).verify(headers, body)

    def mapper(self, source: str) -> PayloadMapper:
        """The payload mapper of a source that :meth:`verify` accepted."""
        return self._sources[source].mapper

    def claim(self, source: str, verified: VerifiedWebhook) -> None:
        """Record the webhook id; ``replayed`` (401) if this source already delivered it."""
        self._prune()
        if not self._guard.check_and_record(source, verified.webhook_id):
            raise WebhookVerificationError("replayed", f"{HEADER_ID} was already accepted")

    def release(self, source: str, verified: VerifiedWebhook) -> None:
        """Forget the webhook id after a failure, so the sender's retry is applied."""
        self._guard.forget(source, verified.webhook_id)

    def _prune(self) -> None:
        now = self._clock()
        with self._prune_lock:
            if now - self._pruned_at < PRUNE_INTERVAL_S:
                return
            self._pruned_at = now
        self._guard.prune(now)
