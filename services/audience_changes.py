"""Audience-membership change events: who joined or left each audience since the last pass.

Audiences are definitions, not member tables (:mod:`privacy.access.audiences`): membership changes
whenever facts, consent, restrictions or erasures do. A pass of :class:`AudienceChangePublisher`
therefore, for every audience:

1. **reads the current members** through :meth:`privacy.access.reads.ReadService.current_members`,
as a
   caller acting for the audience's owner (its consumer) with the audience's purpose only: every
   person passes the policy engine (consent, restriction, retention) and every page is audited
   like a member-page read (``read.audience``, details ``"changes": true``, actor
   ``system:audience-events``). A withdrawn consent or an erasure makes the member *leave*;
2. maps each member to the **owner's per-consumer pseudonym** (:mod:`privacy.access.pseudonyms`, the
   same key column as the consumer's feature tables), so the topic never carries a person id and
   two consumers' audiences cannot be joined;
3. compares with the audience's **snapshot** (the pseudonyms of the last pass, in the control
   database, :meth:`privacy.access.audiences.AudienceStore.member_snapshot`);
4. writes one ``audience.membership.changed`` event per member who joined or left to the graph's
   **outbox** (published at least once by the relay of ``idgraph consume``), and only then
   replaces the snapshot. A crash between the two writes the same changes again on the next pass
   (new event ids): consumers treat ``joined``/``left`` as idempotent set operations.

A walk that hits its page limit (``max_pages`` pages of ``ReadService.max_scan`` persons) is not
complete, and an incomplete walk cannot tell who left: that audience is skipped (counted, logged)
rather than reported wrongly. The first pass of a new audience announces every member as joined.
A hash-key rotation changes every pseudonym (by design, :mod:`privacy.access.pseudonyms`): the next
pass
reports every old pseudonym as left and every new one as joined.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import structlog

from identity import outbound
from identity.model import OutboundEvent
from identity.store.port import GraphStore
from privacy.access.audiences import Audience, AudienceStore
from privacy.access.policy_engine import Caller
from privacy.access.pseudonyms import FeaturePseudonymizer
from privacy.access.reads import ReadService

log = structlog.get_logger("idgraph.audience_events")

ACTOR: Final = "system:audience-events"
MAX_AUDIENCES: Final = 10_000


@dataclass(slots=True)
class AudienceChangeReport:
    """What one pass did (counts only)."""

    audiences: int = 0
    joined: int = 0
    left: int = 0
    incomplete: int = 0  # audiences skipped because the walk hit its page limit


class AudienceChangePublisher:
    """Writes audience-membership change events to the outbox; see the module docstring."""

    def __init__(
        self,
        reads: ReadService,
        audiences: AudienceStore,
        store: GraphStore,
        pseudonyms: FeaturePseudonymizer,
        *,
        max_pages: int = 50,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._reads = reads
        self._audiences = audiences
        self._store = store
        self._pseudonyms = pseudonyms
        self._max_pages = max_pages
        self._clock = clock

    def run_once(self) -> AudienceChangeReport:
        """One pass over every audience."""
        report = AudienceChangeReport()
        for audience in self._audiences.list_audiences(None, MAX_AUDIENCES):
            report.audiences += 1
            self.audience(audience, report)
        return report

    def audience(self, audience: Audience, report: AudienceChangeReport) -> None:
        """Compare one audience's members with its snapshot and write the changes."""
        consumer = audience.owner or audience.created_by
        caller = Caller(
            key_id=ACTOR,
            purposes=frozenset({audience.purpose}),
            consumer=consumer,
            actor=ACTOR,
        )
        walk = self._reads.current_members(caller, audience, self._max_pages)
        if not walk.complete:
            report.incomplete += 1
            log.warning(
                "audience_changes_incomplete",
                audience=audience.audience_id,
                scanned=walk.scanned,
            )
            return
        current = {self._pseudonyms.pseudonym(consumer, p): p for p in walk.members}
        before = self._audiences.member_snapshot(audience.audience_id)
        joined = sorted(current.keys() - before)
        left = sorted(before - current.keys())
        if not joined and not left:
            return
        at = self._clock()

        def event(member: str, change: str, person_id: str | None) -> OutboundEvent:
            return outbound.audience_membership_changed(
                audience.audience_id,
                audience.purpose,
                consumer,
                member,
                self._pseudonyms.key_id,
                "joined" if change == "joined" else "left",
                at,
                person_id,
            )

        events = [event(m, "joined", current[m]) for m in joined]
        events += [event(m, "left", None) for m in left]
        self._store.write(lambda tx: tx.add_outbound(events))
        self._audiences.save_member_snapshot(audience.audience_id, current.keys())
        report.joined += len(joined)
        report.left += len(left)
        log.info(
            "audience_changes_written",
            audience=audience.audience_id,
            joined=len(joined),
            left=len(left),
        )
