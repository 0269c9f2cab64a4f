"""The cyclic garbage collector while ``/v1/ingest`` batches are handled.

A 50-event batch allocates some 10^4 containers (the decoded body, the certified events, the
engine's and the store's rows) that reference counting frees once the batch is done. Under
CPython's default young threshold (700 net container allocations) the collector ran many times
per batch, each time walking the batches still in flight and promoting them, so the older
generations walked them again; it frees nothing (stop 35: 0 objects collected in a phase).
py-spy of the server in `bench/load.py`'s ingest phase: 7.4 % of its GIL samples were the
collector, a cost the bulk path does not pay (``services/bulk.py`` collects only between
batches). While at least one batch is being handled the young threshold is
:data:`INGEST_YOUNG_THRESHOLD`, so most of those objects are freed before a collection sees
them; cycles (a traceback's) wait a little longer, bounded by the threshold.

Only while batches are handled, not for the whole process: stop 32 measured the same threshold
process-wide against cold 1M audience reads, which keep their objects alive, and reverted it
(slower after reopen in each of 3 pairs). The thresholds are the process's, so the first batch
in raises them and the last one out puts back what it found.

The ingest journal's applier goes further while it applies (:meth:`BatchCollector.applying`):
automatic collection is off, and the young generation is collected once the apply is done, as
the bulk path does around its batches (``services/bulk.py``). Why: one apply transaction holds
up to ``IDGRAPH_INGEST_APPLY_MAX_EVENTS`` (10,000) events' objects alive at once, some 10^6
containers, so even at the raised threshold the collector walked them over and over as they
were promoted, the full collections included, and freed nothing.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from services.gc_policy import collector_paused

INGEST_YOUNG_THRESHOLD: Final = 20_000


class BatchCollector:
    """Counts the batches being handled; the young threshold is raised while there are any."""

    def __init__(self, young_threshold: int = INGEST_YOUNG_THRESHOLD) -> None:
        self.young_threshold = young_threshold
        self._lock = threading.Lock()
        self._handling = 0
        self._found: tuple[int, int, int] | None = None

    @contextmanager
    def handling(self) -> Iterator[None]:
        """Around one batch's work (on any thread)."""
        with self._lock:
            self._handling += 1
            if self._handling == 1:
                self._found = young, middle, old = gc.get_threshold()
                gc.set_threshold(max(young, self.young_threshold), middle, old)
        try:
            yield
        finally:
            with self._lock:
                self._handling -= 1
                if self._handling == 0 and self._found is not None:
                    gc.set_threshold(*self._found)
                    self._found = None

    @contextmanager
    def applying(self) -> Iterator[None]:
        """Around one apply of the ingest journal's applier: as :meth:`handling`, and automatic
        collection off until the apply is done, then the young generation collected once
        (``services.gc_policy.collector_paused``, what an applier in its own process does
        too). Process-wide: concurrent requests do not collect meanwhile either; reference
        counting frees their objects as always. What the apply made is gone by then, so that
        collection walks only what is alive, and any cycle made during the apply is freed."""
        with self.handling(), collector_paused():
            yield


# One per process: the thresholds it changes are the process's.
BATCHES: Final = BatchCollector()
