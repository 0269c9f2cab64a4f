"""bench/measure.py: a section's CPU by thread name, and the host's steal."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.measure import measured, steal_seconds

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="per-thread CPU is read from /proc"
)


def _spin(cpu_seconds: float) -> None:
    """Use ``cpu_seconds`` of this thread's CPU (however long that takes on a loaded host)."""
    until = time.thread_time() + cpu_seconds
    while time.thread_time() < until:
        pass


def test_a_section_says_which_thread_used_its_cpu() -> None:
    done, release = threading.Event(), threading.Event()

    def work() -> None:
        _spin(0.4)
        done.set()
        release.wait(60)  # alive until the section ended: its last sample is the final one

    _spin(0.2)  # before the section: not counted for the main thread
    worker = threading.Thread(target=work, name="bench-test-busy")
    with measured(threads=True) as span:
        worker.start()
        assert done.wait(60)
    release.set()
    worker.join()
    by_thread = span.extra["thread_cpu_seconds"]
    assert 0.35 <= by_thread["bench-test-busy"] <= 0.6
    # The main thread only waited in the section; its 0.2 s before the section are left out.
    assert by_thread["MainThread"] < 0.15
    assert "bench-thread-cpu" not in by_thread  # the sampler's own CPU is not reported
    assert span.extra["steal_seconds"] >= 0.0


def test_without_threads_a_span_has_no_thread_figures() -> None:
    with measured() as span:
        pass
    assert "thread_cpu_seconds" not in span.as_json()
    assert span.as_json()["steal_seconds"] >= 0.0
    assert steal_seconds() >= 0.0


def test_with_children_a_section_counts_the_cpu_of_the_processes_it_waited_for() -> None:
    spin = "import time\nuntil = time.process_time() + 0.4\nwhile time.process_time() < until: pass"
    with measured(threads=True, children=True) as span:
        subprocess.run([sys.executable, "-c", spin], check=True)
    with measured() as without:
        subprocess.run([sys.executable, "-c", spin], check=True)

    assert span.extra["children_cpu_seconds"] >= 0.4
    assert span.cpu_seconds >= span.extra["children_cpu_seconds"]
    assert span.extra["thread_cpu_seconds"]["child processes"] >= 0.4
    assert without.cpu_seconds < 0.4  # by default only this process's own CPU
    assert "children_cpu_seconds" not in without.extra
