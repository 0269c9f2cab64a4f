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
restriction asks for the data to be *kept*.

The sweep pages by id (facts by fact id, persons by person id) and commits each page on its own,
so it is resumable (an interrupted run leaves every committed page done; the next run finds
nothing there) and idempotent (a second run deletes nothing more). It reports counts and writes
one audit entry per run, with counts only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from identity.model import FactKind, FactStatus, MemberScan
from identity.store.port import GraphStore, GraphTransaction
from privacy.access.purposes import PurposesPolicy
from privacy.auditing.log import AuditDraft, AuditLog
from privacy.consent.state import is_restricted
from privacy.scanning.facts import UNKNOWN_CATEGORY, FactsPolicy

SWEPT_KINDS = frozenset({FactKind.ATTRIBUTE, FactKind.EVENT})


def _utcnow() -> datetime:
    return datetime.now(UTC)


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

    def __call__(self, person_ids: Sequence[str], actor: str) -> Mapping[str, int]:
        """Erase ``person_ids``."""
        ...


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one sweep did."""

    facts_scanned: int = 0
    facts_deleted: int = 0
    facts_restricted_kept: int = 0
    deleted_by_category: Mapping[str, int] = field(default_factory=dict)
    persons_scanned: int = 0
    persons_inactive: int = 0
    persons_restricted_kept: int = 0
    persons_erased: int = 0
    erasure_counts: Mapping[str, int] = field(default_factory=dict)


class RetentionSweeper:
    """Runs the sweep described in the module docstring."""

    def __init__(
        self,
        graph: GraphStore,
        audit: AuditLog,
        rules: RetentionRules,
        erase_persons: PersonEraser | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if rules.inactive_person is not None and erase_persons is None:
            raise ValueError("erasing inactive persons needs a person eraser")
        self._graph = graph
        self._audit = audit
        self.rules = rules
        self._erase = erase_persons
        self._clock = clock

    def run(
        self,
        batch_size: int = 1_000,
        actor: str = "retention",
        progress: Callable[[RetentionReport], None] | None = None,
    ) -> RetentionReport:
        """Sweep facts, then inactive persons; audit the counts; return the report."""
        now = self._clock()
        report = self._sweep_facts(now, batch_size, progress)
        report = self._sweep_persons(now, batch_size, report, actor, progress)
        self._audit.append(
            [
                AuditDraft(
                    actor=actor,
                    action="retention.swept",
                    reason="retention sweep",
                    details={
                        "facts_scanned": report.facts_scanned,
                        "facts_deleted": report.facts_deleted,
                        "facts_restricted_kept": report.facts_restricted_kept,
                        "persons_scanned": report.persons_scanned,
                        "persons_erased": report.persons_erased,
                        "persons_restricted_kept": report.persons_restricted_kept,
                        "deleted_categories": sorted(report.deleted_by_category),
                    },
                )
            ]
        )
        return report

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
        while rows := self._graph.read(
            lambda tx, after=after: tx.member_page(scan, after, batch_size)  # type: ignore[misc]
        ):
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
        scan = MemberScan()  # no rules: every person; restriction records come with each row
        scanned = inactive = kept = erased = 0
        totals: Counter[str] = Counter()
        after = ""
        while rows := self._graph.read(
            lambda tx, after=after: tx.member_page(scan, after, batch_size)  # type: ignore[misc]
        ):
            scanned += len(rows)
            stale = [r for r in rows if r.last_seen <= cutoff]
            inactive += len(stale)
            restricted = [r for r in stale if is_restricted(r.consents)[0]]
            kept += len(restricted)
            targets = [r.person_id for r in stale if r not in restricted]
            if targets:
                counts = self._erase(targets, actor)
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
