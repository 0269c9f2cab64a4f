"""Run a child process, read what it answered, and SIGKILL it mid-work.

The crash tests of the read audit (profile reads, audience pages) start the service's own wiring in
a child that prints one line per answered read, kill it with SIGKILL once enough were answered, and
then check that every answered read left its durable trace.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path


def lines_until_killed(
    argv: Sequence[str], *, cwd: Path, enough: Callable[[list[str]], bool]
) -> list[str]:
    """Run ``argv``; read its output lines until ``enough(lines)``; SIGKILL it; return every line.

    Lines printed after ``enough`` held but before the kill landed are returned too: those reads
    were answered as well. A child that ends before ``enough`` holds fails the test with its
    stderr.
    """
    child = subprocess.Popen(
        list(argv), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.put(line)
        lines.put(None)  # the child's output ended

    threading.Thread(target=pump, daemon=True).start()
    answered: list[str] = []
    try:
        while not enough(answered):
            line = lines.get(timeout=300)  # a generous cap for a loaded machine, not a timing
            if line is None:
                assert child.stderr is not None
                raise AssertionError(f"the child ended early: {child.stderr.read()}")
            answered.append(line)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(60)
    while (line := lines.get(timeout=60)) is not None:
        answered.append(line)
    return answered
