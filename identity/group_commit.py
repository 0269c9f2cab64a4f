"""Group commit: concurrent callers share one transaction (and one fsync) instead of queueing
for one each.

Every durable write of idgraph ends with an fsync'd commit (``synchronous=FULL``): a few
milliseconds during which the file's write lock is held and nothing else can commit. With one
transaction per caller, N concurrent callers wait for N fsyncs in a row. :class:`GroupCommitter`
lets them share: the first caller to arrive becomes the *writer*, takes every item queued so far
(its own included) and writes them all with one call of ``write`` (one transaction); callers
that arrive meanwhile queue up and are written together by the next writer, as soon as the
current one has committed. So:

* **no added latency when idle**: a lone caller writes at once; nothing waits for a timer, and
  the batch grows exactly as much as callers pile up behind a commit;
* **durability is unchanged**: :meth:`GroupCommitter.submit` returns only after the transaction
  holding the caller's item committed, and raises if it did not; an acknowledged item is as
  durable as with one transaction per caller;
* **one caller's failure is its own**: if a shared ``write`` raises, the group's items are
  written again one by one, so each caller gets its own result or its own error (a shared
  transaction that failed wrote nothing, so writing again is safe). Except when the store
  cannot say whether it committed (:class:`~identity.errors.CommitOutcomeUnknownError`: a
  connection lost during COMMIT): the group may be written, and writing it again could apply
  it twice, so every caller of the group gets that error and none is written again.

Items are written in arrival order, and ``write`` must return one result per item in that order.

**Announced callers** (:meth:`GroupCommitter.coming`). When commits are fast and each caller
spends a while computing before it submits (a profile read: ~0.5 ms of CPU under the GIL, then
an audit append), few callers pile up behind one commit: 16 concurrent reads made groups of 1.4
items, so nearly every read paid a whole transaction (~95 µs of CPU and ~12 KiB written). A
caller that knows it will submit says so first (``with committer.coming(): ...``); a writer
with ``linger_s > 0`` then waits, before taking its group, while announced callers are still on
their way, up to ``linger_s``. It waits only for callers that are busy (announced, not yet
queued): when nobody else is coming, it writes at once, so a lone caller is never delayed, and
it never waits for a caller that leaves without submitting (leaving the block withdraws the
announcement). The wait does not hold the GIL: the announced callers use that time to finish.

**Arrivals** (:meth:`GroupCommitter.announce`). ``coming()`` belongs to the thread that will
submit, so a caller can only announce itself once it runs on that thread. A server knows
earlier: an HTTP batch is decoded and validated on the event loop before a worker thread takes
it, and announced only from the worker thread it was often written without its neighbours (4
HTTP connections: 188-198 transactions for 400 batches; with arrivals 162-172; 4 callers in one
process ~103). ``announce()`` returns an
:class:`Arrival` handle the caller can take where the request arrives and hand to
:meth:`GroupCommitter.submit` on whichever thread submits; ``Arrival.withdraw`` (idempotent)
ends an arrival that will not submit. The same rules as ``coming()`` apply: a writer waits only
while announced callers are on their way, never for one that withdrew, and at most
``linger_s``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

from identity.errors import CommitOutcomeUnknownError

T = TypeVar("T")
R = TypeVar("R")
# How long a lingering writer waits for announced callers: until all have queued ("all"), or
# until as many have queued as are still coming ("half"; see GroupCommitter).
LingerFor = Literal["all", "half"]


@dataclass(slots=True)
class _Ticket(Generic[T, R]):
    """One caller's item and, once written, its result or error.

    ``wake`` is held from creation: releasing it wakes the one caller waiting on this ticket,
    either because its item was written (``done``) or because it is the next writer.
    """

    item: T
    wake: threading.Lock = field(default_factory=threading.Lock)
    done: bool = False
    result: R | None = None
    error: BaseException | None = None


class _Announcement:
    """The context manager of :meth:`GroupCommitter.coming` (a class: a profile read enters
    one per read, and a generator-based one cost twice as much)."""

    __slots__ = ("_committer",)

    def __init__(self, committer: GroupCommitter[Any, Any]) -> None:
        self._committer = committer

    def __enter__(self) -> None:
        committer = self._committer
        with committer._cond:
            committer._coming += 1
        committer._announced.flag = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        committer = self._committer
        if getattr(committer._announced, "flag", False):  # left without submitting
            with committer._cond:
                committer._withdraw()


class Arrival:
    """An announced caller not tied to a thread (:meth:`GroupCommitter.announce`): pass it to
    :meth:`GroupCommitter.submit`, or :meth:`withdraw` it if the caller will not submit."""

    __slots__ = ("_committer", "_pending")

    def __init__(self, committer: GroupCommitter[Any, Any]) -> None:
        self._committer = committer
        self._pending = True

    def withdraw(self) -> None:
        """End the announcement (no-op once submitted or withdrawn): a writer no longer waits
        for this caller. Safe from any thread."""
        committer = self._committer
        with committer._cond:
            if self._pending:
                self._pending = False
                committer._drop_announcement()


class GroupCommitter(Generic[T, R]):
    """Writes the items of concurrent :meth:`submit` calls in shared transactions (see module).

    ``write`` takes the items of one group, in arrival order, writes them in one transaction and
    returns one result per item. ``max_group`` bounds a group (a writer leaves the rest queued
    for the next one), so a burst cannot build one unbounded transaction.

    ``linger_for`` says how long a writer with ``linger_s > 0`` waits for announced callers:
    ``"all"`` (the default) while any is still coming; ``"half"`` only while more are still
    coming than are queued. Why half (the audit log's, since stop 44): with many callers always
    in flight (16 concurrent profile reads), some are always still coming, so an ``"all"``
    writer waits its whole ``linger_s`` every time and takes only what arrived meanwhile (3.6
    reads a commit on a quiet machine); stopping once half are queued lets the other half keep
    the CPU busy during the commit, and the group grows with the callers in flight instead of
    with the linger. A caller that queues without announcing counts as queued.

    Waiting callers are woken one by one, each exactly when it has something to do (its item
    was written, or it is the next writer), never all at once: with one shared condition every
    commit woke all of them only for most to go back to sleep, and under 16 concurrent reads
    those wake-ups (each a GIL hand-over) cost about as much CPU as the reads' own audit work.
    """

    def __init__(
        self,
        write: Callable[[Sequence[T]], Sequence[R]],
        max_group: int = 256,
        linger_s: float = 0.0,
        *,
        linger_for: LingerFor = "all",
    ) -> None:
        if linger_for not in ("all", "half"):
            raise ValueError("linger_for must be 'all' or 'half'")
        if max_group < 1:
            raise ValueError("max_group must be >= 1")
        if linger_s < 0:
            raise ValueError("linger_s must be >= 0")
        self._write = write
        self._max_group = max_group
        self._linger_s = linger_s
        # "half": a lingering writer waits only while more announced callers are still coming
        # than are queued (see the class docstring).
        self._half = linger_for == "half"
        # Guards the queue, the writer flag and the announcements; held only for list and
        # counter operations, never for I/O.
        self._cond = threading.Lock()
        self._queue: list[_Ticket[T, R]] = []
        self._writing = False
        # Announced callers not yet queued (see coming()), and which threads announced.
        self._coming = 0
        self._announced = threading.local()
        # Set while a writer lingers; released by the caller whose arrival ends the wait.
        self._lingering: threading.Lock | None = None
        self.groups = 0  # shared transactions written (for tests and metrics)

    def coming(self) -> _Announcement:
        """Announce that this thread will :meth:`submit` within the block (or perhaps not at
        all): a lingering writer waits for it (see the module docstring). Not reentrant."""
        return _Announcement(self)

    def announce(self) -> Arrival:
        """Announce a caller that will :meth:`submit` later, perhaps from another thread (or
        perhaps not at all): the returned :class:`Arrival` goes to ``submit``, or is withdrawn.
        A lingering writer waits for it as for a ``coming()`` caller (module docstring)."""
        arrival = Arrival(self)
        with self._cond:
            self._coming += 1
        return arrival

    def _withdraw(self) -> None:
        """Drop this thread's announcement (``self._cond`` held); wake a writer whose wait
        it ends."""
        self._announced.flag = False
        self._drop_announcement()

    def _drop_announcement(self) -> None:
        """One announced caller fewer (``self._cond`` held); wake a writer whose wait it ends."""
        self._coming -= 1
        self._end_linger()

    def _waits(self) -> bool:
        """Whether a writer about to take its group should (still) wait (``self._cond`` held):
        while announced callers are coming (with ``linger_for="half"``, while more of them are
        coming than are queued) and the group is not full."""
        queued = len(self._queue)
        return self._coming > (queued if self._half else 0) and queued < self._max_group

    def _end_linger(self) -> None:
        """Wake a lingering writer whose wait is over (``self._cond`` held)."""
        gate = self._lingering
        if gate is not None and not self._waits():
            self._lingering = None
            gate.release()

    def _linger(self) -> None:
        """Before a writer takes its group: wait while announced callers are still coming,
        up to ``linger_s`` (a lone caller, or one with nobody busy behind it, goes at once)."""
        with self._cond:
            if not self._waits():
                return
            gate = self._lingering = threading.Lock()
            gate.acquire()
        if not gate.acquire(timeout=self._linger_s):
            with self._cond:
                if self._lingering is gate:
                    self._lingering = None

    def _arrived(self, arrival: Arrival | None) -> None:
        """A caller queued its item (``self._cond`` held): a lingering writer no longer waits
        for it, whichever way it announced itself."""
        if arrival is not None and arrival._pending:
            arrival._pending = False
            self._drop_announcement()
        if getattr(self._announced, "flag", False):
            self._withdraw()

    def submit(self, item: T, arrival: Arrival | None = None) -> R:
        """Write ``item`` (in a group with whatever else is queued); return its result once the
        transaction that holds it committed, or raise its error. ``arrival``: this caller's
        :meth:`announce` handle, if it has one (its announcement ends here)."""
        if arrival is not None and arrival._committer is not self:
            raise ValueError("the arrival was announced to another committer")
        ticket: _Ticket[T, R] = _Ticket(item)
        ticket.wake.acquire()  # released by whoever has news for this caller
        with self._cond:
            self._queue.append(ticket)
            self._arrived(arrival)
            if self._half and self._lingering is not None:
                self._end_linger()  # an unannounced caller counts as queued too
            lead = not self._writing
            self._writing = True
        if not lead:
            # Woken once: either the item is written, or this caller is the next writer.
            ticket.wake.acquire()
        while not ticket.done:
            if self._linger_s:
                self._linger()
            # Writer now: take the oldest queued items (ours among them unless more than
            # ``max_group`` were queued before it: then this loop writes again).
            with self._cond:
                group = self._queue[: self._max_group]
                del self._queue[: self._max_group]
            successor: _Ticket[T, R] | None = None
            try:
                self._run(group)
            finally:
                with self._cond:
                    for written in group:
                        written.done = True
                    if ticket.done:
                        # Hand the writer's role to the oldest waiting caller, if any.
                        successor = self._queue[0] if self._queue else None
                        self._writing = successor is not None
                for written in group:
                    if written is not ticket:
                        written.wake.release()
                if successor is not None:
                    successor.wake.release()
        if ticket.error is not None:
            raise ticket.error
        return ticket.result  # type: ignore[return-value]  # set for every ticket without error

    def _run(self, group: list[_Ticket[T, R]]) -> None:
        self.groups += 1
        try:
            results = self._write([t.item for t in group])
        except BaseException as exc:  # noqa: BLE001 - handed to the callers, re-raised there
            if len(group) == 1 or isinstance(exc, CommitOutcomeUnknownError):
                # Alone, or perhaps committed: writing the group again could apply it twice
                # (module docstring). Each caller gets the error.
                for ticket in group:
                    ticket.error = exc
                return
            # Nothing of the shared transaction was written: each item again, alone, so that
            # one caller's bad item fails only that caller.
            for ticket in group:
                try:
                    (ticket.result,) = self._write([ticket.item])
                except BaseException as alone:  # noqa: BLE001 - handed to its own caller
                    ticket.error = alone
            return
        if len(results) != len(group):  # pragma: no cover - a write that breaks its contract
            error = RuntimeError("group write returned a different number of results")
            for ticket in group:
                ticket.error = error
            return
        for ticket, result in zip(group, results, strict=True):
            ticket.result = result
