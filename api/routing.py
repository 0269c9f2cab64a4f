"""Routes whose JSON body is decoded once.

:class:`api.middleware.ApiMiddleware` decodes every JSON body with the strict reader
(:func:`identity.strict_json.loads_strict`) before any route runs, to refuse duplicate keys and
hostile nesting. FastAPI then decoded the same bytes again (``Request.json``) to validate them
against the route's model: two decodes of every body, 5 % of the server's CPU for a 50-event
``/v1/ingest`` batch. The middleware keeps the document it decoded in the request's state, and
the routes of :class:`DecodedJsonRoute` (FastAPI's documented custom ``route_class``) read it
from there. A body the middleware did not decode (not JSON by its ``Content-Type``, or not valid
JSON: FastAPI answers that one) is decoded by FastAPI as before.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

# The key of the decoded document in ``scope["state"]`` (request.state); set only by the
# middleware, for the exact bytes it hands on to the app.
DECODED_JSON = "idgraph_decoded_json"


class DecodedJsonRequest(Request):
    """A request whose :meth:`json` is the document the middleware decoded, if it did."""

    async def json(self) -> Any:
        """The body's JSON document (decoded once per request)."""
        state = self.scope.get("state") or {}
        if DECODED_JSON in state:
            return state[DECODED_JSON]
        return await super().json()


class DecodedJsonRoute(APIRoute):
    """An API route that validates the document the middleware already decoded."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, given a :class:`DecodedJsonRequest`."""
        handler = super().get_route_handler()

        async def decoded_json_handler(request: Request) -> Response:
            return await handler(DecodedJsonRequest(request.scope, request.receive))

        return decoded_json_handler
