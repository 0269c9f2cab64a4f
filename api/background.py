"""In-process background work: the DSR worker and the retention schedule.

Each job runs in a thread (the core is synchronous) every ``interval`` seconds, first after one
interval, never two runs of one job at once. Shutdown waits for a running pass to finish instead of
abandoning it in its thread while the container closes underneath. Off when the interval is 0:
then ``idgraph dsr process`` and ``idgraph retention run`` are run by an external scheduler.

With several server processes each runs its own worker: claiming a request is atomic in the DSR
store, so a request is processed once; a webhook may then (rarely) be sent twice, which receivers
absorb by its ``webhook-id`` (the Standard Webhooks idempotency key).

On a store that connects in the background (Neo4j, :class:`DeferredGraphStore`) the jobs that
use the graph (DSR worker, retention) wait for it to be ready instead of failing a pass every
interval: one ``background_jobs_waiting_for_store`` line when they start waiting, one
``background_jobs_store_ready`` line when they start. If the store gives up, the server shuts
down (exit 3) and the jobs never run. The audit-head job does not touch the graph and is not held
back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog

from api.metrics import Metrics
from bootstrap.container import Container
from identity.store.deferred import DeferredGraphStore, StoreState
from identity.store.port import GraphStore

log = structlog.get_logger("idgraph.background")
STORE_POLL_S = 0.25  # how often the waiting jobs look at the store's state (no I/O: a field read)


def _state(store: DeferredGraphStore) -> StoreState:
    # A call, not the attribute: another thread changes it while this coroutine waits.
    return store.state


async def _store_ready(store: GraphStore, stop: asyncio.Event, jobs: list[str]) -> bool:
    """Wait until ``store`` serves; ``False`` if the app stops first or the store gave up.

    Only a :class:`DeferredGraphStore` can be not ready; any other store is ready at once.
    """
    if not isinstance(store, DeferredGraphStore) or store.state is StoreState.READY:
        return True
    log.info(
        "background_jobs_waiting_for_store",
        jobs=jobs,
        reason=store.reason,
        note="they start once the store is ready",
    )
    state = _state(store)
    while state in (StoreState.CONNECTING, StoreState.RECOVERING):
        try:
            await asyncio.wait_for(stop.wait(), timeout=STORE_POLL_S)
        except TimeoutError:
            state = _state(store)
            continue
        return False
    if state is not StoreState.READY:  # gave up (the server is shutting down) or closed
        return False
    log.info("background_jobs_store_ready", jobs=jobs)
    return True


async def _every(
    stop: asyncio.Event,
    interval: float,
    job: Callable[[], object],
    name: str,
    ready: asyncio.Future[object] | None = None,
) -> None:
    # shield: one waiter per job on the same future; a job stopping must not cancel the others'.
    if ready is not None and not await asyncio.shield(ready):
        return
    while True:
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            pass
        else:
            return
        try:
            await asyncio.to_thread(job)
        except Exception as exc:  # a failed pass is logged; the next one retries
            log.exception("background_job_failed", job=name, error=type(exc).__name__)


@asynccontextmanager
async def background_jobs(container: Container, metrics: Metrics) -> AsyncIterator[None]:
    """Run the configured jobs for the lifetime of the app."""
    settings = container.settings
    stop = asyncio.Event()
    tasks: list[asyncio.Task[object]] = []
    container.dsr.on_queue = metrics.set_dsr_queue
    graph_jobs: list[tuple[str, float, Callable[[], object]]] = []
    if settings.dsr_worker_interval_seconds > 0:
        graph_jobs.append(("dsr", settings.dsr_worker_interval_seconds, container.dsr.run_once))
    if settings.retention_interval_seconds > 0:
        sweeper = container.retention  # built now: a bad retention setting fails start-up
        graph_jobs.append(("retention", settings.retention_interval_seconds, sweeper.run))
    if graph_jobs:
        # Awaited at shutdown with the jobs: the wait never outlives the app.
        tasks.append(
            asyncio.create_task(
                _store_ready(container.store, stop, [name for name, _, _ in graph_jobs])
            )
        )
        ready = tasks[-1]
        for name, interval, job in graph_jobs:
            tasks.append(asyncio.create_task(_every(stop, interval, job, name, ready)))
    if settings.audit_head_interval_seconds > 0:
        publisher = container.audit_heads  # built now: a missing key fails start-up
        tasks.append(
            asyncio.create_task(
                _every(stop, settings.audit_head_interval_seconds, publisher.publish, "audit_head")
            )
        )
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
