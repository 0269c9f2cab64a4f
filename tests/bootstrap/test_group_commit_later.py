"""Awaiting callers of the group commit (``GroupCommitter.submit_later``): an event loop's
callers queue their items and await a future instead of keeping a thread asleep; a group's
futures are completed with one ``call_soon_threadsafe`` per loop, only after the group's write
returned, each with its own result or error.

Deterministic without sleeps: a write held at an event until the test has queued every caller,
then released (the writer thread must take all of them in one group).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from identity.errors import CommitOutcomeUnknownError
from identity.group_commit import GroupCommitter

CALLERS = 10


def _wait_until(condition: Callable[[], bool]) -> None:
    pause = threading.Event()
    for _ in range(3000):
        if condition():
            return
        pause.wait(0.01)
    raise AssertionError("condition not reached in 30 s")


def _queued(committer: GroupCommitter[Any, Any]) -> int:
    with committer._cond:
        return len(committer._queue)


class _CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that counts the callbacks handed to it from other threads."""

    def __init__(self) -> None:
        super().__init__()
        self.threadsafe_calls = 0

    def call_soon_threadsafe(self, callback: Any, *args: Any, context: Any = None) -> Any:
        self.threadsafe_calls += 1
        return super().call_soon_threadsafe(callback, *args, context=context)


def _held_write(
    fail: Callable[[Sequence[int]], None] | None = None,
) -> tuple[GroupCommitter[int, int], threading.Event, list[list[int]]]:
    """A committer whose first write waits for the returned event; ``groups`` as written."""
    release = threading.Event()
    groups: list[list[int]] = []

    def write(items: Sequence[int]) -> list[int]:
        if not groups:
            release.wait(30)
        groups.append(list(items))
        if fail is not None:
            fail(items)
        return [item * 10 for item in items]

    return GroupCommitter(write), release, groups


def _run(loop: asyncio.AbstractEventLoop, main: Callable[[], Any]) -> Any:
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def test_awaiting_callers_get_their_results_after_one_group_write_and_one_loop_wake() -> None:
    committer, release, groups = _held_write()
    loop = _CountingLoop()

    async def main() -> list[int]:
        first = committer.submit_later(0, loop)
        # The writer thread is inside the first write: everything else queues behind it.
        await asyncio.to_thread(_wait_until, lambda: committer.groups == 1)
        rest = [committer.submit_later(i, loop) for i in range(1, CALLERS)]
        assert _queued(committer) == CALLERS - 1
        assert not first.done()  # not before its write returned
        calls_before = loop.threadsafe_calls
        release.set()
        results = await asyncio.gather(first, *rest)
        # The first group's future, then the second group's CALLERS - 1 futures: one loop wake
        # each (the thread-pool hop of asyncio.to_thread above is counted before).
        assert loop.threadsafe_calls - calls_before == 2
        return list(results)

    try:
        assert _run(loop, main) == [i * 10 for i in range(CALLERS)]
        assert groups == [[0], list(range(1, CALLERS))]
        assert committer.groups == 2
    finally:
        committer.close()


def test_awaiting_callers_are_submitted_from_worker_threads_and_none_of_them_writes() -> None:
    # As the profile route submits: from a worker thread, which returns at once (the writer
    # thread writes); the submitting threads never run the write themselves.
    writers: set[str] = set()

    def write(items: Sequence[int]) -> list[int]:
        writers.add(threading.current_thread().name)
        return list(items)

    committer: GroupCommitter[int, int] = GroupCommitter(write)
    loop = asyncio.new_event_loop()

    async def main() -> list[int]:
        futures = await asyncio.gather(
            *(asyncio.to_thread(committer.submit_later, i, loop) for i in range(CALLERS))
        )
        return list(await asyncio.gather(*futures))

    try:
        assert _run(loop, main) == list(range(CALLERS))
        assert writers == {"group-commit-writer"}
    finally:
        committer.close()


def test_a_failing_item_fails_only_its_own_awaiting_caller() -> None:
    def fail(items: Sequence[int]) -> None:
        if 7 in items:
            raise ValueError("item 7 is bad")

    committer, release, _ = _held_write(fail)
    loop = asyncio.new_event_loop()

    async def main() -> list[Any]:
        first = committer.submit_later(0, loop)
        await asyncio.to_thread(_wait_until, lambda: committer.groups == 1)
        rest = [committer.submit_later(i, loop) for i in range(1, CALLERS)]
        release.set()
        return list(await asyncio.gather(first, *rest, return_exceptions=True))

    try:
        results = _run(loop, main)
    finally:
        committer.close()
    assert isinstance(results[7], ValueError)
    assert [r for i, r in enumerate(results) if i != 7] == [
        i * 10 for i in range(CALLERS) if i != 7
    ]


def test_a_group_whose_commit_outcome_is_unknown_tells_every_awaiting_caller() -> None:
    unknown = CommitOutcomeUnknownError("connection lost while committing")
    written: list[list[int]] = []

    def write(items: Sequence[int]) -> list[int]:
        written.append(list(items))
        raise unknown

    committer: GroupCommitter[int, int] = GroupCommitter(write)
    loop = asyncio.new_event_loop()

    async def main() -> list[Any]:
        futures = [committer.submit_later(i, loop) for i in range(3)]
        return list(await asyncio.gather(*futures, return_exceptions=True))

    try:
        results = _run(loop, main)
    finally:
        committer.close()
    assert all(result is unknown for result in results)
    assert sorted(item for group in written for item in group) == [0, 1, 2]  # none again


def test_blocked_and_awaiting_callers_share_a_group_and_the_role_passes_between_them() -> None:
    # A blocked caller writes first (its write held); an awaiting caller and more blocked ones
    # queue behind it. When the first is done, the oldest queued caller awaits, so the writer
    # thread takes the role and writes the rest: each caller gets its own result.
    committer, release, groups = _held_write()
    loop = asyncio.new_event_loop()

    async def main() -> tuple[int, list[int], list[int]]:
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(committer.submit, 0)
            await asyncio.to_thread(_wait_until, lambda: committer.groups == 1)
            awaited = committer.submit_later(1, loop)
            blocked = [pool.submit(committer.submit, i) for i in (2, 3)]
            await asyncio.to_thread(_wait_until, lambda: _queued(committer) == 3)
            release.set()
            later = await awaited
            return first.result(30), [later], [f.result(30) for f in blocked]

    try:
        assert _run(loop, main) == (0, [10], [20, 30])
        assert groups[0] == [0]
        assert sorted(item for group in groups[1:] for item in group) == [1, 2, 3]
    finally:
        committer.close()


def test_a_cancelled_awaiting_caller_still_has_its_item_written() -> None:
    committer, release, groups = _held_write()
    loop = asyncio.new_event_loop()

    async def main() -> int:
        first = committer.submit_later(0, loop)
        await asyncio.to_thread(_wait_until, lambda: committer.groups == 1)
        gone = committer.submit_later(1, loop)
        gone.cancel()  # its caller went away (a client that disconnected)
        kept = committer.submit_later(2, loop)
        release.set()
        await first
        return await kept

    try:
        assert _run(loop, main) == 20
        assert sorted(item for group in groups for item in group) == [0, 1, 2]
    finally:
        committer.close()


def test_close_writes_what_is_queued_then_stops_the_writer_and_refuses_awaiting_callers() -> None:
    committer, release, groups = _held_write()
    loop = asyncio.new_event_loop()
    try:
        futures = [committer.submit_later(i, loop) for i in range(3)]
        _wait_until(lambda: committer.groups == 1)
        writer = committer._writer
        assert writer is not None
        assert writer.is_alive()
        closing = threading.Thread(target=committer.close)
        closing.start()
        release.set()
        closing.join(30)
        assert not closing.is_alive()
        assert not writer.is_alive()
        loop.run_until_complete(asyncio.sleep(0))  # run the completions handed to the loop
        assert [f.result() for f in futures] == [0, 10, 20]
        assert sorted(item for group in groups for item in group) == [0, 1, 2]
        with pytest.raises(RuntimeError, match="closed"):
            committer.submit_later(3, loop)
        assert committer.submit(4) == 40  # blocked callers still write themselves
    finally:
        loop.close()


def test_an_awaiting_caller_ends_its_arrival_and_a_lingering_writer_takes_it() -> None:
    # An arrival announced on the loop (before the hand-over to a worker thread) keeps a
    # lingering writer waiting; the awaiting caller's submit ends it and joins that group.
    written: list[list[int]] = []

    def write(items: Sequence[int]) -> list[int]:
        written.append(list(items))
        return list(items)

    committer: GroupCommitter[int, int] = GroupCommitter(write, linger_s=30.0)
    loop = asyncio.new_event_loop()

    async def main() -> list[int]:
        arrival = committer.announce()
        first = committer.submit_later(0, loop)
        await asyncio.to_thread(_wait_until, lambda: committer._lingering is not None)
        assert not first.done()
        second = committer.submit_later(1, loop, arrival)
        return list(await asyncio.gather(first, second))

    try:
        assert _run(loop, main) == [0, 1]
        assert written == [[0, 1]]
    finally:
        committer.close()
