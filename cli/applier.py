"""The ingest journal's applier in its own process (``IDGRAPH_INGEST_APPLIER=process``).

``idgraph ingest-applier`` applies the batches ``POST /v1/ingest`` queued with
``Prefer: respond-async`` (the durable journal beside the graph file) until it is stopped;
``idgraph serve`` starts one as its child with that setting (:class:`ApplierChild`) and stops it
when the server stops.

Why a process: accepting batches (HTTP, validation, sealing, the journal's commit) and
applying them share one GIL when the server's own thread applies. Side by side the two took
longer than one after the other (bench/README.md, stop 48: 0.68-0.75x of the bulk path against
0.79-0.88x with the applier in its own process, same events). Nothing else changes: the journal
is the only hand-over (the server keeps no batch in memory for another process), a job's status
and result are read from it by the server, crash safety is the journal's (a batch is applied
once, by whichever applier takes it; one that dies mid-group leaves it queued), and every write
goes through the same engine, policy and vault as in the server.

The apply side's metrics (ingest outcomes, ``idgraph_store_seconds{operation="ingest"}``,
``idgraph_ingest_journal_batches_opened_total``) are counted in the applier process, which
serves no ``/metrics``: it writes its counts to a file after each group
(``IDGRAPH_INGEST_APPLIER_TALLY_FILE``; ``services.metrics.TalliedMetrics``), and the server
adds them to its own series, so its ``/metrics`` counts every ingest. Its log lines carry
``process="ingest-applier"``.

The child also writes that file once it has first looked at the journal, marked with the run id
``idgraph serve`` gave it (``IDGRAPH_INGEST_APPLIER_RUN_ID``): until then the server's
``/readyz`` answers 503 (``services.metrics.ApplierStart``), because a batch accepted before the
child is up would wait for it (building its container takes seconds).
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType

import structlog

from services.async_ingest import (
    APPLIER_PROCESS_POLL_S,
    IDLE_UPKEEP_S,
    AsyncIngest,
    JournalApplier,
)
from services.gc_policy import collector_paused

log = structlog.get_logger("idgraph.ingest.applier")

# How ``idgraph serve`` starts its applier: this interpreter, this package's CLI.
APPLIER_COMMAND = (sys.executable, "-c", "from cli.main import main; main()", "ingest-applier")
# Seconds before a child that exited on its own is started again.
RESTART_DELAY_S = 1.0
# Seconds a stopping child gets to finish its transaction before it is killed.
STOP_TIMEOUT_S = 30.0
# How often the applier process checks that the process that started it is still there.
PARENT_CHECK_S = 0.5
# The exit status of a child that cannot start (bad settings, no journal on this store): not
# restarted, the server stops (as it does on bad settings of its own).
CANNOT_START = 2


def run_applier(
    jobs: AsyncIngest,
    parent_pid: int | None = None,
    after_apply: Callable[[], None] = lambda: None,
    on_first_look: Callable[[], None] = lambda: None,
) -> None:
    """Apply ``jobs``' journal on a :class:`JournalApplier` thread until SIGTERM or SIGINT,
    or until the process ``parent_pid`` names is gone (this process was then re-parented).
    The group being applied is finished first (one transaction either way). ``after_apply``
    runs after each group, every :data:`PARENT_CHECK_S` on this (main) thread, and once at the
    end (the counts written for the server's ``/metrics``:
    ``services.metrics.TalliedMetrics.flush``, which writes only what is owed: so a write that
    failed, the first look's included, is made as soon as it can be, not only after the next
    group). ``on_first_look`` runs once the applier thread has first looked at the journal,
    before it applies anything (the server's ``/readyz`` waits for it:
    ``services.metrics.TalliedMetrics.mark_started``)."""
    stop = threading.Event()

    @contextmanager
    def around_apply() -> Iterator[None]:
        try:
            with collector_paused():
                yield
        finally:
            after_apply()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # What start-up built stays out of the collector's reach, as in the bulk path.
    gc.collect()
    gc.freeze()
    applier = JournalApplier(
        jobs,
        poll_s=APPLIER_PROCESS_POLL_S,
        around_apply=around_apply,
        idle_upkeep_s=IDLE_UPKEEP_S,
        on_first_look=on_first_look,
    )
    applier.start()
    log.info("ingest_applier_started", pid=os.getpid())
    try:
        while not stop.wait(PARENT_CHECK_S):
            if parent_pid is not None and os.getppid() != parent_pid:
                log.warning("ingest_applier_parent_gone", parent=parent_pid)
                break
            after_apply()
    finally:
        applier.stop(STOP_TIMEOUT_S)
        after_apply()
        log.info("ingest_applier_stopped", pid=os.getpid())


class ApplierChild:
    """``idgraph serve``'s applier process: started before the server, started again
    (after :data:`RESTART_DELAY_S`) if it exits while the server runs, stopped with SIGTERM
    (SIGKILL after :data:`STOP_TIMEOUT_S`) when the server stops. A child that cannot start
    (exit :data:`CANNOT_START`) is not restarted: ``on_give_up`` is called instead. ``on_exit``
    is told every exit's status while the server runs (``/readyz`` reports a child that keeps
    exiting before it starts: ``bootstrap.container.APPLIER_EXITS``)."""

    def __init__(
        self,
        env: Mapping[str, str],
        on_give_up: Callable[[], None],
        command: tuple[str, ...] = APPLIER_COMMAND,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self._command = (*command, "--parent-pid", str(os.getpid()))
        self._env = dict(env)
        self._on_give_up = on_give_up
        self._on_exit = on_exit
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._watcher: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        """The running child's process id."""
        with self._lock:
            return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the child and the thread that watches it."""
        self._spawn()
        self._watcher = threading.Thread(
            target=self._watch, name="idgraph-applier-watch", daemon=True
        )
        self._watcher.start()

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():  # stop() came first: no child after it
                return
            # Its own session: a Ctrl-C at the terminal reaches the server, which stops the
            # child itself (after the server), not both at once.
            self._process = subprocess.Popen(  # noqa: S603 - this package's fixed argv
                self._command, env=self._env, start_new_session=True
            )
            pid = self._process.pid
        log.info("ingest_applier_process_started", pid=pid)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                process = self._process
            if process is None:
                return
            status = process.wait()
            if self._stopping.is_set():
                return
            log.error("ingest_applier_process_exited", pid=process.pid, status=status)
            if self._on_exit is not None:
                self._on_exit(status)
            if status == CANNOT_START:
                self._on_give_up()
                return
            if self._stopping.wait(RESTART_DELAY_S):
                return
            self._spawn()

    def stop(self) -> None:
        """Stop the child (the group it is applying is finished first) and its watcher."""
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._watcher is not None:
            self._watcher.join(STOP_TIMEOUT_S)
