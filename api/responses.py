"""A response that is its model's JSON, serialized once, by pydantic's Rust serializer.

A route that returns a model lets FastAPI validate it against ``response_model`` and serialize it
(``serialize_response``); for a plain ``def`` route FastAPI runs that step in its thread pool, a
second hop to a worker thread and back after the endpoint's own. The hot routes (identify,
ingest, resolve) build their response model themselves, so there is nothing left to check:
they return :class:`ModelResponse` and keep ``response_model`` in their decorator for the
OpenAPI document only. The bytes are those FastAPI would have sent (``by_alias``, and
``exclude_none`` where the route declared ``response_model_exclude_none``).
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel
from starlette.responses import Response


class ModelResponse(Response):
    """``application/json``: ``model`` dumped by its own serializer."""

    media_type = "application/json"

    def __init__(
        self,
        model: BaseModel,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        *,
        exclude_none: bool = False,
    ) -> None:
        body = model.__pydantic_serializer__.to_json(
            model, by_alias=True, exclude_none=exclude_none
        )
        super().__init__(body, status_code, headers)
