"""Group commit for callers on an event loop (``GroupCommitter.submit_later`` + ``LoopWaiter``).

A loop caller does not wait on its thread: its item is queued, and the writer settles the
futures of a whole group with one ``call_soon_threadsafe`` per loop. The grouping is made
deterministic as in test_group_commit.py: the first writer is held inside its write until every
other caller has queued behind it (no sleeps, no timing decide an outcome).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from identity import group_commit
from identity.group_commit import GroupCommitter, LoopWaiter

CALLERS = 8


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


class _SettleCounter:
    """Counts the loop's ``call_soon_threadsafe`` calls that settle group-commit futures (the
    loop's own uses, e.g. by ``asyncio.to_thread``, are not counted)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.settles = 0
        self.futures = 0
        original = loop.call_soon_threadsafe

        def counted(callback: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            if callback is group_commit._settle:
                self.settles += 1
                self.futures += len(args[0])
            return original(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign, assignment]


def _held_write(
    release: threading.Event, written: list[tuple[list[int], int]]
) -> Callable[[Sequence[int]], list[int]]:
    """A write whose first call waits for ``release``; records each group and its thread."""

    def write(items: Sequence[int]) -> list[int]:
        if not written:
            release.wait(30)
        written.append((list(items), threading.get_ident()))
        return [item * 10 for item in items]

    return write


def test_loop_callers_queued_behind_a_commit_are_settled_with_one_loop_wake_per_group() -> None:
    async def scenario() -> None:
        release = threading.Event()
        written: list[tuple[list[int], int]] = []
        committer: GroupCommitter[int, int] = GroupCommitter(_held_write(release, written))
        counter = _SettleCounter(asyncio.get_running_loop())
        first = asyncio.create_task(asyncio.to_thread(committer.submit, 0))
        await asyncio.to_thread(_wait_until, lambda: committer.groups == 1)
        waiters: list[LoopWaiter[int]] = [LoopWaiter() for _ in range(1, CALLERS)]
        for index, waiter in enumerate(waiters, start=1):
            # Returns at once: a writer is busy, so the item is only queued.
            await asyncio.to_thread(committer.submit_later, index, waiter)
        assert _queued(committer) == CALLERS - 1
        assert not any(w.future.done() for w in waiters)  # nothing settled before the commit
        release.set()
        assert await first == 0
        results = [await w.wait() for w in waiters]

        assert results == [i * 10 for i in range(1, CALLERS)]
        assert [items for items, _ in written] == [[0], list(range(1, CALLERS))]
        assert counter.settles == 1  # one loop wake-up for the whole group of seven
        assert counter.futures == CALLERS - 1

    asyncio.run(scenario())


def test_a_lone_loop_caller_writes_its_item_at_once_on_its_own_thread() -> None:
    async def scenario() -> None:
        written: list[list[str]] = []

        def write(items: Sequence[str]) -> list[str]:
            written.append(list(items))
            return [item.upper() for item in items]

        committer: GroupCommitter[str, str] = GroupCommitter(write)
        waiter: LoopWaiter[str] = LoopWaiter()
        await asyncio.to_thread(committer.submit_later, "a", waiter)
        assert written == [["a"]]  # written before submit_later returned: it was the writer
        assert await waiter.wait() == "A"
        assert not committer._writing

    asyncio.run(scenario())


def test_a_loop_caller_gets_its_own_error_and_the_others_their_results() -> None:
    async def scenario() -> None:
        release = threading.Event()
        groups: list[list[int]] = []

        def write(items: Sequence[int]) -> list[int]:
            if not groups:
                release.wait(30)
            groups.append(list(items))
            if 3 in items:
                raise ValueError("item 3 is bad")
            return list(items)

        committer: GroupCommitter[int, int] = GroupCommitter(write)
        first = asyncio.create_task(asyncio.to_thread(committer.submit, 0))
        await asyncio.to_thread(_wait_until, lambda: committer.groups == 1)
        waiters: list[LoopWaiter[int]] = [LoopWaiter() for _ in range(1, CALLERS)]
        for index, waiter in enumerate(waiters, start=1):
            await asyncio.to_thread(committer.submit_later, index, waiter)
        release.set()
        await first
        for index, waiter in enumerate(waiters, start=1):
            if index == 3:
                with pytest.raises(ValueError, match="item 3 is bad"):
                    await waiter.wait()
            else:
                assert await waiter.wait() == index

    asyncio.run(scenario())


def test_a_loop_writer_hands_the_loop_callers_queued_while_it_wrote_to_the_relay_thread() -> None:
    # Nobody else would write them (loop callers never wait on a thread), and the lead's own
    # request must not wait for them: the committer's relay thread writes them.
    async def scenario() -> None:
        release = threading.Event()
        written: list[tuple[list[int], int]] = []
        committer: GroupCommitter[int, int] = GroupCommitter(_held_write(release, written))
        waiters: list[LoopWaiter[int]] = [LoopWaiter() for _ in range(CALLERS)]
        lead = asyncio.create_task(asyncio.to_thread(committer.submit_later, 0, waiters[0]))
        await asyncio.to_thread(_wait_until, lambda: committer.groups == 1)
        for index in range(1, CALLERS):
            await asyncio.to_thread(committer.submit_later, index, waiters[index])
        release.set()
        await lead
        assert [await w.wait() for w in waiters] == [i * 10 for i in range(CALLERS)]
        assert [items for items, _ in written] == [[0], list(range(1, CALLERS))]
        relay = committer._relay
        assert relay is not None
        assert written[1][1] == relay.ident != written[0][1]
        await asyncio.to_thread(_wait_until, lambda: not committer._writing)

        # The relay's next turn, after a later lead: the same thread, nothing left behind.
        release.clear()
        written.clear()
        more: list[LoopWaiter[int]] = [LoopWaiter() for _ in range(3)]
        held = threading.Event()

        def write_held(items: Sequence[int]) -> list[int]:
            if not written:
                held.set()
                release.wait(30)
            written.append((list(items), threading.get_ident()))
            return list(items)

        committer._write = write_held
        second = asyncio.create_task(asyncio.to_thread(committer.submit_later, 100, more[0]))
        await asyncio.to_thread(held.wait, 30)
        await asyncio.to_thread(committer.submit_later, 101, more[1])
        await asyncio.to_thread(committer.submit_later, 102, more[2])
        release.set()
        await second
        assert [await w.wait() for w in more] == [100, 101, 102]
        assert written[1] == ([101, 102], relay.ident)

    asyncio.run(scenario())


def test_a_loop_writer_hands_the_writers_role_to_a_blocking_caller_queued_behind_it() -> None:
    async def scenario() -> None:
        release = threading.Event()
        written: list[tuple[list[int], int]] = []
        committer: GroupCommitter[int, int] = GroupCommitter(_held_write(release, written))
        waiters: list[LoopWaiter[int]] = [LoopWaiter() for _ in range(3)]
        lead = asyncio.create_task(asyncio.to_thread(committer.submit_later, 0, waiters[0]))
        await asyncio.to_thread(_wait_until, lambda: committer.groups == 1)
        await asyncio.to_thread(committer.submit_later, 1, waiters[1])
        blocking_thread: list[int] = []

        def blocking() -> int:
            blocking_thread.append(threading.get_ident())
            return committer.submit(2)

        blocked = asyncio.create_task(asyncio.to_thread(blocking))
        await asyncio.to_thread(_wait_until, lambda: _queued(committer) == 2)
        await asyncio.to_thread(committer.submit_later, 3, waiters[2])
        release.set()
        await lead
        assert await blocked == 20
        # The blocking caller wrote the rest, loop callers around it included, in arrival order.
        assert [items for items, _ in written] == [[0], [1, 2, 3]]
        assert written[1][1] == blocking_thread[0] != written[0][1]
        assert [await w.wait() for w in waiters] == [0, 10, 30]

    asyncio.run(scenario())


def test_a_loop_caller_that_went_away_is_skipped_and_the_group_still_settles() -> None:
    async def scenario() -> None:
        release = threading.Event()
        written: list[tuple[list[int], int]] = []
        committer: GroupCommitter[int, int] = GroupCommitter(_held_write(release, written))
        first = asyncio.create_task(asyncio.to_thread(committer.submit, 0))
        await asyncio.to_thread(_wait_until, lambda: committer.groups == 1)
        gone: LoopWaiter[int] = LoopWaiter()
        kept: LoopWaiter[int] = LoopWaiter()
        await asyncio.to_thread(committer.submit_later, 1, gone)
        await asyncio.to_thread(committer.submit_later, 2, kept)
        gone.future.cancel()  # its request was cancelled (client gone)
        release.set()
        await first
        assert await kept.wait() == 20
        assert gone.future.cancelled()
        assert [items for items, _ in written] == [[0], [1, 2]]  # its entry is written anyway

    asyncio.run(scenario())


def test_a_loop_waiter_is_made_only_on_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        LoopWaiter()
