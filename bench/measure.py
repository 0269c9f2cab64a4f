"""What every benchmark reports beside wall time: CPU seconds, bytes written, load average.

The machines these benches run on are shared (2 cores, several jobs): wall time alone says as
much about the neighbours as about idgraph. So every timed section records

* ``seconds``: wall clock (``time.perf_counter``);
* ``cpu_seconds``: user + system CPU of this process, every thread included
  (``time.process_time``), plus that of the processes named in ``pids`` (a server under load,
  read from ``/proc/<pid>/stat``);
* ``bytes_written``: what this process (and ``pids``) caused to be written to storage,
  ``write_bytes - cancelled_write_bytes`` of ``/proc/<pid>/io`` (pages dirtied, the WAL and
  checkpoints included; dirtied pages of a file truncated or deleted before writeback, such as
  a temp file or a WAL reset, are cancelled by the kernel and not counted; ``0`` where
  ``/proc`` does not say);
* ``load_before`` / ``load_after``: the 1-minute load average when the section started and ended;
* ``steal_seconds``: CPU time the hypervisor gave to other guests while the section ran
  (machine-wide, every CPU: ``steal`` of ``/proc/stat``); a section whose CPU seconds grew with
  its steal ran on a contended host, not on slower code;
* with ``threads=True``, ``thread_cpu_seconds``: this process's CPU seconds by thread name
  (:class:`ThreadCpu`), so a section run on several threads says which one its CPU went to;
* with ``children=True``, the CPU of the child processes this process started and waited for
  during the section (``RUSAGE_CHILDREN``: the bulk file's reader process) is in
  ``cpu_seconds`` too, and on its own in ``children_cpu_seconds`` (and, with ``threads``,
  under ``child processes`` in ``thread_cpu_seconds``). A child still running when the section
  ends is not counted: the caller waits for its children first.

A ratio of two sections of the same run is meaningful when both ran at a similar load; the
report prints the load so a reader can judge. Stdlib only: the ingest floor imports this and
nothing of idgraph.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def load_average() -> float:
    """The 1-minute load average (0.0 where the platform has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # pragma: no cover - platforms without getloadavg
        return 0.0


def peak_rss_kib(reader_kib: int | None = None) -> int:
    """This process's peak RSS in KiB, plus a bulk file's reader process's own peak
    (``BulkReport.reader_peak_rss_kib``, which that process reports from its ``VmHWM``).

    Why not ``getrusage(RUSAGE_CHILDREN)``: a child's figure counts the parent's pages it
    shared at the fork, so a large parent would be counted twice."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    own = peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux
    return own + (reader_kib or 0)


def bytes_written(pid: int | str = "self") -> int:
    """Bytes this process caused to be written to storage, net of cancelled writes.

    ``write_bytes`` of ``/proc/<pid>/io`` counts a page when it is dirtied; when the file is
    truncated or deleted before the page reaches the disk (a temp file, a sorter spill) the
    kernel adds it to ``cancelled_write_bytes`` instead of writing it. The difference is what
    reached (or will reach) storage.
    """
    fields: dict[str, int] = {}
    try:
        with Path(f"/proc/{pid}/io").open(encoding="ascii") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name in ("write_bytes", "cancelled_write_bytes"):
                    fields[name] = int(value)
    except (OSError, ValueError):
        return 0
    return fields.get("write_bytes", 0) - fields.get("cancelled_write_bytes", 0)


def _stat_cpu_seconds(stat: Path) -> float | None:
    """User + system CPU seconds of a ``/proc/.../stat`` file (a process's or a thread's), or
    ``None`` if it cannot be read (the process or thread is gone, or no ``/proc``)."""
    try:
        with stat.open(encoding="ascii") as handle:
            # The command name (field 2) may hold spaces; the fields after its ")" are fixed.
            fields = handle.read().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15 of the stat line, i.e. 11 and 12 after the ")".
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return None


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process (``/proc/<pid>/stat``; 0.0 if unreadable)."""
    return _stat_cpu_seconds(Path(f"/proc/{pid}/stat")) or 0.0


def children_cpu_seconds() -> float:
    """User + system CPU seconds of the child processes this process has waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def steal_seconds() -> float:
    """CPU seconds stolen from this (virtual) machine by the hypervisor so far, every CPU
    together: the ``steal`` column of ``/proc/stat``'s first line (0.0 where it does not say)."""
    try:
        with Path("/proc/stat").open(encoding="ascii") as handle:
            fields = handle.readline().split()
        return int(fields[8]) / _CLOCK_TICKS  # cpu user nice system idle iowait irq softirq steal
    except (OSError, IndexError, ValueError):
        return 0.0


def _task_cpu_seconds(native_id: int) -> float | None:
    """User + system CPU seconds of one thread of this process (``/proc/self/task/<tid>/stat``),
    or ``None`` once the thread has ended (or where ``/proc`` does not say)."""
    return _stat_cpu_seconds(Path(f"/proc/self/task/{native_id}/stat"))


class ThreadCpu:
    """This process's CPU seconds by thread name over a section, sampled by a thread of its own.

    Why: the real ingest path runs on two threads (the reader validates the next batch while a
    writer thread commits the one before) and its CPU for the same work moved 78-98 s between
    identical 1M runs (stop 50); the process's total cannot say which thread's work grew. The
    threads are found with :func:`threading.enumerate` (their names: ``MainThread``,
    ``bulk-commit_0``, ...) and read from ``/proc/self/task/<tid>/stat`` every ``interval_s``
    (10 ms resolution: the kernel's clock ticks). A thread that ends during the section keeps
    its last sample, so up to ``interval_s`` of its CPU before it ended is not counted; a thread
    that runs before and after keeps only what it used in between. The sampler's own CPU
    (~0.1 ms a sample) is left out. Threads of the same name are added up.
    """

    def __init__(self, interval_s: float = 0.1) -> None:
        self._interval_s = interval_s
        self._begun: set[int] = set()  # the threads alive at start (their CPU so far is left out)
        self._start: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._run, name="bench-thread-cpu", daemon=True)

    def _sample(self) -> None:
        me = threading.get_native_id()
        for thread in threading.enumerate():
            tid = thread.native_id
            if tid is None or tid == me:
                continue
            cpu = _task_cpu_seconds(tid)
            if cpu is not None:
                self._start.setdefault(tid, cpu if tid in self._begun else 0.0)
                self._last[tid] = (thread.name, cpu)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def start(self) -> None:
        """Take the threads alive now as the baseline and start sampling."""
        self._begun = {t.native_id for t in threading.enumerate() if t.native_id is not None}
        self._sample()
        self._sampler.start()

    def stop(self) -> dict[str, float]:
        """Stop sampling; the CPU seconds each thread name used since :meth:`start`."""
        self._stop.set()
        self._sampler.join()
        self._sample()
        out: dict[str, float] = {}
        for tid, (name, cpu) in self._last.items():
            out[name] = round(out.get(name, 0.0) + cpu - self._start[tid], 3)
        return dict(sorted(out.items()))


@dataclass(slots=True)
class Span:
    """One measured section (see the module docstring for each figure)."""

    seconds: float = 0.0
    cpu_seconds: float = 0.0
    bytes_written: int = 0
    load_before: float = 0.0
    load_after: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The figures, rounded, as a JSON object."""
        return {
            "seconds": round(self.seconds, 4),
            "cpu_seconds": round(self.cpu_seconds, 4),
            "bytes_written": self.bytes_written,
            "load_before": self.load_before,
            "load_after": self.load_after,
            **self.extra,
        }

    def describe(self) -> str:
        """``1.234 s wall, 1.100 s CPU, 12.3 MiB written, load 1.2 -> 1.5``."""
        return (
            f"{self.seconds:.3f} s wall, {self.cpu_seconds:.3f} s CPU, "
            f"{self.bytes_written / 2**20:.1f} MiB written, "
            f"load {self.load_before:.2f} -> {self.load_after:.2f}"
        )


@contextmanager
def measured(
    pids: Sequence[int] = (), *, threads: bool = False, children: bool = False
) -> Iterator[Span]:
    """Measure the body: the :class:`Span` is filled in when the block ends. ``threads``: also
    this process's CPU by thread name (:class:`ThreadCpu`), in ``extra``; ``children``: the CPU
    of the child processes it waited for is counted too (see the module docstring)."""
    span = Span(load_before=load_average())
    by_thread = ThreadCpu() if threads else None
    written = bytes_written() + sum(bytes_written(p) for p in pids)
    stolen = steal_seconds()
    if by_thread is not None:
        by_thread.start()
    waited = children_cpu_seconds()
    cpu = time.process_time() + sum(process_cpu_seconds(p) for p in pids)
    started = time.perf_counter()
    try:
        yield span
    finally:
        span.seconds = time.perf_counter() - started
        span.cpu_seconds = time.process_time() + sum(process_cpu_seconds(p) for p in pids) - cpu
        if by_thread is not None:
            span.extra["thread_cpu_seconds"] = by_thread.stop()
        if children:
            child_cpu = round(children_cpu_seconds() - waited, 3)
            span.cpu_seconds += child_cpu
            span.extra["children_cpu_seconds"] = child_cpu
            if by_thread is not None and child_cpu:
                span.extra["thread_cpu_seconds"]["child processes"] = child_cpu
        span.extra["steal_seconds"] = round(steal_seconds() - stolen, 2)
        span.bytes_written = bytes_written() + sum(bytes_written(p) for p in pids) - written
        span.load_after = load_average()


def ratio(value: float, baseline: float) -> float:
    """``value / baseline`` rounded to 4 places (0.0 when the baseline is 0)."""
    return round(value / baseline, 4) if baseline else 0.0
