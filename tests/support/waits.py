"""Waiting in tests without timing anything: poll a condition (30 s cap, then fail), and look at
whether a group-commit writer is lingering for announced callers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from identity.group_commit import GroupCommitter


def wait_until(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` is true; fail the test if it is not within 30 s (a cap that
    only a hung test reaches, not a timing assertion)."""
    pause = threading.Event()
    for _ in range(3000):
        if condition():
            return
        pause.wait(0.01)
    raise AssertionError("condition not reached in 30 s")


def lingering(committer: GroupCommitter[Any, Any]) -> bool:
    """Whether ``committer``'s writer is waiting for announced callers before it commits."""
    with committer._cond:
        return committer._lingering is not None
