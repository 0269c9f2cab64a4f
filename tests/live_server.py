"""The real app served by uvicorn on a free local port, in a thread of the test process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from api.app import create_app
from bootstrap.container import Container
from tests.support.crash_harness import free_port


@contextmanager
def serve(container: Container) -> Iterator[str]:
    """Serve ``create_app(container=container)``; yields the base URL, stops on exit."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(container=container),
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
