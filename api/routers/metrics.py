"""Prometheus scrape endpoint (scope `metrics`, or `admin`)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import AppMetrics, MetricsKey
from api.metrics import CONTENT_TYPE
from api.problems import PROBLEM_JSON

router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"description": "Prometheus text format", "content": {CONTENT_TYPE: {}}},
        401: {"description": "Missing or unknown API key", "content": {PROBLEM_JSON: {}}},
        403: {"description": "API key lacks the scope", "content": {PROBLEM_JSON: {}}},
        429: {"description": "API key over its rate", "content": {PROBLEM_JSON: {}}},
    },
)
def metrics(metrics: AppMetrics, _: MetricsKey) -> Response:
    """This process's metrics in the Prometheus text format. Labels never hold identifiers,
    person ids or key ids: only route templates, statuses and other fixed sets."""
    return Response(metrics.exposition(), media_type=CONTENT_TYPE)
