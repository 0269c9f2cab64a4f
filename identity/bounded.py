"""A bounded, thread-safe map that forgets its least recently used entries.

The project remembers a few things that are costly to make and cheap to keep: PII-scan results
(:mod:`privacy.scanning.facts`), unwrapped data keys and owner subkeys (:mod:`privacy.keys.vault`),
audit references and their vault owners. Each of those "remember" caches used to be its own
``OrderedDict`` with its own lock and eviction loop, and they drifted apart (some evicted in
insertion order, some refreshed an entry on use). :class:`BoundedMap` is the one shape they share:

- **batch calls under one lock**: :meth:`~BoundedMap.get_many`, :meth:`~BoundedMap.put_many` and
  :meth:`~BoundedMap.drop` take the lock once per call, not once per key (an audience page asks
  for thousands of keys at a time);
- **bounded**, with **least-recently-used** eviction: a hit refreshes its entry, so what a warm
  workload keeps re-reading stays; ``size=0`` holds nothing (a cache switched off);
- **optional validity generation** for entries that are copies of outside state which can be
  withdrawn (the vault's keys, withdrawn by a shred that bumps the key file's shred generation):
  a call that names a newer generation empties the map first, and entries read under an older
  generation are never stored. So a key shredded by another process is never served again once
  any call has seen the shred.

Why not a library: ``functools.lru_cache`` memoizes one function and has no batch calls, no
drop and no invalidation; ``cachetools.LRUCache`` is not thread-safe, would still need the lock,
the batch calls and the generation here, and would be a new dependency for ~100 lines.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedMap(Generic[K, V]):
    """At most ``size`` entries; the least recently used go first. Safe to share between threads.

    Values may be anything except that a miss is simply absent from :meth:`get_many`'s answer.
    ``generation`` (optional, on the calls that take it) is the version of the outside state the
    caller read (a counter that only grows): see the module docstring.
    """

    __slots__ = ("_generation", "_items", "_lock", "_size")

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError("a BoundedMap's size must be >= 0")
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._generation = -1  # the newest generation a call has named (-1: none yet)

    @property
    def size(self) -> int:
        """The most entries the map holds."""
        return self._size

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is held (does not refresh it)."""
        return key in self._items

    def keys(self) -> list[K]:
        """A snapshot of the keys held, least recently used first."""
        with self._lock:
            return list(self._items)

    def _observe(self, generation: int) -> bool:
        """Adopt ``generation`` if newer (emptying the map); False if it is older. Lock held."""
        if generation > self._generation:
            self._items.clear()
            self._generation = generation
        return generation == self._generation

    def get(self, key: K, *, generation: int | None = None) -> V | None:
        """The value of ``key`` (refreshed), or ``None``; see :meth:`get_many`."""
        return self.get_many((key,), generation=generation).get(key)

    def get_many(self, keys: Iterable[K], *, generation: int | None = None) -> dict[K, V]:
        """The held entries among ``keys`` (each hit refreshed); misses are absent.

        With ``generation`` newer than any seen so far, the map is emptied first (its entries
        were read under an older state) and every hit after that is of the new one. An older
        ``generation`` (a caller that read the state before another call saw a newer one) does
        not roll the map back: its entries are newer than the caller's view, and are returned.
        """
        found: dict[K, V] = {}
        with self._lock:
            if generation is not None:
                self._observe(generation)
            items = self._items
            refresh = items.move_to_end
            for key in keys:
                # `in` then `[]`: two C-level lookups are cheaper than one `get` with a sentinel
                # and a `typing.cast` call per key (~25k keys per warm 1M audience read).
                if key in items:
                    refresh(key)
                    found[key] = items[key]
        return found

    def put_many(self, entries: Iterable[tuple[K, V]], *, generation: int | None = None) -> bool:
        """Store ``(key, value)`` entries as the most recently used, evicting the least recently
        used beyond the size; returns whether they were stored.

        With ``generation``: stored only if it is the newest generation seen (a newer one empties
        the map first, as in :meth:`get_many`). Entries read under an older generation are
        dropped on the floor: the outside state has moved since (a shred), and they may be
        exactly what it withdrew.
        """
        with self._lock:
            if generation is not None and not self._observe(generation):
                return False
            if not self._size:
                return False
            items = self._items
            refresh = items.move_to_end
            for key, value in entries:
                items[key] = value
                refresh(key)
            while len(items) > self._size:
                items.popitem(last=False)
        return True

    def drop(self, keys: Iterable[K]) -> None:
        """Forget ``keys`` (those not held are ignored)."""
        with self._lock:
            items = self._items
            for key in keys:
                items.pop(key, None)

    def clear(self, *, generation: int | None = None) -> None:
        """Forget everything; with ``generation``, also adopt it if it is newer."""
        with self._lock:
            self._items.clear()
            if generation is not None:
                self._generation = max(self._generation, generation)

    def advance(self, generation: int, changed: Iterable[K]) -> None:
        """The outside state moved to ``generation`` by a change of ``changed`` alone (one shred
        bumps the generation by one): if this map was at the generation just before, dropping
        those keys is enough; otherwise it missed changes in between, and empties."""
        with self._lock:
            if self._generation == generation - 1:
                items = self._items
                for key in changed:
                    items.pop(key, None)
            else:
                self._items.clear()
            self._generation = max(self._generation, generation)
