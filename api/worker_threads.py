"""The API's worker threads: where a route's blocking work (a durable commit) runs, off the
event loop.

Why not starlette's ``run_in_threadpool`` (anyio's ``to_thread.run_sync``): per call it passes
a checkpoint (one extra event-loop turn), a capacity limiter and a cancel scope, and hands the
call to its worker through a ``queue.Queue``, whose ``put`` wakes the worker through a
pure-Python ``Condition.notify``. Under 16 concurrent ``identify`` calls that hop was 8.7 % of
the server's GIL samples, ``Queue.put`` → ``Condition.notify`` alone 7.0 %, the largest
self-time entry (py-spy, stop 46). A ``concurrent.futures.ThreadPoolExecutor`` hands the call
over through a C ``SimpleQueue``, and the answer comes back with one ``call_soon_threadsafe``.

What is kept from ``run_sync``:

* **the call is never abandoned**: a request cancelled while its call runs (a task-group
  cancel, or uvicorn cancelling its tasks when a graceful shutdown times out) does not leave
  the route until the call has returned, so a route's ``finally`` (an arrival's withdrawal)
  runs after the use case, never while its durable commit is under way; the cancellation is
  raised then. (``run_sync`` kept only an anyio cancel scope's cancellation waiting; a native
  ``Task.cancel`` left at once. Here neither leaves early.)
* **the caller's context variables** (structlog's request id) are seen by the call: it runs in a
  copy of the caller's context, as ``run_sync`` does.
* **capacity**: at most :data:`MAX_WORKERS` calls run at once, anyio's default limiter (more
  wait in the executor's queue, in arrival order). The threads are the app's own, so a burst of
  these routes no longer takes the tokens of the sync routes FastAPI runs through anyio.

One per app (:func:`api.app.create_app`), shut down in the app's lifespan after the last
request and before the container closes: ``shutdown`` waits for calls still running (a
cancelled request's), so no call outlives the store it writes to. The pool starts on first use
and again after a shutdown (a test app may serve requests with or without its lifespan).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import Context, copy_context
from typing import TypeVar, TypeVarTuple

import anyio

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# anyio's default thread limiter: what these routes had before (shared with the sync routes).
MAX_WORKERS = 40


def _succeed(answer: asyncio.Future[T], result: T) -> None:
    if not answer.cancelled():
        answer.set_result(result)


def _fail(answer: asyncio.Future[T], error: BaseException) -> None:
    if not answer.cancelled():
        answer.set_exception(error)


def _call(
    loop: asyncio.AbstractEventLoop,
    answer: asyncio.Future[T],
    context: Context,
    func: Callable[[*Ts], T],
    args: tuple[*Ts],
) -> None:
    """On a worker thread: the call, in the caller's context, and its outcome handed back to
    the event loop (one ``call_soon_threadsafe``)."""
    try:
        result = context.run(func, *args)
    except BaseException as error:  # noqa: BLE001 - handed to the awaiting route, re-raised there
        loop.call_soon_threadsafe(_fail, answer, error)
    else:
        loop.call_soon_threadsafe(_succeed, answer, result)


async def _outlive(work: Future[None]) -> None:
    """Wait until ``work`` has returned on its thread, whatever cancellation comes meanwhile:
    shielded from anyio cancel scopes (which would otherwise cancel this task again on every
    loop turn) and from further native cancellations."""
    finished = asyncio.wrap_future(work)
    with anyio.CancelScope(shield=True):
        while not finished.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(finished)


class WorkerThreads:
    """The app's worker threads for blocking route bodies (see the module)."""

    def __init__(self, max_workers: int = MAX_WORKERS) -> None:
        self._max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, func: Callable[[*Ts], T], *args: *Ts) -> T:
        """``func(*args)`` on a worker thread, in a copy of the caller's context; its result, or
        its exception raised here. If the awaiting task is cancelled meanwhile, the call still
        runs to its end, and only then is the cancellation raised."""
        loop = asyncio.get_running_loop()
        pool = self._pool
        if pool is None:
            pool = self._pool = ThreadPoolExecutor(self._max_workers, "idgraph-api")
        answer: asyncio.Future[T] = loop.create_future()
        work = pool.submit(_call, loop, answer, copy_context(), func, args)
        try:
            return await answer
        except asyncio.CancelledError:
            await _outlive(work)
            raise

    def shutdown(self) -> None:
        """Wait for the calls still running, then stop the threads (blocks: call it once the
        server takes no more requests). A later :meth:`run` starts a new pool."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
