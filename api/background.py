"""In-process background work: the DSR worker and the retention schedule.

Each job runs in a thread (the core is synchronous) every ``interval`` seconds, first after one
interval, never two runs of one job at once. Shutdown waits for a running pass to finish instead of
abandoning it in its thread while the container closes underneath. Off when the interval is 0:
then ``idgraph dsr process`` and ``idgraph retention run`` are run by an external scheduler.

With several server processes each runs its own worker: claiming a request is atomic in the DSR
store, so a request is processed once; a webhook may then (rarely) be sent twice, which receivers
absorb by its ``webhook-id`` (the Standard Webhooks idempotency key).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog

from api.metrics import Metrics
from bootstrap.container import Container

log = structlog.get_logger("idgraph.background")


async def _every(
    stop: asyncio.Event, interval: float, job: Callable[[], object], name: str
) -> None:
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
    tasks: list[asyncio.Task[None]] = []
    container.dsr.on_queue = metrics.set_dsr_queue
    if settings.dsr_worker_interval_seconds > 0:
        tasks.append(
            asyncio.create_task(
                _every(stop, settings.dsr_worker_interval_seconds, container.dsr.run_once, "dsr")
            )
        )
    if settings.retention_interval_seconds > 0:
        sweeper = container.retention  # built now: a bad retention setting fails start-up
        tasks.append(
            asyncio.create_task(
                _every(stop, settings.retention_interval_seconds, sweeper.run, "retention")
            )
        )
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
