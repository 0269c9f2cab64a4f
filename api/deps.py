"""FastAPI dependencies: the container's collaborators and API-key scope checks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.metrics import Metrics
from api.ratelimit import RateLimitedError, RateLimiter
from bootstrap.container import Container
from bootstrap.settings import Settings
from identity.group_commit import Arrival
from identity.resolution import ResolutionEngine
from privacy.access.api_keys import ApiKey, AuthenticationError, ForbiddenError, Scope
from privacy.scanning.facts import FactIntake
from services.async_ingest import AsyncIngest
from services.ingest import IngestService
from services.links import LinkService
from services.metrics import ApplierStart

MISSING_KEY = "an API key is required: `Authorization: Bearer <key>`"
_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer idg_...`")


async def get_container(request: Request) -> Container:
    """The container built at startup.

    The accessors below are ``async`` on purpose: they only read an attribute, and FastAPI runs
    every plain ``def`` dependency in its thread pool. A hop there and back per dependency (a
    queue, a thread wake-up and a GIL hand-over each way) was 13 % of the server's CPU under
    16 concurrent identify calls, more than the use case itself. The API-key check is async
    too (see :class:`ScopeCheck`).
    """
    container: Container = request.app.state.container
    return container


async def get_engine(container: Annotated[Container, Depends(get_container)]) -> ResolutionEngine:
    """The resolution engine."""
    return container.engine


async def get_facts(container: Annotated[Container, Depends(get_container)]) -> FactIntake:
    """The fact intake (policy + PII scanner)."""
    return container.facts


async def get_settings(container: Annotated[Container, Depends(get_container)]) -> Settings:
    """The settings."""
    return container.settings


async def get_ingest(request: Request) -> IngestService:
    """The app's ingest use case (reporting to the app's metrics)."""
    service: IngestService = request.app.state.ingest
    return service


async def get_async_ingest(request: Request) -> AsyncIngest | None:
    """The app's asynchronous ingest (``Prefer: respond-async``), or ``None`` (Neo4j store)."""
    service: AsyncIngest | None = request.app.state.async_ingest
    return service


async def get_links(request: Request) -> LinkService:
    """The app's resolve/explain/unlink use case (reporting to the app's metrics)."""
    service: LinkService = request.app.state.links
    return service


async def get_applier_start(request: Request) -> ApplierStart | None:
    """What ``/readyz`` waits for besides the store, if anything (wired by
    :func:`bootstrap.container.applier_start`)."""
    start: ApplierStart | None = request.app.state.applier_start
    return start


def get_metrics(request: Request) -> Metrics:
    """The app's metrics (its own Prometheus registry)."""
    metrics: Metrics = request.app.state.metrics
    return metrics


def get_rate_limiter(request: Request) -> RateLimiter:
    """The app's per-key rate limiter."""
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


class ScopeCheck:
    """The dependency :func:`require` returns: authenticate, rate-limit, check the scope.

    ``scope`` is public so that tests (``tests/api/test_route_auth.py``) can find, for every route,
    which scope it needs by walking ``route.dependant.dependencies``.
    """

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiKey:
        """Answer 401 without a valid key, 429 over its rate, 403 without the scope.

        On the event loop, not in the thread pool: the check is a SHA-256 and a constant-time
        compare with a key verified in the last second (``ApiKeyStore.authenticate``), else one
        primary-key read of the small control database (WAL: a reader never waits for a
        writer), about 30 us, while the hop to a worker thread and back cost more than that in
        wake-ups and GIL hand-overs on every authenticated request (py-spy, 16 concurrent
        identify calls: the pool's queue notify alone was 17 % of the server's CPU with three
        hops a request).
        """
        if credentials is None:
            raise AuthenticationError(MISSING_KEY)
        container: Container = request.app.state.container
        key = container.api_keys.authenticate(credentials.credentials)
        request.state.api_key_id = key.key_id
        # Before the scope check, so a key hammering endpoints it may not use is throttled too.
        try:
            get_rate_limiter(request).acquire(key.key_id)
        except RateLimitedError:
            get_metrics(request).rate_limited.inc()
            raise
        if not key.allows(self.scope):
            raise ForbiddenError(self.scope)
        return key


async def get_raw_body(request: Request) -> bytes:
    """The raw request body, exactly as received (signatures and proofs are over these bytes).

    Async so that the body is read on the event loop; FastAPI caches it, so a JSON body parameter
    of the same route reads the same bytes.
    """
    return await request.body()


async def announce_batch(request: Request) -> AsyncIterator[Arrival]:
    """The arrival of a ``POST /v1/ingest`` batch, announced to the ingest use case as soon as
    the request is authenticated, before its body is validated (on the event loop) and before a
    worker thread takes it (``IngestService.announce_batch``): a batch writer then waits for it
    and concurrent batches share one transaction. Announced only from the worker thread, HTTP
    batches were written about two at a time (188-198 transactions for 400 batches on 4
    connections; 162-172 announced here, bench/README.md).
    Ended when the use case takes the batch, or here if the request fails before that (a body
    that does not validate), so no writer waits for a request that will not come.
    """
    service: IngestService = request.app.state.ingest
    arrival = service.announce_batch()
    try:
        yield arrival
    finally:
        arrival.withdraw()


def require(scope: Scope) -> ScopeCheck:
    """A dependency that authenticates the bearer key, applies its rate limit and checks it has
    ``scope``. Every authenticated endpoint depends on one (``tests/api/test_route_auth.py``)."""
    return ScopeCheck(scope)


Engine = Annotated[ResolutionEngine, Depends(get_engine)]
Facts = Annotated[FactIntake, Depends(get_facts)]
AppSettings = Annotated[Settings, Depends(get_settings)]
AppMetrics = Annotated[Metrics, Depends(get_metrics)]
IngestKey = Annotated[ApiKey, Depends(require(Scope.INGEST))]
ResolveKey = Annotated[ApiKey, Depends(require(Scope.RESOLVE))]
AdminKey = Annotated[ApiKey, Depends(require(Scope.ADMIN))]
MetricsKey = Annotated[ApiKey, Depends(require(Scope.METRICS))]
ConsentKey = Annotated[ApiKey, Depends(require(Scope.CONSENT))]
Ingest = Annotated[IngestService, Depends(get_ingest)]
AsyncIngestJobs = Annotated[AsyncIngest | None, Depends(get_async_ingest)]
Links = Annotated[LinkService, Depends(get_links)]
AppContainer = Annotated[Container, Depends(get_container)]
AppApplierStart = Annotated[ApplierStart | None, Depends(get_applier_start)]
RawBody = Annotated[bytes, Depends(get_raw_body)]
BatchArrival = Annotated[Arrival, Depends(announce_batch)]
