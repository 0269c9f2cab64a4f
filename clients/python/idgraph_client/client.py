"""``IdGraph``: a small typed client over httpx.

- **Retries.** 429 and 503 answers, and connection failures, are retried up to ``max_retries``
  times, waiting what the server's ``Retry-After`` says (seconds or an HTTP date; capped at
  ``max_wait``), else an exponential back-off. Only requests that are safe to repeat are retried:
  reads, and writes the server de-duplicates — ingest events carry a ``message_id`` (one is
  generated when the caller gives none), DSRs have the caller's ``request_id``.
- **Errors.** Every 4xx/5xx is raised as a :class:`~idgraph_client.errors.ProblemError` subclass
  chosen by status, with the problem's ``name``, ``detail`` and per-field ``errors``.
- **Pagination.** ``iter_*`` methods follow ``next_cursor``/``next_after`` until the end.
"""

from __future__ import annotations

import email.utils
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Self, cast

import httpx

from idgraph_client.errors import problem_from_response
from idgraph_client.models import (
    Audience,
    ConsentResult,
    Dsr,
    Explanation,
    FeatureRow,
    Identifier,
    IdentifyResult,
    IngestResult,
    UnlinkResult,
)

RETRY_STATUSES = frozenset({429, 503})


def identifier(kind: str, value: str) -> Identifier:
    """``identifier("email", "ann@shop.de")`` -> ``{"type": "email", "value": "ann@shop.de"}``."""
    return {"type": kind, "value": value}


def new_message_id() -> str:
    """A fresh event id for :meth:`IdGraph.identify` / :meth:`IdGraph.ingest` retries."""
    return f"msg_{uuid.uuid4().hex}"


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now())


class IdGraph:
    """A client for one idgraph server and one API key.

    ``IdGraph("http://127.0.0.1:8000", api_key)``; use it as a context manager, or call
    :meth:`close`. ``transport`` and ``sleep`` are for tests and custom networking.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_wait: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        headers = {"Accept": "application/json, application/problem+json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_wait = max_wait
        self._sleep = sleep

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- transport -------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        retry: bool = True,
    ) -> httpx.Response:
        """Send one request (retried when ``retry`` and the answer says so); raise on 4xx/5xx."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, json=json, params=query)
            except httpx.TransportError:
                if not retry or attempt >= self.max_retries:
                    raise
                self._sleep(self._backoff(attempt))
                attempt += 1
                continue
            if response.status_code < 400:
                return response
            wait = parse_retry_after(response.headers.get("Retry-After"))
            if retry and response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                self._sleep(
                    min(self.max_wait, wait if wait is not None else self._backoff(attempt))
                )
                attempt += 1
                continue
            raise problem_from_response(response, wait)

    def _backoff(self, attempt: int) -> float:
        return float(min(self.max_wait, self.backoff * 2**attempt))

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    # -- health ----------------------------------------------------------------------------------

    def ready(self) -> bool:
        """Whether ``/readyz`` answers 200 (no retries: a probe)."""
        try:
            self.request("GET", "/readyz", retry=False)
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False
        return True

    # -- identity --------------------------------------------------------------------------------

    def identify(
        self,
        identifiers: Sequence[Identifier],
        source: str,
        *,
        traits: Mapping[str, Any] | None = None,
        events: Sequence[Mapping[str, Any]] = (),
        timestamp: datetime | None = None,
        message_id: str | None = None,
    ) -> IdentifyResult:
        """Link identifiers seen together. Retried safely: the event's ``message_id`` (given or
        generated) makes the server answer ``duplicate`` to a repeat instead of applying it."""
        body = _event(
            identifiers, source, traits, events, timestamp, message_id or new_message_id()
        )
        return cast(IdentifyResult, self._json("POST", "/v1/identify", json=body))

    def ingest(self, events: Sequence[Mapping[str, Any]]) -> IngestResult:
        """A batch in one transaction. Each event without a ``message_id`` gets one, so a retry
        after a lost answer applies nothing twice. Events are dicts shaped like identify's body."""
        batch = [{**e, "message_id": e.get("message_id") or new_message_id()} for e in events]
        return cast(IngestResult, self._json("POST", "/v1/ingest", json={"events": batch}))

    def resolve(self, kind: str, value: str) -> str:
        """The person id of an identifier (:class:`NotFoundError` if unknown)."""
        body = {"identifier": identifier(kind, value)}
        return str(self._json("POST", "/v1/resolve", json=body)["person_id"])

    def explain(self, a: Identifier, b: Identifier) -> Explanation:
        """The chain of links between two identifiers (admin scope)."""
        return cast(Explanation, self._json("POST", "/v1/links/explain", json={"a": a, "b": b}))

    def unlink(self, a: Identifier, b: Identifier) -> UnlinkResult:
        """Remove the direct link between two identifiers (admin scope; not retried)."""
        body = {"a": a, "b": b}
        return cast(UnlinkResult, self._json("POST", "/v1/links/unlink", json=body, retry=False))

    # -- consent ---------------------------------------------------------------------------------

    def record_consent(
        self,
        identifiers: Sequence[Identifier],
        *,
        decisions: Mapping[str, bool] | None = None,
        tcf: str | None = None,
        gpp: str | None = None,
        source: str = "api",
        timestamp: datetime | None = None,
    ) -> ConsentResult:
        """Record consent decisions (per purpose) or a TCF/GPP string (consent scope)."""
        body: dict[str, Any] = {"identifiers": list(identifiers), "source": source}
        if decisions is not None:
            body["decisions"] = dict(decisions)
        if tcf is not None:
            body["tcf"] = tcf
        if gpp is not None:
            body["gpp"] = gpp
        if timestamp is not None:
            body["timestamp"] = timestamp.isoformat()
        # Consent records are append-only and the latest decision wins: a repeat is harmless.
        return cast(ConsentResult, self._json("POST", "/v1/consent", json=body))

    # -- reads -----------------------------------------------------------------------------------

    def profile(self, person_id: str, purpose: str) -> dict[str, Any]:
        """The fields of a person ``purpose`` may see (404 if none: unknown or not readable)."""
        path = f"/v1/profiles/{person_id}"
        return cast(dict[str, Any], self._json("GET", path, params={"purpose": purpose}))

    def create_audience(self, name: str, purpose: str, rules: Mapping[str, Any]) -> Audience:
        """Define a rule segment for one purpose (not retried: each call makes a new one)."""
        body = {"name": name, "purpose": purpose, "rules": dict(rules)}
        return cast(Audience, self._json("POST", "/v1/audiences", json=body, retry=False))

    def audience(self, audience_id: str) -> Audience:
        """An audience definition."""
        return cast(Audience, self._json("GET", f"/v1/audiences/{audience_id}"))

    def iter_audience_members(self, audience_id: str, *, page_size: int = 500) -> Iterator[str]:
        """Every member's person id, following ``next_cursor`` page by page."""
        path = f"/v1/audiences/{audience_id}/members"
        for page in self._pages("GET", path, {"limit": page_size}, "cursor", "next_cursor"):
            yield from page["members"]

    def iter_features(self, purpose: str, *, page_size: int = 500) -> Iterator[FeatureRow]:
        """Every row of the purpose's feature table."""
        params = {"purpose": purpose, "limit": page_size}
        for page in self._pages("GET", "/v1/features", params, "cursor", "next_cursor"):
            yield from page["rows"]

    # -- data-subject requests -------------------------------------------------------------------

    def submit_dsr(
        self,
        request_id: str,
        request_type: str,
        subject_identities: Sequence[Identifier],
        **fields: Any,
    ) -> Dsr:
        """Submit a DSR; the same ``request_id`` and content again is a replay, so it retries."""
        body = {
            "request_id": request_id,
            "type": request_type,
            "subject_identities": list(subject_identities),
            **fields,
        }
        return cast(Dsr, self._json("POST", "/v1/dsr", json=body))

    def dsr(self, request_id: str) -> Dsr:
        """A request's status."""
        return cast(Dsr, self._json("GET", f"/v1/dsr/{request_id}"))

    def iter_dsr(self, *, status: str | None = None, page_size: int = 100) -> Iterator[Dsr]:
        """Every request (of one status), following ``next_after``."""
        params = {"status": status, "limit": page_size}
        for page in self._pages("GET", "/v1/dsr", params, "after", "next_after"):
            yield from page["requests"]

    def _pages(
        self, method: str, path: str, params: dict[str, Any], cursor_param: str, next_key: str
    ) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            page = self._json(method, path, params={**params, cursor_param: cursor})
            yield page
            cursor = page.get(next_key)
            if not cursor:
                return


def _event(
    identifiers: Sequence[Identifier],
    source: str,
    traits: Mapping[str, Any] | None,
    events: Sequence[Mapping[str, Any]],
    timestamp: datetime | None,
    message_id: str,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "identifiers": list(identifiers),
        "source": source,
        "message_id": message_id,
    }
    if traits is not None:
        body["traits"] = dict(traits)
    if events:
        body["events"] = [dict(e) for e in events]
    if timestamp is not None:
        body["timestamp"] = timestamp.isoformat()
    return body
