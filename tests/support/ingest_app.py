"""The real app on a temp store with API keys of several kinds, for the ``/v1/ingest`` tests.

``tests/api/test_ingest_fast_path.py`` and ``tests/api/test_ingest_certified.py`` both compare
the route's fast path with FastAPI's handler over HTTP; they open the app the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from bootstrap.container import Container, build_container
from privacy.access.api_keys import Scope
from tests.support.containers import service_settings


@dataclass(frozen=True, slots=True)
class IngestApp:
    """A served app: its client, its container and request headers by key kind: ``ingest``
    (scope ``ingest``), ``resolve`` (no ``ingest`` scope: 403), ``unknown`` (no such key: 401)
    and ``basic`` (not a bearer key: 401)."""

    client: TestClient
    container: Container
    keys: dict[str, dict[str, str]]


@contextmanager
def served_ingest_app(
    work: Path, *, max_batch_events: int, rate_limit: int = 0, burst: int = 10
) -> Iterator[IngestApp]:
    """The real app (container on ``work``, no PII scan, region GB) and its keys; closed after."""
    container = build_container(
        service_settings(
            work / "data",
            max_batch_events=max_batch_events,
            pii_scan=False,
            rate_limit_per_minute=rate_limit,
            rate_limit_burst=burst,
        )
    )
    try:
        keys = {}
        for name, scopes in (("ingest", {Scope.INGEST}), ("resolve", {Scope.RESOLVE})):
            _, token = container.api_keys.create(name, frozenset(scopes))
            keys[name] = {"Authorization": f"Bearer {token}"}
        keys["unknown"] = {"Authorization": "Bearer idg_not-a-key-that-exists"}
        keys["basic"] = {"Authorization": "Basic dXNlcjpwYXNz"}
        with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
            yield IngestApp(client, container, keys)
    finally:
        container.close()
