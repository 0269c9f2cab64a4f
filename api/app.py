"""The FastAPI application."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import structlog
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from api import openapi, problems
from api.background import background_jobs
from api.collector import BATCHES
from api.edge import guarded_routes
from api.metrics import Metrics
from api.middleware import ApiMiddleware
from api.ratelimit import RateLimiter
from api.routers import consent, dsr, health, identity, links, reads
from api.routers import metrics as metrics_router
from bootstrap.container import Container, applier_start, build_container
from bootstrap.settings import Settings
from console import ConsoleConfig, ConsoleServices, create_console
from services.async_ingest import JournalApplier
from services.lookup import PersonLookup
from services.metrics import TallyFile
from services.operations import IngestFigures, OperationsDashboard
from services.quarantine import QuarantineReview

log = structlog.get_logger("idgraph.api")

DESCRIPTION = """
Privacy-first identity graph. Identifiers are normalized and stored only as keyed hashes;
every error is RFC 9457 `application/problem+json`. Authenticate with
`Authorization: Bearer <API key>`; each endpoint names the scope it needs.
"""


def serve_app() -> FastAPI:
    """The app ``idgraph serve`` runs (its ASGI factory): the store connects in the background,
    so ``/livez`` answers at once and ``/readyz`` says 503 (with the reason) until it is
    connected. What is alive once the app is built is frozen (:func:`freeze_built_app`)."""
    app = create_app(container=build_container(Settings(), store_in_background=True), owned=True)
    freeze_built_app()
    return app


def freeze_built_app() -> None:
    """Move what is alive now out of the cyclic collector's reach (``gc.freeze``).

    The container froze the start-up objects once its PII scanner was built
    (``bootstrap.validation.build_scanner``); the app built after it (routes, models, schemas,
    the OpenAPI document's) would otherwise be walked again by every full collection while the
    server runs. They live as long as the process. (The young threshold is raised only while
    ``/v1/ingest`` batches are handled: :mod:`api.collector`.)
    """
    gc.collect()  # what is garbage now is collected, not frozen
    gc.freeze()


def create_app(
    settings: Settings | None = None, container: Container | None = None, *, owned: bool = False
) -> FastAPI:
    """Build the app. Pass ``container`` to reuse collaborators (tests)."""
    settings = settings or (container.settings if container else Settings())
    owned = owned or container is None
    built = container or build_container(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log_webhook_sources(built)
        # The ingest journal's applier (Prefer: respond-async): drains what a previous process
        # left queued, then what this one queues; stopped before the container closes.
        jobs = app.state.async_ingest
        # With IDGRAPH_INGEST_APPLIER=process another process applies it (`idgraph serve`
        # starts one): this one only accepts and answers job reads.
        applier = (
            JournalApplier(jobs, around_apply=BATCHES.applying)
            if jobs is not None and settings.ingest_applier != "process"
            else None
        )
        if applier is not None:
            applier.start()
        try:
            async with background_jobs(built, metrics):  # the DSR worker, the retention schedule
                yield
        finally:
            if applier is not None:
                applier.stop()
        if owned:
            built.close()

    # Swagger UI and ReDoc from assets shipped in the fastapi-offline package, never a CDN:
    # the docs work offline and tell no third party who reads them.
    app = FastAPIOffline(
        title="idgraph",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # No "valid" badge fetched from the public Swagger validator.
        swagger_ui_parameters={"validatorUrl": None},
        # Named operationIds (`identify`, `recordConsent`): what generated clients call.
        generate_unique_id_function=openapi.operation_id,
    )
    app.state.container = built
    built.reads  # noqa: B018 - build the read service (and its audience store) at start-up
    built.dsr  # noqa: B018 - open the DSR store at start-up: bad DSR settings fail here
    # Per app, not per process: tests build many apps, and each counts and limits on its own.
    # An applier process's counts (IDGRAPH_INGEST_APPLIER_TALLY_FILE) are added to this app's.
    tally_file = settings.ingest_applier_tally_file
    metrics = Metrics(TallyFile(tally_file).read if tally_file is not None else None)
    app.state.metrics = metrics
    app.state.applier_start = applier_start(settings)  # what /readyz waits for
    metrics.declare_purposes(built.purposes.ids)
    built.reads.on_decision = metrics.record_policy_decision
    app.state.ingest = built.ingest.with_metrics(metrics)
    # Asynchronous batches are applied through the app's ingest copy: its metrics count them.
    jobs = built.async_ingest
    app.state.async_ingest = jobs.with_ingest(app.state.ingest) if jobs is not None else None
    app.state.links = built.links.with_metrics(metrics)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst)
    problems.install(app)
    app.include_router(health.router)
    app.include_router(identity.router)
    app.include_router(links.router)
    app.include_router(consent.router)
    app.include_router(reads.router)
    app.include_router(dsr.router)
    app.include_router(metrics_router.router)
    openapi.install(app)
    if settings.console_enabled:
        app.mount(
            "/console", create_console(console_services(built, metrics), console_config(settings))
        )
    # One layer (api.middleware): request ids wrap everything, so even a 413 from the body
    # limit is logged with its id and counted; the edge guard answers before the body is
    # read: no key is a 401 and a non-JSON body a 415, whatever the body holds.
    app.add_middleware(
        ApiMiddleware,
        metrics=metrics,
        routes=guarded_routes(app),
        max_bytes=settings.max_body_bytes,
        docs_paths=frozenset({"/docs", "/redoc"}),
    )
    return app


def log_webhook_sources(container: Container) -> None:
    """One start-up line naming the consent-webhook sources this process accepts.

    Sources and secrets are read once at start-up: a change needs a restart, and a delivery to a
    source that is not listed here is refused with 401 ``no_valid_signature``.
    """
    webhooks = container.webhooks
    log.info(
        "consent_webhook_sources",
        sources=list(webhooks.sources) or "none (IDGRAPH_WEBHOOK_SOURCES is empty)",
        without_secret=list(webhooks.sources_without_secret) or "none",
        note="read at start-up; restart after changing IDGRAPH_WEBHOOK_SOURCES/SECRETS",
    )


def console_config(settings: Settings) -> ConsoleConfig:
    """How the console serves (cookie flags)."""
    return ConsoleConfig(secure_cookies=settings.console_cookies_secure)


def console_services(container: Container, metrics: Metrics) -> ConsoleServices:
    """The console's use cases, from the container: the same objects the API routes call."""
    started = datetime.now(UTC)

    def ingest() -> IngestFigures:
        # Both from one read of the applier's tally file (if any): one per dashboard render.
        events, refusals = metrics.totals(
            (metrics.ingest_events, "outcome"), (metrics.refused_identifiers, "reason")
        )
        return IngestFigures(started, events, refusals)

    settings = container.settings
    return ConsoleServices(
        access=container.operators,
        lookup=PersonLookup(
            container.store,
            container.engine,
            container.identity_policy,
            container.policy,
            container.audit,
            container.vault,
            settings.default_region,
        ),
        quarantine=QuarantineReview(container.store, container.vault, container.audit),
        reads=container.reads,
        dsr=container.dsr,
        audit=container.audit,
        dashboard=OperationsDashboard(container.store, container.dsr, container.audit, ingest),
        purposes=container.purposes.ids,
        regulations=tuple(sorted(container.dsr.config.deadlines)),
        default_region=settings.default_region,
    )
