"""A graph store that connects in the background, so a server can answer while it waits.

``idgraph serve`` on Neo4j must answer ``/livez`` and say *not ready* on ``/readyz`` while the
database is still coming up (a restart, a failover, compose ordering), instead of not listening
at all. :class:`DeferredGraphStore` is the :class:`~identity.store.port.GraphStore` the service
is wired with in that case: a daemon thread calls ``opener`` (one connection attempt each) with
exponential backoff (0.5 s doubling to 8 s) until it succeeds or ``timeout_s`` has passed. Until
then every operation, :meth:`ping` included, raises
:class:`~identity.errors.StoreUnavailableError` naming the reason (the last connection error),
which the API answers as a 503.

Once connected, ``on_connected`` runs on the connecting thread (the service finishes erasures a
crash interrupted) *before* any other thread may use the store: a request cannot slip in between
the connection and that recovery. A wrong password or bad configuration
(:class:`~identity.errors.ConfigurationError`, or a store error caused by refused credentials)
is not retried. On giving up, ``on_give_up`` is called with the reason (the service stops, so
the orchestrator restarts it); the store stays unavailable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from enum import Enum
from typing import TypeVar

from identity.errors import ConfigurationError, StoreUnavailableError
from identity.model import FactKind, FactStatus, PersonReadRows, StoreStats
from identity.store.port import GraphStore, GraphTransaction

T = TypeVar("T")
_log = logging.getLogger("idgraph.store")

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 8.0


class StoreState(Enum):
    """Where a deferred store is."""

    CONNECTING = "connecting"
    RECOVERING = "recovering"  # connected; start-up work runs before anything else may
    READY = "ready"
    FAILED = "failed"  # gave up (out of time, refused credentials, bad configuration)
    CLOSED = "closed"


class DeferredGraphStore:
    """:class:`GraphStore` whose real store is opened by a background thread (see module)."""

    def __init__(
        self,
        opener: Callable[[], GraphStore],
        *,
        timeout_s: float,
        on_connected: Callable[[], object] | None = None,
        on_give_up: Callable[[str], None] | None = None,
        is_refusal: Callable[[BaseException], bool] = lambda _: False,
        name: str = "store",
    ) -> None:
        self._opener = opener
        self._timeout_s = timeout_s
        self.on_connected = on_connected
        self._on_give_up = on_give_up
        self._is_refusal = is_refusal
        self._name = name
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._state = StoreState.CONNECTING
        self._reason = f"connecting to the {name}"
        self._attempts = 0
        self._store: GraphStore | None = None
        self._thread = threading.Thread(target=self._connect, name="store-connect", daemon=True)

    def start(self) -> None:
        """Start connecting (separate from ``__init__`` so the caller can set hooks first)."""
        self._thread.start()

    @property
    def state(self) -> StoreState:
        """The current state."""
        return self._state

    @property
    def reason(self) -> str:
        """Why the store is not ready (the last connection error), or ``"ready"``."""
        return self._reason

    def wait(self, timeout_s: float | None = None) -> StoreState:
        """Block until connecting ended (ready, failed or closed) or ``timeout_s``; the state."""
        self._thread.join(timeout_s)
        return self._state

    # -- the connecting thread -------------------------------------------------------------

    def _connect(self) -> None:
        deadline = time.monotonic() + self._timeout_s
        delay = FIRST_DELAY_S
        while not self._stop.is_set():
            self._attempts += 1
            try:
                store = self._opener()
            except (StoreUnavailableError, ConfigurationError) as exc:
                final = isinstance(exc, ConfigurationError) or self._is_refusal(exc)
                if final or time.monotonic() + delay > deadline:
                    why = "refused" if final else f"not reachable within {self._timeout_s:.0f} s"
                    self._give_up(f"{self._name} {why}: {exc}")
                    return
                self._reason = (
                    f"{self._name} not reachable yet (attempt {self._attempts}, next in "
                    f"{delay:.1f} s): {exc}"
                )
                _log.warning("%s", self._reason)
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_DELAY_S)
                continue
            with self._lock:
                if self._stop.is_set():  # closed while the last attempt ran
                    store.close()
                    return
                self._store = store
                self._state = StoreState.RECOVERING
                self._reason = f"{self._name} connected; finishing start-up work"
            try:
                if self.on_connected is not None:
                    self.on_connected()
            except Exception as exc:  # noqa: BLE001 - reported as the reason, then given up
                self._give_up(f"start-up work on the {self._name} failed: {exc}")
                return
            self._state = StoreState.READY
            self._reason = "ready"
            _log.info("%s connected after %d attempt(s)", self._name, self._attempts)
            return

    def _give_up(self, reason: str) -> None:
        if self._stop.is_set():  # closed meanwhile: nobody is waiting for this store
            return
        self._state = StoreState.FAILED
        self._reason = reason
        _log.error("%s", reason)
        if self._on_give_up is not None:
            self._on_give_up(reason)

    def _ready(self) -> GraphStore:
        store = self._store
        state = self._state
        if store is not None and (
            state is StoreState.READY
            or (state is StoreState.RECOVERING and threading.current_thread() is self._thread)
        ):
            return store
        raise StoreUnavailableError(f"not ready: {self._reason}")

    # -- GraphStore ----------------------------------------------------------------------

    def write(self, fn: Callable[[GraphTransaction], T]) -> T:
        """Run ``fn`` in a write transaction of the connected store."""
        return self._ready().write(fn)

    def read(self, fn: Callable[[GraphTransaction], T]) -> T:
        """Run ``fn`` in a read transaction of the connected store."""
        return self._ready().read(fn)

    def person_read(
        self,
        person_id: str,
        purposes: Collection[str],
        kinds: Collection[FactKind],
        status: FactStatus,
    ) -> PersonReadRows | None:
        """The person's consent records and facts, read by the connected store."""
        return self._ready().person_read(person_id, purposes, kinds, status)

    def stats(self) -> StoreStats:
        """Row counts of the connected store."""
        return self._ready().stats()

    def ping(self) -> None:
        """Raise :class:`StoreUnavailableError` (with the reason) unless connected and serving."""
        self._ready().ping()

    def close(self) -> None:
        """Stop connecting and close the store if it was opened."""
        self._stop.set()
        with self._lock:
            store, self._store = self._store, None
            self._state = StoreState.CLOSED
        if store is not None:
            store.close()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=MAX_DELAY_S + 30)
