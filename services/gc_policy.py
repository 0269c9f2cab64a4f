"""The cyclic garbage collector's policy where many short-lived objects are made at once.

Ingest (a bulk file, an applied group of queued batches, a stream batch) keeps hundreds of
thousands of objects alive at a time: events, hashed identifiers, nodes, links, facts,
outcomes. They form no cycles (a 100k-identifier bulk run collected none), so every automatic
collection walks them again and again and frees nothing: up to 15 % of CPU measured (stop 36).
Reference counting frees them as always; the two helpers here turn automatic collection off
while such work runs and collect the young generation at chosen points instead, so a cycle made
by accident (an exception's traceback, say) is still freed and memory stays bounded.

Automatic collection is a process-wide switch: a collector that was off before stays off, and
nothing is collected then.
"""

from __future__ import annotations

import gc
import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

__all__ = ["collected_every", "collector_paused"]


@contextmanager
def collected_every(ticks: int) -> Iterator[Callable[[], None]]:
    """Automatic collection off for the block; the young generation is collected at every
    ``ticks``-th call of the yielded callable (a bulk file's committed batches, the reader
    process's sent chunks), and automatic collection restored when the block ends, also on
    failure. For one thread's work in a process of its own (``idgraph ingest``, its reader):
    overlapping uses would restore the switch early; use :func:`collector_paused` there."""
    enabled = gc.isenabled()
    gc.disable()
    count = itertools.count(1)

    def tick() -> None:
        if enabled and next(count) % ticks == 0:
            gc.collect(0)

    try:
        yield tick
    finally:
        if enabled:
            gc.enable()


class _CollectorPauses:
    """Overlapping pauses of automatic collection (two appliers in one process: two apps in a
    test): off from the first in, back on (if it was on) when the last is out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paused = 0
        self._was_enabled = False

    @contextmanager
    def paused(self) -> Iterator[None]:
        with self._lock:
            self._paused += 1
            if self._paused == 1:
                self._was_enabled = gc.isenabled()
                gc.disable()
        try:
            yield
        finally:
            with self._lock:
                self._paused -= 1
                enable = self._paused == 0 and self._was_enabled
                if enable:
                    gc.enable()
            if enable:
                gc.collect(0)


# One per process: automatic collection is the process's.
_PAUSES = _CollectorPauses()


def collector_paused() -> AbstractContextManager[None]:
    """Automatic collection off while a group of events is applied, the young generation
    collected after: around each apply of the ingest appliers (the server's thread,
    ``api.collector.BatchCollector.applying``; an applier process's, ``idgraph
    ingest-applier``) and of the stream worker's batches. One apply holds up to
    ``apply_max_events`` events' objects alive at once (~10^6 containers). Safe to overlap
    (two appliers in one process): collection comes back on when the last is done."""
    return _PAUSES.paused()
