"""Prometheus metrics: the one module that defines every metric idgraph exports.

Each app gets its own :class:`Metrics` (``app.state.metrics``, the ``AppMetrics`` dependency in
:mod:`api.deps`) with its own ``CollectorRegistry``, never prometheus-client's global one: tests
build many apps in one process, and two apps must not share or collide on series.
``GET /metrics`` (scope ``metrics`` or ``admin``) serves the registry in the text format.

Privacy rule: **label values come only from fixed sets** (route templates, HTTP methods and
statuses, the ``Outcome``/``RefusalReason`` enums, :class:`StoreOperation`, declared purpose
names). Never an identifier, a person id, an API key id or any free text: a scrape goes to
monitoring systems with wider access and longer retention than the graph itself.

Fed here and by the routers:

- ``idgraph_http_requests_total{method,route,status}`` and
  ``idgraph_http_request_duration_seconds{method,route}`` by :class:`api.middleware.ApiMiddleware`;
  ``route`` is the template (``/v1/links/explain``), ``unmatched`` for unknown paths.
- ``idgraph_ingest_events_total{outcome}``, ``idgraph_ingest_refused_identifiers_total{reason}``
  and ``idgraph_ingest_facts_total{status}`` by :meth:`Metrics.record_ingest`.
- ``idgraph_store_seconds{operation}`` by :meth:`Metrics.time_store` around engine calls.
- These and ``idgraph_ingest_journal_batches_opened_total{source}`` also count what the
  server's ingest applier process applied (``idgraph serve``'s child): it tallies them into a
  file (``services.metrics.TalliedMetrics``), and :class:`Metrics` adds the file's counts at
  each collection.
- ``idgraph_rate_limited_total`` by the auth dependency when a key is over its rate.

- ``idgraph_policy_decisions_total{purpose,decision}``: the read service reports every audited
  decision (a profile read, each person of a members/export/features page, a purpose refused
  for the key) through its ``on_decision`` hook, which :func:`api.app.create_app` points at
  :meth:`Metrics.record_policy_decision`; the purposes of the policy file are declared at start.
  A purpose that was not declared is counted as ``undeclared`` so that a name from a request can
  never become a label value.
- ``idgraph_dsr_queue_depth``, ``idgraph_dsr_queue_oldest_age_seconds`` and
  ``idgraph_dsr_overdue_requests``: the DSR worker calls
  ``metrics.set_dsr_queue(depth, oldest_age_seconds, overdue)`` whenever it looks at its queue.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

import fastapi.routing
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from starlette.routing import Match
from starlette.types import Scope

from identity.model import EventOutcome, Outcome, RefusalReason
from services.metrics import (
    FACT_STATUSES,
    STORE_BUCKETS,
    JournalBatchSource,
    OutcomeCounts,
    StoreOperation,
    StoreTally,
    Tallies,
    timed,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST
UNMATCHED_ROUTE = "unmatched"
UNDECLARED_PURPOSE = "undeclared"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """Every metric of one app, in the app's own registry.

    ``applier_tallies``: what an ingest applier in another process counted (``idgraph serve``
    with its applier child: ``services.metrics.TalliedMetrics``), read at each collection and
    added to this app's ingest and store series, so that one scrape counts every ingest
    whichever process applied it."""

    def __init__(self, applier_tallies: Callable[[], Tallies] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        # The series an applier process also counts are collected through _WithApplier, which
        # adds its tallies: they are kept out of the registry themselves.
        applied = None if applier_tallies is not None else registry
        self.requests = Counter(
            "idgraph_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "idgraph_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            registry=registry,
        )
        self.ingest_events = Counter(
            "idgraph_ingest_events",
            "Ingested events by outcome.",
            ["outcome"],
            registry=applied,
        )
        self.refused_identifiers = Counter(
            "idgraph_ingest_refused_identifiers",
            "Identifiers of ingested events that were not linked, by reason.",
            ["reason"],
            registry=applied,
        )
        self.facts = Counter(
            "idgraph_ingest_facts",
            "Facts (traits, events, kept identifiers) of ingested events by what became of them.",
            ["status"],
            registry=applied,
        )
        self.store_seconds = Histogram(
            "idgraph_store_seconds",
            "Latency of resolution-engine calls on the graph store, by operation.",
            ["operation"],
            buckets=STORE_BUCKETS,
            registry=applied,
        )
        self.journal_batches_opened = Counter(
            "idgraph_ingest_journal_batches_opened",
            "Queued asynchronous ingest batches the journal's applier opened, by where their "
            "events came from: memory (kept as validated by the accepting process) or journal "
            "(unsealed and decoded from the row: another process's batch, or one past the kept "
            "bound).",
            ["source"],
            registry=applied,
        )
        self.rate_limited = Counter(
            "idgraph_rate_limited",
            "Requests refused with 429 because their API key was over its rate.",
            registry=registry,
        )
        self.policy_decisions = Counter(
            "idgraph_policy_decisions",
            "Policy-engine decisions by purpose and decision (allow, deny).",
            ["purpose", "decision"],
            registry=registry,
        )
        self.dsr_queue_depth = Gauge(
            "idgraph_dsr_queue_depth",
            "Data-subject requests waiting to be processed.",
            registry=registry,
        )
        self.dsr_queue_oldest_age = Gauge(
            "idgraph_dsr_queue_oldest_age_seconds",
            "Age of the oldest waiting data-subject request (0 when none waits).",
            registry=registry,
        )
        self.dsr_overdue = Gauge(
            "idgraph_dsr_overdue_requests",
            "Open data-subject requests at or past their due date (including late intakes).",
            registry=registry,
        )
        self._purposes: frozenset[str] = frozenset()
        # Fixed label sets start at zero, so dashboards and rate() see them before the first event.
        for outcome in Outcome:
            self.ingest_events.labels(outcome.value)
        for reason in RefusalReason:
            self.refused_identifiers.labels(reason.value)
        for status in FACT_STATUSES:
            self.facts.labels(status)
        for source in JournalBatchSource:
            self.journal_batches_opened.labels(source.value)
        for operation in StoreOperation:
            self.store_seconds.labels(operation.value)
        self._applier = _WithApplier(self, applier_tallies) if applier_tallies is not None else None
        if self._applier is not None:
            registry.register(self._applier)

    def record_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one HTTP request. ``route`` must be a route template or ``unmatched``."""
        method = method if method in HTTP_METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.request_seconds.labels(method, route).observe(seconds)

    def record_ingest(self, outcomes: Iterable[EventOutcome]) -> None:
        """Count the outcomes, refusals and facts of ingested events.

        Added up first, then one increment per label value: per event it was five label
        lookups and increments (each takes the series' lock), 250 for a 50-event batch."""
        counts = OutcomeCounts.of(outcomes)
        for value, count in counts.events.items():
            self.ingest_events.labels(value).inc(count)
        for reason, count in counts.refused.items():
            self.refused_identifiers.labels(reason).inc(count)
        for status, count in zip(FACT_STATUSES, counts.facts, strict=True):
            if count:
                self.facts.labels(status).inc(count)

    def record_opened_batches(self, source: JournalBatchSource, count: int) -> None:
        """Count ``count`` queued batches the journal's applier opened from ``source``."""
        if count > 0:
            self.journal_batches_opened.labels(source.value).inc(count)

    def time_store(self, operation: StoreOperation) -> AbstractContextManager[None]:
        """Observe how long the enclosed engine call takes (failures included)."""
        return timed(self.store_seconds.labels(operation.value).observe)

    def declare_purposes(self, purposes: Iterable[str]) -> None:
        """Declare the purpose names (from the purposes policy) that may appear as labels."""
        self._purposes = frozenset(purposes)

    def record_policy_decision(self, purpose: str, allowed: bool, count: int = 1) -> None:
        """Count ``count`` policy decisions (a page decides once per person). Undeclared
        purposes count as ``undeclared``."""
        label = purpose if purpose in self._purposes else UNDECLARED_PURPOSE
        if count > 0:
            self.policy_decisions.labels(label, "allow" if allowed else "deny").inc(count)

    def set_dsr_queue(self, depth: int, oldest_age_seconds: float, overdue: int = 0) -> None:
        """Publish the DSR queue's depth, the age of its oldest request and how many open
        requests are overdue."""
        self.dsr_queue_depth.set(depth)
        self.dsr_queue_oldest_age.set(oldest_age_seconds)
        self.dsr_overdue.set(overdue)

    def totals(self, *counted: tuple[Counter, str]) -> list[dict[str, float]]:
        """Each ``(counter, label)``'s current totals by ``label`` value (for the console
        dashboard), the applier process's included, in the order given.

        The applier's tally file is read once for all of them: one dashboard render asks for
        several counters, and each read is a file read and a JSON parse."""
        if self._applier is not None:
            collected = self._applier.collect_some([counter for counter, _ in counted])
        else:
            collected = [counter.collect() for counter, _ in counted]
        found: list[dict[str, float]] = []
        for families, (_, label) in zip(collected, counted, strict=True):
            totals: dict[str, float] = {}
            for metric in families:
                for sample in metric.samples:
                    if sample.name.endswith("_total") and sample.value:
                        key = sample.labels.get(label, "")
                        totals[key] = totals.get(key, 0.0) + sample.value
            found.append(totals)
        return found

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class _WithApplier(Collector):
    """The series an ingest applier process also counts, with its tallies added: counters label
    value by label value, the store histogram bucket by bucket (both use
    ``services.metrics.STORE_BUCKETS``)."""

    def __init__(self, metrics: Metrics, tallies: Callable[[], Tallies]) -> None:
        self._tallies = tallies
        self._families: dict[int, tuple[Counter | Histogram, Callable[[Tallies], Any], str]] = {
            id(m): (m, pick, label)
            for m, pick, label in (
                (metrics.ingest_events, lambda t: t.events, "outcome"),
                (metrics.refused_identifiers, lambda t: t.refused, "reason"),
                (metrics.facts, lambda t: t.facts, "status"),
                (metrics.journal_batches_opened, lambda t: t.opened, "source"),
                (metrics.store_seconds, lambda t: t.store, "operation"),
            )
        }

    def describe(self) -> Iterable[Metric]:
        """The families, for the registry's duplicate check (no file read)."""
        for family, _, _ in self._families.values():
            yield from family.describe()

    def collect(self) -> Iterable[Metric]:
        """Every family, the tallies read once for the whole collection."""
        tallies = self._tallies()
        for family, pick, label in self._families.values():
            yield from _added(family, pick(tallies), label)

    def collect_some(self, families: Iterable[Counter | Histogram]) -> list[Iterable[Metric]]:
        """Each of ``families`` with the tallies added, the tallies read once for all."""
        tallies = self._tallies()
        collected: list[Iterable[Metric]] = []
        for family in families:
            _, pick, label = self._families[id(family)]
            collected.append(list(_added(family, pick(tallies), label)))
        return collected


def _added(
    family: Counter | Histogram, extra: Mapping[str, int] | Mapping[str, StoreTally], label: str
) -> Iterator[Metric]:
    """``family``'s samples with ``extra`` (by ``label`` value) added. Both sides hold label
    values of the same fixed sets, and the server declares them all at start (a series for every
    value): each value the applier counted has its samples here."""
    for metric in family.collect():
        metric.samples = [
            sample._replace(value=sample.value + _extra(sample, extra.get(sample.labels[label])))
            if label in sample.labels
            else sample
            for sample in metric.samples
        ]
        yield metric


def _extra(sample: Sample, tally: int | StoreTally | None) -> float:
    """What the applier adds to one sample: a count, or a histogram's bucket, count or sum."""
    if tally is None:
        return 0
    if isinstance(tally, int):
        return tally if sample.name.endswith("_total") else 0
    if sample.name.endswith("_bucket"):
        bound = float(sample.labels["le"])
        # Cumulative: every observation at or below this bucket's bound.
        within = sum(1 for b in STORE_BUCKETS if b <= bound)
        return sum(tally.buckets[:within]) if not math.isinf(bound) else tally.count
    if sample.name.endswith("_count"):
        return tally.count
    if sample.name.endswith("_sum"):
        return tally.seconds
    return 0


def _flat_routes(app: Any) -> list[Any]:
    """The app's routes with included routers expanded.

    Newer FastAPI includes routers lazily: ``app.routes`` then holds one entry per included
    router, and ``fastapi.routing.iter_route_contexts`` yields the routes with their full paths.
    """
    routes = getattr(getattr(app, "router", None), "routes", [])
    expand = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(expand(routes)) if expand is not None else list(routes)


class RouteTemplates:
    """The template of the route that handled (or would have handled) a request.

    The router stores the matched route in the scope; its template is looked up among the app's
    routes so a prefix given to ``include_router`` is part of it. A response sent before routing
    (a 413 from the body limit) has no route in the scope; the app's routes are then matched
    here, so the request still counts under its template. A path no route matches is
    ``unmatched``: the filled-in path would make every scanned URL a new series, and paths can
    hold ids.
    """

    def __init__(self) -> None:
        self._by_route: dict[int, str] = {}

    def _refresh(self, app: Any) -> None:
        self._by_route = {
            id(getattr(route, "original_route", route)): route.path
            for route in _flat_routes(app)
            if isinstance(getattr(route, "path", None), str)
        }

    def template(self, scope: Scope) -> str:
        """The route template for ``scope``, or ``unmatched``."""
        route = scope.get("route")
        if route is not None:
            if id(route) not in self._by_route:
                self._refresh(scope.get("app"))  # first request, or routes added since
            if id(route) in self._by_route:
                return self._by_route[id(route)]
        return self._match(scope)

    @staticmethod
    def _match(scope: Scope) -> str:
        # A full match wins; a partial one (the path exists, the method does not: 405) is next.
        partial: str | None = None
        for candidate in _flat_routes(scope.get("app")):
            match = candidate.matches(scope)[0]
            if match is Match.FULL:
                return str(candidate.path)
            if match is Match.PARTIAL and partial is None:
                partial = str(candidate.path)
        return partial or UNMATCHED_ROUTE
