"""The operations dashboard: what a privacy team checks first each morning.

Figures come from the stores (graph counts), the DSR queue (what is due this week, what is
overdue), the audit log (the consent mix of the latest ``consent.recorded`` entries) and the
ingest counters the entrypoint keeps (passed in as a callable, since only the process that
ingests counts). Nothing here is about one person: counts only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from identity.model import StoreStats
from identity.store.port import GraphStore
from privacy.auditing.log import AuditLog
from privacy.consent.recording import CONSENT_RECORDED
from privacy.dsr.model import DsrRequest, DsrStatus, DsrType
from privacy.dsr.service import DsrService

CONSENT_MIX_ENTRIES = 5_000  # how many recent audit entries the consent mix looks at
OPEN_STATUSES = (DsrStatus.PENDING, DsrStatus.IN_PROGRESS)


@dataclass(frozen=True, slots=True)
class IngestFigures:
    """Counters of the ingesting process since it started."""

    started_at: datetime
    events_by_outcome: Mapping[str, float] = field(default_factory=dict)
    refusals_by_reason: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DueRequest:
    """An open data-subject request and how many days are left (negative: overdue)."""

    request: DsrRequest
    days_left: int


@dataclass(frozen=True, slots=True)
class Dashboard:
    """Every figure of the dashboard."""

    now: datetime
    stats: StoreStats
    ingest: IngestFigures
    events_per_minute: float
    open_requests: int
    due_this_week: tuple[DueRequest, ...]
    overdue: int
    consent_mix: Mapping[str, Mapping[str, int]]  # purpose -> "granted"/"denied" -> count
    consent_signals: Mapping[str, int]  # signal -> count
    audit_head: int


def days_left(due_at: datetime, now: datetime) -> int:
    """Whole days until ``due_at`` (rounded down; negative once overdue)."""
    return (due_at - now) // timedelta(days=1)


class OperationsDashboard:
    """Builds the dashboard figures from the stores and the ingest counters."""

    def __init__(
        self,
        store: GraphStore,
        dsr: DsrService,
        audit: AuditLog,
        ingest: Callable[[], IngestFigures],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._dsr = dsr
        self._audit = audit
        self._ingest = ingest
        self._clock = clock

    def open_requests(self) -> list[DueRequest]:
        """Every pending or in-progress request with its days left, soonest due first."""
        now = self._clock()
        found: list[DueRequest] = []
        for status in OPEN_STATUSES:
            after = ""
            while True:
                page = self._dsr.list_requests(status, after, 500)
                found.extend(DueRequest(r, days_left(r.due_at, now)) for r in page)
                if len(page) < 500:
                    break
                after = page[-1].request_id
        return sorted(found, key=lambda d: d.request.due_at)

    def queue(
        self,
        status: DsrStatus | None = None,
        request_type: DsrType | None = None,
        overdue_only: bool = False,
        limit: int = 500,
    ) -> list[DueRequest]:
        """Requests for the queue page, filtered, soonest due first (open ones before closed)."""
        now = self._clock()
        statuses = [status] if status is not None else list(DsrStatus)
        found: list[DueRequest] = []
        for wanted in statuses:
            after = ""
            while len(found) < limit:
                page = self._dsr.list_requests(wanted, after, 500)
                for request in page:
                    if request_type is not None and request.type is not request_type:
                        continue
                    overdue = not request.status.terminal and request.due_at < now
                    if overdue_only and not overdue:
                        continue
                    found.append(DueRequest(request, days_left(request.due_at, now)))
                if len(page) < 500:
                    break
                after = page[-1].request_id
        found.sort(key=lambda d: (d.request.status.terminal, d.request.due_at))
        return found[:limit]

    def build(self) -> Dashboard:
        """The dashboard as of now."""
        now = self._clock()
        ingest = self._ingest()
        minutes = max((now - ingest.started_at).total_seconds() / 60, 1 / 60)
        events = sum(ingest.events_by_outcome.values())
        open_requests = self.open_requests()
        week = tuple(d for d in open_requests if d.request.due_at <= now + timedelta(days=7))
        head = self._audit.head().seq
        mix: dict[str, Counter[str]] = {}
        signals: Counter[str] = Counter()
        after = max(head - CONSENT_MIX_ENTRIES, 0)
        while after < head:
            batch = self._audit.entries(after_seq=after, limit=1_000)
            if not batch:
                break
            for entry in batch:
                if entry.action != CONSENT_RECORDED or entry.purpose is None:
                    continue
                outcome = "granted" if entry.decision == "allow" else "denied"
                mix.setdefault(entry.purpose, Counter())[outcome] += 1
                signal = entry.details.get("signal")
                if isinstance(signal, str):
                    signals[signal] += 1
            after = batch[-1].seq
        return Dashboard(
            now=now,
            stats=self._store.stats(),
            ingest=ingest,
            events_per_minute=events / minutes,
            open_requests=len(open_requests),
            due_this_week=week,
            overdue=sum(1 for d in open_requests if d.request.due_at < now),
            consent_mix={p: dict(c) for p, c in sorted(mix.items())},
            consent_signals=dict(signals.most_common()),
            audit_head=head,
        )


__all__ = ["Dashboard", "DueRequest", "IngestFigures", "OperationsDashboard", "days_left"]
