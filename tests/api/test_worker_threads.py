"""The API's worker threads (:mod:`api.worker_threads`): a cancelled request does not leave its
route while its call still runs, the call sees the caller's context, 16 calls run at once.

The HTTP cases drive the real app's ASGI callable with a real ``POST /v1/identify`` on a real
store, hold the use case on its worker thread (nothing timed: an event releases it), cancel the
request's task, and look at the event loop's side: the route has not left and the arrival is
still announced, however many loop turns pass, until the use case has returned and committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import pytest
from fastapi import FastAPI
from starlette.types import Message

from api.app import create_app
from api.worker_threads import WorkerThreads
from bootstrap.container import Container, build_container
from bootstrap.settings import Settings
from privacy.access.api_keys import Scope
from services.ingest import IngestService

EMAIL = "held.request@shop.de"
BODY = json.dumps({"identifiers": [{"type": "email", "value": EMAIL}], "source": "web"}).encode()
TURNS = 50  # event-loop turns the route is given to leave early (it needs one or two to do so)


@dataclass
class Served:
    app: FastAPI
    container: Container
    token: str


@pytest.fixture
def served(settings: Settings) -> Iterator[Served]:
    container = build_container(settings)
    _, token = container.api_keys.create("worker-threads", frozenset({Scope.INGEST}))
    app = create_app(container=container)
    yield Served(app, container, token)
    app.state.worker_threads.shutdown()
    container.close()


def _http_scope(token: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/identify",
        "raw_path": b"/v1/identify",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
            (b"authorization", f"Bearer {token}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


def _coming(service: IngestService) -> int:
    group = service._identify_group
    with group._cond:
        return group._coming


@pytest.mark.parametrize("cancel", ["cancel_scope", "task_cancel"])
def test_a_cancelled_identify_leaves_its_route_only_after_the_use_case_committed(
    served: Served, monkeypatch: pytest.MonkeyPatch, cancel: Literal["cancel_scope", "task_cancel"]
) -> None:
    # cancel_scope: an anyio cancel scope around the request is cancelled (a task group's
    # cancel, as starlette's streaming responses and TestClient do); task_cancel: the request's
    # task is cancelled natively (uvicorn, when a graceful shutdown times out).
    service: IngestService = served.app.state.ingest
    reached, go, returned = threading.Event(), threading.Event(), threading.Event()
    identify = service.identify

    def held(*args: Any, **kwargs: Any) -> Any:
        reached.set()
        go.wait(30)
        try:
            return identify(*args, **kwargs)
        finally:
            returned.set()

    monkeypatch.setattr(service, "identify", held)
    sent: list[Message] = []
    request = [{"type": "http.request", "body": BODY, "more_body": False}]

    async def receive() -> Message:
        if request:
            return request.pop()
        await asyncio.Event().wait()  # no more messages: the cancellation ends the request
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    async def scenario() -> tuple[bool, int, bool, int]:
        around = anyio.CancelScope()

        async def run_request() -> None:
            with around:
                await served.app(_http_scope(served.token), receive, send)

        task = asyncio.create_task(run_request())
        try:
            assert await asyncio.to_thread(reached.wait, 30)  # on its worker thread, held
            assert _coming(service) == 1  # announced on the event loop
            if cancel == "cancel_scope":
                around.cancel()
            else:
                task.cancel()
            for _ in range(TURNS):
                await asyncio.sleep(0)
            left_early, coming_while_held = task.done(), _coming(service)
        finally:
            go.set()
        cancelled = pytest.raises(asyncio.CancelledError)
        with cancelled if cancel == "task_cancel" else contextlib.nullcontext():
            await task
        return left_early, coming_while_held, returned.is_set(), _coming(service)

    left_early, coming_while_held, use_case_returned, coming_after = asyncio.run(scenario())

    assert not left_early  # the route waited for its call, through TURNS loop turns
    assert coming_while_held == 1  # and did not withdraw the arrival under the running call
    assert use_case_returned
    assert coming_after == 0  # withdrawn (submitted) once the call returned
    # The use case ran to its durable commit: the identifier is in the graph.
    assert served.container.links.resolve(("email", EMAIL)) is not None


REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


def test_a_call_sees_the_context_variables_of_the_task_that_handed_it_over() -> None:
    threads = WorkerThreads()

    async def scenario() -> tuple[str, str]:
        REQUEST_ID.set("req-1")
        seen = await threads.run(REQUEST_ID.get)

        def set_inside() -> None:
            REQUEST_ID.set("changed-on-the-worker")

        await threads.run(set_inside)
        return seen, REQUEST_ID.get()  # a copy: the call's own changes stay its own

    try:
        assert asyncio.run(scenario()) == ("req-1", "req-1")
    finally:
        threads.shutdown()


def test_sixteen_calls_run_at_once_and_an_error_is_raised_to_its_caller() -> None:
    threads = WorkerThreads()
    together = threading.Barrier(16, timeout=30)  # broken unless all 16 wait on it at once

    def meet(n: int) -> int:
        together.wait()
        if n == 7:
            raise LookupError(n)
        return n

    async def scenario() -> list[int | BaseException]:
        return await asyncio.gather(
            *(threads.run(meet, n) for n in range(16)), return_exceptions=True
        )

    try:
        results = asyncio.run(scenario())
    finally:
        threads.shutdown()
    assert [r for r in results if isinstance(r, int)] == [n for n in range(16) if n != 7]
    (error,) = [r for r in results if isinstance(r, BaseException)]
    assert isinstance(error, LookupError)
    assert error.args == (7,)


def test_a_pool_shut_down_starts_again_on_its_next_call() -> None:
    # A test app may serve requests after its lifespan ended (TestClient used again).
    threads = WorkerThreads()
    assert asyncio.run(threads.run(sum, [1, 2])) == 3
    threads.shutdown()
    assert asyncio.run(threads.run(sum, [3, 4])) == 7
    threads.shutdown()
