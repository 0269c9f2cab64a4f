"""Erasure (GDPR Art. 17): delete everything about a person, crypto-shred it, and make it stick.

What one erasure does
---------------------
1. **One graph transaction** finds every person the request's identifiers resolve to (under
   every hash key: rotation) and deletes each with everything keyed by it or its identifier
   nodes (:meth:`~identity.store.port.GraphTransaction.erase_person`: the person, its nodes,
   links touching them, facts and consent records anchored to them, refusals holding their
   hashes). In the same transaction it adds the erased identifiers' keyed hashes to the
   **suppression list** and writes an **erasure outbox** entry naming the erased nodes (the
   vault's key owners). Either all of that commits or none of it (a failure rolls it back).
2. The **vault** then destroys those nodes' data keys (crypto-shredding, in another file, so it
   cannot share the graph's transaction). Every ciphertext of the person, in every copy and
   backup of the graph database, becomes unreadable.
3. The graph database's WAL is **checkpointed and truncated** (SQLite), so no old page image of
   the deleted rows stays in the WAL; the store runs with ``secure_delete``, so the deleted cells
   are zeroed in the main file. So is the **ingest journal's** WAL (``Prefer: respond-async``
   batches, :mod:`services.async_ingest`): an applied batch's row is zeroed, but the frames
   written when it was queued hold its sealed bytes under a day key that this erasure does not
   shred (the key is shredded once its day's batches are all applied, see there).
4. One **audit entry** (``dsr.erasure``): actor, request id, erasure id and counts. No person id,
   no identifier, no hash: the audit log outlives everything and must not hold personal data.
5. The outbox entry is **marked done** and its node ids cleared.

A crash after step 1 leaves the graph fully erased and the outbox entry pending;
:meth:`ErasureService.recover` (run at start-up by ``bootstrap.container.build_container``) runs
steps 2-5 for every pending entry. Each step is idempotent (a second shred destroys nothing more, a
second completion changes nothing); only the audit entry can be written twice if a crash falls
between steps 4 and 5, and both copies carry the same ``erasure_id``. Within one process, steps
2-5 of an erasure run once: every :class:`ErasureService` on the same store finishes erasures
under one lock (:func:`_finishing_lock`), and :meth:`ErasureService.recover` reads what is
pending under it, so the DSR worker's periodic recovery never finishes an erasure that another
thread is finishing. Two processes on one store (an API server and a separate worker) can still
both finish one interrupted erasure: the steps stay idempotent, and the audit entry is then
written twice under the same ``erasure_id``, as after a crash.

What is kept, and why
---------------------
* **Suppression list** (``(type, key id, digest)`` per erased identifier): so re-ingesting the
  same identifiers does not re-create the person (privacy invariant 4). Keyed HMAC digests:
  without the hash key nobody can tell which identifier an entry stands for. Nothing else is
  stored with them (no time, no request id). The identifiers named in the request are
  suppressed under every known hash key; the person's other identifiers under the key they were
  stored with and, for those whose normalized value the vault kept (``keep_raw``), under every
  known key too. Identifiers named in the request but not found in the graph are suppressed as
  well: the subject named them as theirs, and an ingest racing the request must not create them.
  Only :meth:`ErasureService.lift_suppression` removes entries, for a fresh opt-in.
* **Audit facts**: that an erasure happened, when, who asked, the request id, and counts.
* **Outbox entry**: erasure id, request id, actor, time, counts, once done without node ids.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol, runtime_checkable

import structlog

from identity import outbound
from identity.errors import IdGraphError, InvalidFieldError, StoreUnavailableError
from identity.hashing import HashedIdentifier, Keyring
from identity.identifiers import NormalizedIdentifier
from identity.model import ErasureOutboxEntry, FactKind, new_erasure_id
from identity.store.port import GraphStore, GraphTransaction
from privacy.auditing.log import AuditDraft, AuditLog, AuditRef, audit_ref_or_text
from privacy.keys.vault import Vault, VaultError

# Log lines carry ids and counts only: never a person id, identifier, hash or node id.
log = structlog.get_logger("idgraph.erasure")

ERASURE_ACTION = "dsr.erasure"
LIFT_ACTION = "dsr.suppression_lifted"
_COUNT_NAMES = (
    "persons_erased",
    "identifiers_erased",
    "facts_deleted",
    "consents_deleted",
    "links_deleted",
    "refusals_deleted",
    "identifiers_suppressed",
    "refused_persons_erased",
    "refused_persons_for_review",
)
REVIEW_ACTION = "erasure.review_refused_link"


@dataclass(frozen=True, slots=True)
class ErasureResult:
    """What one erasure removed. Counts only: it is audited and returned to DSR callers."""

    persons_erased: int
    identifiers_erased: int
    facts_deleted: int
    consents_deleted: int
    links_deleted: int
    keys_shredded: int
    identifiers_suppressed: int
    # Persons holding data that arrived with a refused identifier of the subject: erased with
    # the subject when that data is all they hold, else listed for review (audit log).
    refused_persons_erased: int = 0
    refused_persons_for_review: int = 0
    # Recipient notices queued (Art. 17(2), 19), one per recipient of any erased person.
    recipients_notified: int = 0
    # Keys those recipients hold that their notices could not list: hashes of kept values whose
    # data key was already shredded (an operator's shred, an interrupted erasure).
    recipient_keys_unreadable: int = 0


@dataclass(frozen=True, slots=True)
class HeldNotices:
    """What :meth:`ErasureNotifier.hold` stored: how many notices, and how many keys their
    recipients hold that could not be listed (unreadable kept values, counted, not fatal)."""

    notices: int = 0
    keys_unreadable: int = 0


@dataclass(frozen=True, slots=True)
class _Plan:
    """Who one erasure deletes: the persons found, those followed through refusals of the
    subject's identifiers, and those only listed for review."""

    persons: tuple[str, ...]
    follow: tuple[str, ...]
    review: tuple[str, ...]

    @property
    def erased(self) -> tuple[str, ...]:
        return (*self.persons, *self.follow)


class _PlanChangedError(Exception):
    """The write transaction found more persons to erase than its notices were made for."""

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        super().__init__("the persons to erase changed since the plan")


# How often an erasure plans: the first attempts make their notices before the graph transaction
# and start over when ingest added a person under them; the last one makes them inside the write
# transaction, from exactly the persons it erases (no person can join it unnotified).
_PLAN_ATTEMPTS: Final = 3
# Held notices older than this and not of a pending erasure belong to a rolled-back one
# (privacy.dsr.service.DsrService.drop_orphaned_notices).
HELD_GRACE: Final = timedelta(hours=1)


class ErasureNotifier(Protocol):
    """Tells the recipients of erased persons (GDPR Art. 17(2), 19); implemented by
    :class:`privacy.dsr.service.DsrService`. Every erasure path (a DSR, the persons it
    follows through refusals, retention) goes through it."""

    def hold(
        self,
        erasure_id: str,
        request_id: str,
        person_ids: Sequence[str],
        *,
        tx: GraphTransaction | None = None,
    ) -> HeldNotices:
        """Make and store, held, one sealed notice per recipient of ``person_ids``; how many
        (and how many of the keys they hold could not be listed: :class:`HeldNotices`).

        ``tx``: read the persons through this open graph transaction (the erasure's own, whose
        write lock is held) instead of a transaction of the notifier's own."""
        ...

    def release(self, erasure_id: str) -> int:
        """Let the held notices of a completed erasure go out (idempotent)."""
        ...

    def drop(self, erasure_id: str) -> None:
        """Delete the held notices of an erasure that did not commit (keys shredded)."""
        ...


class ErasureIncompleteError(IdGraphError):
    """The graph part of an erasure is committed, but a later step failed (key shred, WAL
    truncation, audit entry). Nothing about the person is readable through idgraph any more;
    :meth:`ErasureService.recover` (also run at start-up) finishes the erasure. Retry it."""

    code = "erasure-incomplete"

    def __init__(self, request_id: str, erasure_id: str, step: str) -> None:
        self.request_id = request_id
        self.erasure_id = erasure_id
        self.step = step
        super().__init__(
            f"erasure {erasure_id} (request {request_id}) is committed in the graph but its "
            f"{step} failed; it completes on recover()"
        )


@runtime_checkable
class _Checkpointing(Protocol):
    """A store whose write-ahead log can be folded back and truncated (SQLite)."""

    def checkpoint(self) -> None: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


# One lock per store (see the module docstring): finishing an erasure (steps 2-5) and reading
# what is pending for recovery. Weak keys: a closed, dropped store takes its lock with it.
_FINISHING: weakref.WeakKeyDictionary[object, threading.Lock] = weakref.WeakKeyDictionary()
_FINISHING_GUARD = threading.Lock()


def _finishing_lock(store: object) -> threading.Lock:
    """The lock under which erasures on ``store`` are finished in this process."""
    with _FINISHING_GUARD:
        return _FINISHING.setdefault(store, threading.Lock())


class ErasureService:
    """Erases the persons some identifiers resolve to; see the module docstring."""

    def __init__(
        self,
        store: GraphStore,
        vault: Vault,
        keyring: Keyring,
        audit: AuditLog,
        *,
        clock: Callable[[], datetime] = _utcnow,
        checkpoint_attempts: int = 20,
        checkpoint_wait_s: float = 0.05,
        outbound_events: bool = False,
    ) -> None:
        self._store = store
        self._vault = vault
        self._keyring = keyring
        self._audit = audit
        self._clock = clock
        self._checkpoint_attempts = max(1, checkpoint_attempts)
        self._checkpoint_wait_s = checkpoint_wait_s
        self._outbound = outbound_events
        self._notifier: ErasureNotifier | None = None
        # Other files whose WAL can hold the person's data sealed under a key this erasure does
        # not shred (the ingest journal's batches: a day key), truncated with the graph's.
        self._also_checkpoint: list[Callable[[], None]] = []
        # Persons to review found by an erasure's graph transaction, by erasure id, until the
        # erasure's audit entries are written (the transaction function may run twice).
        self._review: dict[str, tuple[str, ...]] = {}

    # -- erasure ----------------------------------------------------------------------------

    def attach_notifier(self, notifier: ErasureNotifier) -> None:
        """Tell the recipients of every person this service erases (Art. 17(2), 19): the DSR
        service attaches itself when it is built (``bootstrap.dsr``)."""
        self._notifier = notifier

    def attach_checkpoint(self, checkpoint: Callable[[], None]) -> None:
        """Also fold back and truncate another SQLite file's WAL at step 3 (the ingest journal:
        the container attaches it). ``checkpoint`` raises :class:`StoreUnavailableError` when a
        reader blocks it (retried as the graph's is; the erasure is incomplete if it keeps
        failing, and :meth:`recover` tries again)."""
        self._also_checkpoint.append(checkpoint)

    def erase(
        self, identifiers: Sequence[NormalizedIdentifier], request_id: str, actor: str
    ) -> ErasureResult:
        """Erase every person ``identifiers`` resolve to and suppress the identifiers.

        Atomic in the graph (one transaction). Raises :class:`ErasureIncompleteError` if the
        graph part committed but the key shred, WAL truncation or audit entry failed: the
        erasure then completes on :meth:`recover`. An unknown identifier erases nothing but is
        still suppressed. ``request_id`` and ``actor`` go to the audit log and are checked
        before anything is deleted (:class:`~identity.errors.InvalidFieldError`).
        """
        self._draft(actor, request_id, "e_check", dict.fromkeys(_COUNT_NAMES, 0), 0)
        requested: dict[tuple[str, bytes], tuple[HashedIdentifier, ...]] = {}
        for identifier in identifiers:
            candidates = self._keyring.candidates(identifier)
            requested[(candidates[0].type, candidates[0].digest)] = candidates

        def plan(tx: GraphTransaction) -> _Plan:
            candidates = {c for hashes in requested.values() for c in hashes}
            found = tx.find_identifiers(sorted(candidates, key=lambda h: (h.digest, h.type)))
            persons = sorted({node.person_id for node in found})
            # Before anything is deleted: the refusals of the subject's identifiers are the
            # only link to data their events brought to another person, and go with them.
            follow, review = self._follow_refusals(tx, persons, candidates)
            return _Plan(tuple(persons), tuple(follow), tuple(review))

        return self._erase_planned(plan, requested, request_id, actor, suppress=True)

    def _erase_planned(
        self,
        plan: Callable[[GraphTransaction], _Plan],
        requested: dict[tuple[str, bytes], tuple[HashedIdentifier, ...]],
        request_id: str,
        actor: str,
        *,
        suppress: bool,
    ) -> ErasureResult:
        """Plan in a read, hold the recipients' notices of the planned persons, then erase in
        one write transaction that plans again and starts over if more persons appeared.

        Why the notices are made before the graph transaction: who received a person's data
        and which key it holds (the person id, a pseudonym, the hashes of identifiers an export
        sent) can only be read while the person still exists, and making them (audit reads,
        vault seals, a DSR store write) inside the graph's write lock would stall every ingest.
        When ingest keeps adding persons, the last attempt makes them inside the transaction
        after all, from the persons it is about to erase: every erased person's recipients are
        told (Art. 17(2), 19), never "most of them". Held notices are released by
        :meth:`_finish` (at least once: :meth:`recover` runs it for an interrupted erasure) and
        dropped if the transaction rolls back.
        """
        erasure_id = new_erasure_id()
        planned = self._store.read(plan)
        notified = HeldNotices()
        # Held until step 5 is done: a recovery running meanwhile (the DSR worker's, every
        # pass) must not see this erasure pending and finish it too. Taken before the first
        # attempt, so the notices are made under it too: erasures in one process take turns,
        # as their graph transactions do anyway.
        with _finishing_lock(self._store):
            for attempt in range(_PLAN_ATTEMPTS):
                locked = attempt + 1 == _PLAN_ATTEMPTS
                if not locked:
                    notified = self._hold(erasure_id, request_id, planned.erased)
                made: list[HeldNotices] = []

                def run(
                    tx: GraphTransaction,
                    expected: _Plan = planned,
                    locked: bool = locked,
                    made: list[HeldNotices] = made,
                ) -> ErasureOutboxEntry:
                    current = plan(tx)
                    if locked:
                        # Read through this transaction: no other read sees the persons as it
                        # does. A retried transaction function (Neo4j) makes them again, once.
                        self._drop_held(erasure_id)
                        made[:] = [self._hold(erasure_id, request_id, current.erased, tx=tx)]
                    elif not set(current.erased) <= set(expected.erased):
                        raise _PlanChangedError(current)
                    return self._erase_in_graph(
                        tx, current, requested, erasure_id, request_id, actor, suppress=suppress
                    )

                try:
                    entry = self._store.write(run)
                except _PlanChangedError as changed:
                    # A person joined the erasure between the plan and the transaction (an
                    # ingest racing it): tell the recipients of the new set instead.
                    self._drop_held(erasure_id)
                    planned = changed.plan
                    continue
                except BaseException:
                    self._drop_held(erasure_id)
                    raise
                notified = made[0] if made else notified
                break
            result = self._complete(entry)
        self._audit_review(entry, actor)
        return replace(
            result,
            recipients_notified=notified.notices,
            recipient_keys_unreadable=notified.keys_unreadable,
        )

    def _hold(
        self,
        erasure_id: str,
        request_id: str,
        persons: Sequence[str],
        *,
        tx: GraphTransaction | None = None,
    ) -> HeldNotices:
        if self._notifier is None or not persons:
            return HeldNotices()
        return self._notifier.hold(erasure_id, request_id, persons, tx=tx)

    def _drop_held(self, erasure_id: str) -> None:
        if self._notifier is not None:
            self._notifier.drop(erasure_id)

    def _audit_review(self, entry: ErasureOutboxEntry, actor: str) -> None:
        """One audit entry per person listed for review: the person's keyed reference only."""
        review = self._review.pop(entry.erasure_id, ())
        if not review:
            return
        log.warning("erasure_review_needed", erasure_id=entry.erasure_id, persons=len(review))
        self._audit.append(
            [
                AuditDraft(
                    actor=actor,
                    action=REVIEW_ACTION,
                    person_id=self._audit.person_ref(person_id),
                    decision="deny",
                    reason="holds data of an event whose identifier of an erased subject was "
                    "refused, and other data too: review whether it is the same subject",
                    details={
                        "request_id": audit_ref_or_text(entry.request_id),
                        "erasure_id": AuditRef(entry.erasure_id),
                    },
                )
                for person_id in review
            ]
        )

    def erase_persons(
        self,
        person_ids: Sequence[str],
        *,
        actor: str,
        request_id: str,
        suppress: bool = False,
    ) -> ErasureResult:
        """Erase persons by id, like :meth:`erase` (atomic, shredded, audited, recoverable).

        For retention (persons inactive past the configured limit): nobody asked, so by default
        nothing is suppressed and the same identifiers may come back as a new person later.
        ``suppress=True`` suppresses the erased identifiers as :meth:`erase` does.
        ``request_id`` names the erasure in its audit entry and recipient notices (retention:
        the run's id, :func:`privacy.dsr.retention.new_run_id`).
        """
        self._draft(actor, request_id, "e_check", dict.fromkeys(_COUNT_NAMES, 0), 0)
        persons = _Plan(tuple(sorted(set(person_ids))), (), ())
        return self._erase_planned(lambda tx: persons, {}, request_id, actor, suppress=suppress)

    def _complete(self, entry: ErasureOutboxEntry) -> ErasureResult:
        keys = self._finish(entry)
        counts = entry.counts
        return ErasureResult(
            persons_erased=counts["persons_erased"],
            identifiers_erased=counts["identifiers_erased"],
            facts_deleted=counts["facts_deleted"],
            consents_deleted=counts["consents_deleted"],
            links_deleted=counts["links_deleted"],
            keys_shredded=keys,
            identifiers_suppressed=counts["identifiers_suppressed"],
            refused_persons_erased=counts.get("refused_persons_erased", 0),
            refused_persons_for_review=counts.get("refused_persons_for_review", 0),
        )

    def _erase_in_graph(
        self,
        tx: GraphTransaction,
        plan: _Plan,
        requested: dict[tuple[str, bytes], tuple[HashedIdentifier, ...]],
        erasure_id: str,
        request_id: str,
        actor: str,
        *,
        suppress: bool,
    ) -> ErasureOutboxEntry:
        """The graph part of one erasure, in the caller's transaction (which may retry it)."""
        candidates = {c for hashes in requested.values() for c in hashes}
        totals = dict.fromkeys(_COUNT_NAMES, 0)
        # Refusals are followed for a subject's erasure only (its plan): retention erases one
        # inactive person.
        persons = plan.erased
        totals["refused_persons_erased"] = len(plan.follow)
        totals["refused_persons_for_review"] = len(plan.review)
        self._review[erasure_id] = plan.review
        # Kept raw values (keep_raw types) let the person's other identifiers be suppressed
        # under every key, not only the one they were stored with; read before the delete.
        kept = self._kept_value_hashes(tx, persons) if suppress else set()
        node_ids: list[str] = []
        erased_hashes: set[HashedIdentifier] = set()
        erased_persons: list[str] = []
        for person_id in persons:
            erased = tx.erase_person(person_id)
            if erased.persons:
                erased_persons.append(person_id)
            totals["persons_erased"] += erased.persons
            totals["identifiers_erased"] += erased.identifiers
            totals["facts_deleted"] += erased.facts
            totals["consents_deleted"] += erased.consents
            totals["links_deleted"] += erased.links
            totals["refusals_deleted"] += erased.refusals
            node_ids.extend(erased.node_ids)
            erased_hashes.update(erased.hashes)
        # The erased persons' audit references (stored in the key file, with the data keys of
        # older references) go with their identifier keys: once shredded, nobody can link the
        # audit entries about them to their ids (privacy.audit_refs).
        node_ids.extend(self._audit.person_ref_owners(erased_persons))
        others = (candidates | kept) - erased_hashes
        # Refusals of the other key forms (the erased nodes' own were deleted with them).
        totals["refusals_deleted"] += tx.delete_refusals(others)
        if suppress:
            tx.suppress(others | erased_hashes)
            # Distinct identifiers: the requested ones, and erased nodes none of them named.
            totals["identifiers_suppressed"] = len(requested) + sum(
                1 for hashed in erased_hashes if hashed not in candidates
            )
        entry = ErasureOutboxEntry(
            erasure_id, request_id, actor, self._clock(), tuple(node_ids), totals
        )
        tx.add_erasure_outbox(entry)
        if self._outbound and erased_persons:
            # In the erasure's own transaction (so it cannot be lost nor outlive a rollback),
            # held back until the erasure completes: downstream tools hear "erased" once the
            # keys are shredded. The person id is all it names (identity.outbound says why).
            tx.add_outbound(
                [outbound.person_erased(p, erasure_id, entry.created_at) for p in erased_persons]
            )
        return entry

    @staticmethod
    def _follow_refusals(
        tx: GraphTransaction, persons: Sequence[str], candidates: set[HashedIdentifier]
    ) -> tuple[list[str], list[str]]:
        """Other persons holding data of events that had an identifier of the subject refused
        (``limit_exceeded``, ``restricted``...): ``(to erase, to review)``.

        A person is erased with the subject when everything it holds arrived in those events:
        each of its identifiers was first and last seen at the time of one of them (the person
        exists only because the subject's identifier was refused). A person seen at any other
        time holds data of its own, maybe another human's (a shared email is a common reason
        for a refusal): it is listed for review, never erased on a guess. One level only: the
        review is where a chain continues.
        """
        hashes = set(candidates)
        for person_id in persons:
            hashes.update(node.hashed for node in tx.cluster(person_id).nodes)
        times: dict[str, set[datetime]] = {}
        for anchor in tx.refused_anchors(hashes):
            if anchor.person_id not in persons:
                times.setdefault(anchor.person_id, set()).add(anchor.at)
        follow: list[str] = []
        review: list[str] = []
        for other, seen in sorted(times.items()):
            nodes = tx.cluster(other).nodes
            only_those = all(n.first_seen in seen and n.last_seen in seen for n in nodes)
            (follow if nodes and only_those else review).append(other)
        return follow, review

    def _kept_value_hashes(
        self, tx: GraphTransaction, persons: Sequence[str]
    ) -> set[HashedIdentifier]:
        hashes: set[HashedIdentifier] = set()
        for person_id in persons:
            nodes = {node.node_id: node for node in tx.cluster(person_id).nodes}
            raws = tx.node_facts(list(nodes), FactKind.RAW_IDENTIFIER)
            if not raws:
                continue
            try:
                # Per value, not all or nothing: one key already gone (an earlier, interrupted
                # erasure; an operator's shred) must not keep the person's other, readable
                # values from being suppressed under every key.
                values = self._vault.decrypt_readable(
                    [(f.node_id, f.seal_field, f.sealed) for f in raws]
                )
            except VaultError:
                # A damaged blob or wrapped key: those identifiers are still suppressed under
                # the key they were stored with.
                log.warning("erasure_kept_values_unreadable", nodes=len(raws))
                continue
            if None in values:
                # Unreadable ones are still suppressed under the key they were stored with.
                log.warning("erasure_kept_values_unreadable", nodes=values.count(None))
            for fact, value in zip(raws, values, strict=True):
                if value is None:
                    continue
                identifier = NormalizedIdentifier(nodes[fact.node_id].hashed.type, value.decode())
                hashes.update(self._keyring.candidates(identifier))
        return hashes

    # -- completion and recovery --------------------------------------------------------------

    def recover(self) -> int:
        """Finish erasures interrupted after their graph commit; returns how many.

        Run at start-up (``bootstrap.container.build_container``) and safe to run any time, also
        concurrently with erasures: in this process it waits for erasures being finished, so
        none is finished twice (see the module docstring). Tries every pending entry; if
        any fails, raises the first :class:`ErasureIncompleteError` after trying the others.
        """
        failed: ErasureIncompleteError | None = None
        done = 0
        with _finishing_lock(self._store):  # nothing pending here is being finished elsewhere
            pending = self._store.read(lambda tx: tx.pending_erasures())
            for entry in pending:
                try:
                    self._finish(entry)
                    done += 1
                except ErasureIncompleteError as exc:
                    failed = failed or exc
        if pending:
            log.info("erasure_recovery", pending=len(pending), completed=done)
        if failed is not None:
            raise failed
        return done

    def _finish(self, entry: ErasureOutboxEntry) -> int:
        """Steps 2-5 of the module docstring; returns how many data keys were destroyed."""
        try:
            keys = self._vault.shred(entry.node_ids)
        except (VaultError, StoreUnavailableError) as exc:
            raise ErasureIncompleteError(entry.request_id, entry.erasure_id, "key shred") from exc
        if not self._checkpoint():
            raise ErasureIncompleteError(entry.request_id, entry.erasure_id, "WAL truncation")
        counts = {**entry.counts, "keys_shredded": keys}
        try:
            self._audit.append(
                [self._draft(entry.actor, entry.request_id, entry.erasure_id, counts, keys)]
            )
        except (ValueError, StoreUnavailableError) as exc:
            raise ErasureIncompleteError(entry.request_id, entry.erasure_id, "audit entry") from exc
        if self._notifier is not None:
            # The recipients hear of it once the keys are shredded (like the outbound events),
            # and before the outbox entry is done: a crash in between releases them on recover.
            try:
                self._notifier.release(entry.erasure_id)
            except StoreUnavailableError as exc:
                raise ErasureIncompleteError(
                    entry.request_id, entry.erasure_id, "recipient notices"
                ) from exc
        try:
            self._store.write(lambda tx: tx.complete_erasure(entry.erasure_id))
        except StoreUnavailableError as exc:
            raise ErasureIncompleteError(entry.request_id, entry.erasure_id, "completion") from exc
        # The completion rewrote the outbox row (node ids cleared); fold that in too. Best effort:
        # the WAL now holds no erased data (the checkpoint above ran after the delete).
        self._checkpoint(attempts=1)
        log.info(
            "erasure_completed", erasure_id=entry.erasure_id, request_id=entry.request_id, **counts
        )
        return keys

    def _checkpoint(self, attempts: int | None = None) -> bool:
        """Fold the graph's WAL into its file and truncate it (SQLite), then the attached files'
        (:meth:`attach_checkpoint`); ``False`` if readers kept blocking one. Why: the WAL holds
        page images from before the delete, and the erased rows would stay readable there until
        the WAL is overwritten; the ingest journal's WAL holds a batch's sealed bytes after it
        was applied and zeroed, under a day key that outlives the erasure."""
        steps = list(self._also_checkpoint)
        if isinstance(self._store, _Checkpointing):
            steps.insert(0, self._store.checkpoint)
        # Neo4j has no WAL file here: see the README ("How erasure works") for its logs.
        return all(self._retried(step, attempts or self._checkpoint_attempts) for step in steps)

    def _retried(self, checkpoint: Callable[[], None], tries: int) -> bool:
        for attempt in range(tries):
            try:
                checkpoint()
            except StoreUnavailableError:
                if attempt + 1 < tries:
                    time.sleep(self._checkpoint_wait_s)
            else:
                return True
        return False

    @staticmethod
    def _draft(
        actor: str, request_id: str, erasure_id: str, counts: dict[str, int], keys: int
    ) -> AuditDraft:
        try:
            return AuditDraft(
                actor=actor,
                action=ERASURE_ACTION,
                details={
                    "request_id": audit_ref_or_text(request_id),
                    "erasure_id": AuditRef(erasure_id),
                    **counts,
                    "keys_shredded": keys,
                },
            )
        except ValueError as exc:
            raise InvalidFieldError("invalid_audit_field", str(exc), "request_id") from exc

    # -- lifting suppression ----------------------------------------------------------------

    def lift_suppression(
        self, identifiers: Sequence[NormalizedIdentifier], request_id: str, actor: str
    ) -> int:
        """Take ``identifiers`` off the suppression list, under every known hash key.

        **Only for a fresh opt-in by the subject** (they come back and sign up again, giving
        the identifier anew): suppression is what keeps an erasure from being undone by the
        next import of an old data set, so lifting it must be a deliberate, audited act
        (``dsr.suppression_lifted``: actor, request id, count; no identifier). Exposed as
        ``idgraph dsr lift-suppression`` (asks for confirmation). Returns how many of the
        identifiers were suppressed.
        """
        self._lift_draft(actor, request_id, 0)  # refuse bad audit fields before any write
        per_identifier = [self._keyring.candidates(i) for i in identifiers]
        wanted = [c for hashes in per_identifier for c in hashes]

        def run(tx: GraphTransaction) -> int:
            found = tx.suppressed(wanted)
            tx.lift_suppression(found)
            return sum(1 for hashes in per_identifier if not found.isdisjoint(hashes))

        lifted = self._store.write(run)
        self._audit.append([self._lift_draft(actor, request_id, lifted)])
        return lifted

    @staticmethod
    def _lift_draft(actor: str, request_id: str, lifted: int) -> AuditDraft:
        try:
            return AuditDraft(
                actor=actor,
                action=LIFT_ACTION,
                details={"request_id": audit_ref_or_text(request_id), "identifiers_lifted": lifted},
            )
        except ValueError as exc:
            raise InvalidFieldError("invalid_audit_field", str(exc), "request_id") from exc
