"""Waiting in tests without timing anything: poll a condition (30 s cap, then fail), and look at
whether a group-commit writer is lingering for announced callers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from identity.group_commit import GroupCommitter


def wait_until(
    condition: Callable[[], bool],
    what: str = "condition",
    *,
    timeout_s: float = 30.0,
    poll_s: float = 0.01,
) -> None:
    """Return once ``condition()`` is true, looking every ``poll_s``; fail the test, naming
    ``what``, if it is not within ``timeout_s`` (a cap that only a hung test reaches, not a
    timing assertion: tests of real processes pass the crash harness's longer one, and look less
    often than a thread's state is looked at)."""
    pause = threading.Event()
    # By the clock, not by counting polls: a condition that takes time to evaluate (a process
    # table read, a database query) would otherwise stretch the cap by its own cost.
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached in {timeout_s:.0f} s")
        pause.wait(poll_s)


def lingering(committer: GroupCommitter[Any, Any]) -> bool:
    """Whether ``committer``'s writer is waiting for announced callers before it commits."""
    with committer._cond:
        return committer._lingering is not None
