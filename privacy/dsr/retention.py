"""The retention sweeper: delete facts past their category's retention, and inactive persons.

Retention per data category is derived from ``policies/purposes.yaml``, not declared twice: a
category's retention is the **longest** ``retention_days`` any purpose gives it. The policy engine
already withholds a fact from a purpose once it is older than that purpose's retention; past the
longest one no purpose may read it, so keeping it serves nothing (GDPR Art. 5(1)(e), storage
limitation) and the sweeper deletes it. A category no purpose reads at all (``special_category``
by default, and the ``unknown`` category of quarantined unknown keys) is kept ``unread`` days
(``IDGRAPH_RETENTION_UNREAD_DAYS``, default 30: time to review quarantined values), then deleted.
Quarantined facts follow the same rules as active ones. Kept raw identifiers are not facts of a
category: they live as long as their identifier. Facts of a person whose processing is restricted
(Art. 18) are not deleted either: the subject asked for them to be *kept* (typically to establish
or defend a claim, Art. 18(1)(c)); storage is the one operation a restriction allows. They are
counted (``facts_restricted_kept``) and swept on the first run after the restriction is lifted.

Persons without activity (``last_seen``) for ``inactive_person`` are erased whole through the
erasure service, **without suppression**: nobody asked for them to stay away, so when they come
back they are a new person. A person whose processing is restricted (Art. 18) is skipped: a
restriction asks for the data to be *kept*. Every run has an id of its own (:func:`new_run_id`,
``retention-<UTC time>-<random>``): its erasures carry it as their request id, so the recipients'
notices (Art. 17(2), 19), the ``dsr.erasure`` entries and the run's ``retention.swept`` entry all
name the same run, and two runs never share one.

**Records of the service's own processing** are kept as ``policies/retention.yaml`` declares
(:class:`RecordRetention`, validated at start-up like every policy file): ended data-subject
requests with their export metadata and delivery log, finished DSR deliveries, refusals, kept raw
identifiers of persons inactive that long (restricted persons' are kept), and consent records
superseded by a later record of the same purpose and signal on the same identifier (their proofs
with them; the derived consent state cannot change). Each is deleted in bounded batches.

The sweep pages by id (facts by fact id, persons by person id) and commits each page on its own,
so it is resumable (an interrupted run leaves every committed page done; the next run finds
nothing there) and idempotent (a second run deletes nothing more). It reports counts and writes
one audit entry per run, with counts only.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from identity.errors import StoreIntegrityError
from identity.model import FactKind, FactStatus, MemberRow, MemberScan
from identity.policy import load_policy_file
from identity.store.port import GraphStore, GraphTransaction
from privacy.access.purposes import PurposesPolicy
from privacy.auditing.log import AuditDraft, AuditLog, AuditRef
from privacy.consent.state import is_restricted
from privacy.scanning.facts import UNKNOWN_CATEGORY, FactsPolicy

SWEPT_KINDS = frozenset({FactKind.ATTRIBUTE, FactKind.EVENT})
Days = Annotated[int, Field(ge=1, le=36_500)]


class RecordRetention(BaseModel):
    """``records`` of ``policies/retention.yaml``: days each kind of record is kept (the file
    says from when). Defaults are the shipped file's values."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dsr_requests: Days = 1095
    dsr_deliveries: Days = 395
    refusals: Days = 395
    kept_raw_identifiers: Days = 1095
    consent_proofs: Days = 1095


class RetentionPolicy(BaseModel):
    """``policies/retention.yaml``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1]
    records: RecordRetention = Field(default_factory=RecordRetention)


def load_retention_policy(path: Path) -> RetentionPolicy:
    """Load and validate ``retention.yaml``; a problem raises
    :class:`~identity.policy.PolicyFileError` naming the file and field."""
    return load_policy_file(path, RetentionPolicy)


class DsrRecords(Protocol):
    """The DSR store's retention (:meth:`privacy.dsr.store.SqliteDsrStore.purge`)."""

    def purge(self, requests_before: datetime, deliveries_before: datetime) -> tuple[int, int]:
        """Delete old ended requests and finished deliveries; ``(requests, deliveries)``."""
        ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _seen_by(row: MemberRow, cutoff: datetime) -> bool:
    """Whether the person of ``row`` (a scan with ``person_times``) was last seen by ``cutoff``.

    A row without its time is a store that ignored the request: failing loudly beats treating
    the person as active, which would keep data past its retention without a word."""
    if row.last_seen is None:
        raise StoreIntegrityError("a member scan asked for person times returned none")
    return row.last_seen <= cutoff


@dataclass(frozen=True, slots=True)
class RetentionRules:
    """How long each category is kept, and after how long without activity a person goes."""

    categories: Mapping[str, timedelta]
    unread: timedelta
    inactive_person: timedelta | None = None

    def retention(self, category: str) -> timedelta:
        """The retention of ``category`` (``unread`` for a category no purpose reads)."""
        return self.categories.get(category, self.unread)


def rules_from_policies(
    purposes: PurposesPolicy,
    facts: FactsPolicy,
    unread_days: int,
    inactive_person_days: int,
) -> RetentionRules:
    """Category retention = the longest retention any purpose gives it (module docstring)."""
    longest: dict[str, timedelta] = {}
    for purpose in purposes.purposes.values():
        for category, access in purpose.categories.items():
            longest[category] = max(longest.get(category, access.retention), access.retention)
    unread = timedelta(days=unread_days)
    categories = {name: longest.get(name, unread) for name in facts.categories}
    categories.setdefault(UNKNOWN_CATEGORY, unread)
    return RetentionRules(
        categories=categories,
        unread=unread,
        inactive_person=timedelta(days=inactive_person_days) if inactive_person_days else None,
    )


class PersonEraser(Protocol):
    """Erases whole persons by id, without suppression; returns counts."""

    def __call__(self, person_ids: Sequence[str], actor: str, run_id: str) -> Mapping[str, int]:
        """Erase ``person_ids`` for the retention run ``run_id`` (their erasure's request id)."""
        ...


def new_run_id(now: datetime) -> str:
    """A retention run's id: ``retention-`` + the run's UTC start (seconds) + 8 random hex.

    Why not one constant: recipients told of a retention erasure match its notice to the run
    (and de-duplicate) by this id, and an operator finds the run's audit entries by it. The time
    makes it readable and sortable, the random part makes two runs in one second distinct. It has
    the audit reference shape (no personal data in it)."""
    return f"retention-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one sweep did."""

    run_id: str = ""  # new_run_id(): the request id of its erasures and their notices
    facts_scanned: int = 0
    facts_deleted: int = 0
    facts_restricted_kept: int = 0
    deleted_by_category: Mapping[str, int] = field(default_factory=dict)
    persons_scanned: int = 0
    persons_inactive: int = 0
    persons_restricted_kept: int = 0
    persons_erased: int = 0
    erasure_counts: Mapping[str, int] = field(default_factory=dict)
    records_deleted: Mapping[str, int] = field(default_factory=dict)  # retention.yaml kinds


class RetentionSweeper:
    """Runs the sweep described in the module docstring."""

    def __init__(
        self,
        graph: GraphStore,
        audit: AuditLog,
        rules: RetentionRules,
        erase_persons: PersonEraser | None = None,
        clock: Callable[[], datetime] = _utcnow,
        records: RecordRetention | None = None,
        dsr_records: DsrRecords | None = None,
    ) -> None:
        if rules.inactive_person is not None and erase_persons is None:
            raise ValueError("erasing inactive persons needs a person eraser")
        self._graph = graph
        self._audit = audit
        self.rules = rules
        self._erase = erase_persons
        self._clock = clock
        self.records = records
        self._dsr_records = dsr_records

    def run(
        self,
        batch_size: int = 1_000,
        actor: str = "retention",
        progress: Callable[[RetentionReport], None] | None = None,
    ) -> RetentionReport:
        """Sweep facts, then inactive persons; audit the counts; return the report."""
        now = self._clock()
        run_id = new_run_id(now)
        report = replace(self._sweep_facts(now, batch_size, progress), run_id=run_id)
        report = self._sweep_persons(now, batch_size, report, actor, progress)
        if self.records is not None:
            report = replace(report, records_deleted=self._sweep_records(now, batch_size))
        self._audit.append(
            [
                AuditDraft(
                    actor=actor,
                    action="retention.swept",
                    reason="retention sweep",
                    details={
                        "run_id": AuditRef(run_id),
                        "facts_scanned": report.facts_scanned,
                        "facts_deleted": report.facts_deleted,
                        "facts_restricted_kept": report.facts_restricted_kept,
                        "persons_scanned": report.persons_scanned,
                        "persons_erased": report.persons_erased,
                        "persons_restricted_kept": report.persons_restricted_kept,
                        # Access exports of erased persons, destroyed with them (issue 13).
                        "exports_destroyed": report.erasure_counts.get("exports_destroyed", 0),
                        "deleted_categories": sorted(report.deleted_by_category),
                        **{f"{k}_deleted": n for k, n in sorted(report.records_deleted.items())},
                    },
                )
            ]
        )
        return report

    def _sweep_records(self, now: datetime, batch_size: int) -> dict[str, int]:
        """Retention of the service's own records (module docstring); counts by kind."""
        records = self.records
        assert records is not None  # noqa: S101 - checked by the caller
        deleted: Counter[str] = Counter()

        def days(n: int) -> datetime:
            return now - timedelta(days=n)

        refusals, proofs = days(records.refusals), days(records.consent_proofs)
        sweeps: tuple[tuple[str, Callable[[GraphTransaction], int]], ...] = (
            ("refusals", lambda tx: tx.delete_refusals_before(refusals, batch_size)),
            ("consent_proofs", lambda tx: tx.delete_superseded_consents(proofs, batch_size)),
        )
        for kind, delete in sweeps:
            while True:  # bounded batches, each its own transaction
                n = self._graph.write(delete)
                deleted[kind] += n
                if n < batch_size:
                    break
        deleted["kept_raw_identifiers"] = self._sweep_raw(days(records.kept_raw_identifiers))
        if self._dsr_records is not None:
            requests, deliveries = self._dsr_records.purge(
                days(records.dsr_requests), days(records.dsr_deliveries)
            )
            deleted["dsr_requests"] = requests
            deleted["dsr_deliveries"] = deliveries
        return dict(sorted(deleted.items()))

    def _member_rows(self, scan: MemberScan, after: str, limit: int) -> tuple[MemberRow, ...]:
        """The rows of one member page of ``scan`` (a scan without a consent filter: every
        selected person is a row; empty at the end)."""
        return self._graph.read(lambda tx: tx.member_page(scan, after, limit)).rows

    def _sweep_raw(self, cutoff: datetime, batch_size: int = 1_000) -> int:
        """Delete the kept raw identifiers of persons not seen since ``cutoff`` (restricted
        persons' are kept); the keyed hashes stay, so the identifiers still resolve."""
        scan = MemberScan(person_times=True)
        deleted = 0
        after = ""
        while rows := self._member_rows(scan, after, batch_size):
            stale = [
                r.person_id
                for r in rows
                if _seen_by(r, cutoff) and not is_restricted(r.consents)[0]
            ]
            if stale:

                def drop(tx: GraphTransaction, stale: list[str] = stale) -> int:
                    facts = [
                        f.fact_id
                        for p in stale
                        for f in tx.person_facts(p, (FactKind.RAW_IDENTIFIER,), FactStatus.ACTIVE)
                    ]
                    return tx.delete_facts(facts) if facts else 0

                deleted += self._graph.write(drop)
            after = rows[-1].person_id
        return deleted

    def _sweep_facts(
        self, now: datetime, batch_size: int, progress: Callable[[RetentionReport], None] | None
    ) -> RetentionReport:
        scanned = kept = 0
        by_category: Counter[str] = Counter()
        restricted = self._restricted_nodes(batch_size)
        for status in (FactStatus.ACTIVE, FactStatus.QUARANTINED):
            after = ""
            while True:

                def page(
                    tx: GraphTransaction, after: str = after, status: FactStatus = status
                ) -> tuple[int, Counter[str], int, str | None]:
                    facts = tx.facts_page(status, after, batch_size)
                    due = [
                        f
                        for f in facts
                        if f.kind in SWEPT_KINDS and f.at + self.rules.retention(f.category) <= now
                    ]
                    expired = [f for f in due if f.node_id not in restricted]
                    if expired:
                        tx.delete_facts([f.fact_id for f in expired])
                    last = facts[-1].fact_id if len(facts) == batch_size else None
                    held = len(due) - len(expired)
                    return len(facts), Counter(f.category for f in expired), held, last

                count, deleted, held, last = self._graph.write(page)
                scanned += count
                kept += held
                by_category.update(deleted)
                if progress is not None:
                    progress(_facts_report(scanned, by_category, kept))
                if last is None:
                    break
                after = last
        return _facts_report(scanned, by_category, kept)

    def _restricted_nodes(self, batch_size: int) -> frozenset[str]:
        """The identifier nodes of every person whose processing is restricted now.

        A member scan without purposes returns only restriction records, so this is one pass
        over the persons plus one cluster read per restricted person (few, by nature).
        """
        scan = MemberScan()
        persons: list[str] = []
        after = ""
        while rows := self._member_rows(scan, after, batch_size):
            persons.extend(r.person_id for r in rows if is_restricted(r.consents)[0])
            after = rows[-1].person_id
        if not persons:
            return frozenset()
        return frozenset(
            self._graph.read(lambda tx: [n.node_id for p in persons for n in tx.cluster(p).nodes])
        )

    def _sweep_persons(
        self,
        now: datetime,
        batch_size: int,
        report: RetentionReport,
        actor: str,
        progress: Callable[[RetentionReport], None] | None,
    ) -> RetentionReport:
        limit = self.rules.inactive_person
        if limit is None or self._erase is None:
            return report
        cutoff = now - limit
        # No rules: every person; restriction records come with each row.
        scan = MemberScan(person_times=True)
        scanned = inactive = kept = erased = 0
        totals: Counter[str] = Counter()
        after = ""
        while rows := self._member_rows(scan, after, batch_size):
            scanned += len(rows)
            stale = [r for r in rows if _seen_by(r, cutoff)]
            inactive += len(stale)
            restricted = [r for r in stale if is_restricted(r.consents)[0]]
            kept += len(restricted)
            targets = [r.person_id for r in stale if r not in restricted]
            if targets:
                counts = self._erase(targets, actor, report.run_id)
                totals.update(counts)
                erased += counts.get("persons_erased", len(targets))
            after = rows[-1].person_id
            if progress is not None:
                progress(_with_persons(report, scanned, inactive, kept, erased, totals))
        return _with_persons(report, scanned, inactive, kept, erased, totals)


def _facts_report(scanned: int, by_category: Counter[str], kept: int) -> RetentionReport:
    return RetentionReport(
        facts_scanned=scanned,
        facts_deleted=sum(by_category.values()),
        facts_restricted_kept=kept,
        deleted_by_category=dict(sorted(by_category.items())),
    )


def _with_persons(
    report: RetentionReport,
    scanned: int,
    inactive: int,
    kept: int,
    erased: int,
    totals: Counter[str],
) -> RetentionReport:
    return RetentionReport(
        run_id=report.run_id,
        facts_scanned=report.facts_scanned,
        facts_deleted=report.facts_deleted,
        facts_restricted_kept=report.facts_restricted_kept,
        deleted_by_category=report.deleted_by_category,
        persons_scanned=scanned,
        persons_inactive=inactive,
        persons_restricted_kept=kept,
        persons_erased=erased,
        erasure_counts=dict(sorted(totals.items())),
    )
