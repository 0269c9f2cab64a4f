"""The edge guard: refuse a request by its headers before the body is read or parsed.

FastAPI reads and parses a JSON body before any dependency runs, so without this a request with
no key and a broken body got 400, and one with a form or text body got 422: the answer to a
caller who sent no credentials depended on what they sent. Here, for the route a request would
reach, the guard answers

- 401 (the same problem as :class:`privacy.access.api_keys.AuthenticationError`) when the route
  needs an API key and there is no ``Authorization: Bearer ...`` header. A present key is still
  checked by the route's ``require(scope)`` dependency;
- 415 when the route takes a JSON body (a model, or the raw bytes of a signed webhook) and the
  ``Content-Type`` is not JSON; for a route that needs a key, only once the key is known to be
  valid and to hold the route's scope: a present but wrong key gets the 401 first
  (authentication before anything else), and a valid key without the scope gets the 403 the
  route would give (authorization before input checks: the 415 would tell a caller who may not
  use the route what it takes). These checks run only on the way to a 415; they consume no
  rate-limit token (the request never reaches the route).

Which routes need a key and which take JSON is read from the routes themselves when the app is
built: a route needs a key when ``require(scope)`` is in its dependency tree, exactly what
``tests/api/test_route_auth.py`` checks, so the guard and the per-route check cannot disagree.
Public
routes (probes, the signed consent webhook, the API docs) have no ``require`` and pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import fastapi.routing
from fastapi import FastAPI, params
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

from api.deps import MISSING_KEY, ScopeCheck, get_raw_body
from api.problems import handle_idgraph_error, problem
from privacy.access.api_keys import AuthenticationError, ForbiddenError
from privacy.access.api_keys import Scope as KeyScope

JSON_MEDIA_TYPE = "application/json"


@dataclass(frozen=True)
class GuardedRoute:
    """What the guard needs to know of one route, decided once at app build."""

    route: Any  # an APIRoute, or a RouteContext of one (newer FastAPI includes routers lazily)
    needs_key: bool
    json_body: bool
    body_required: bool
    # The scope of every require(scope) in the route's tree (a key needs all of them).
    scopes: frozenset[KeyScope] = frozenset()


def required_scopes(dependant: Dependant) -> frozenset[KeyScope]:
    """The scope of every ``require(scope)`` anywhere in the dependency tree of a route."""
    found: set[KeyScope] = set()
    for sub in dependant.dependencies:
        if isinstance(sub.call, ScopeCheck):
            found.add(sub.call.scope)
        found |= required_scopes(sub)
    return frozenset(found)


def reads_raw_body(dependant: Dependant) -> bool:
    """Whether a route depends on :func:`api.deps.get_raw_body`."""
    return any(sub.call is get_raw_body or reads_raw_body(sub) for sub in dependant.dependencies)


def guarded_routes(app: FastAPI) -> list[GuardedRoute]:
    """The app's FastAPI routes, included routers expanded, in matching order."""
    expand = getattr(fastapi.routing, "iter_route_contexts", None)
    routes = list(expand(app.router.routes)) if expand is not None else list(app.router.routes)
    guarded = []
    route: Any
    for route in routes:
        if not isinstance(getattr(route, "original_route", route), APIRoute):
            continue  # the docs and /openapi.json: public, and no body
        body = route.body_field
        model_body = body is not None and not isinstance(body.field_info, params.Form)
        # A route that reads the raw bytes and no model (the signed consent webhook) takes a
        # JSON body too: its signature is over JSON, and a text/plain body is refused with 415.
        raw_only = body is None and reads_raw_body(route.dependant)
        # A route needs a key when require(scope) is anywhere in its dependency tree.
        scopes = required_scopes(route.dependant)
        guarded.append(
            GuardedRoute(
                route=route,
                needs_key=bool(scopes),
                json_body=model_body or raw_only,
                body_required=raw_only or (model_body and body.field_info.is_required()),
                scopes=scopes,
            )
        )
    return guarded


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or ``application/*+json``, with any parameters (``charset``)."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == JSON_MEDIA_TYPE or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


class EdgeGuard:
    """Answer 401 (no bearer key) and 415 (not JSON) before the route reads the body.

    Called by :class:`api.middleware.ApiMiddleware` with the request's headers, which it has
    already read into a dict for its own checks.
    """

    def __init__(self, routes: list[GuardedRoute]) -> None:
        self.routes = routes

    def _match(self, scope: Scope) -> GuardedRoute | None:
        for guarded in self.routes:
            match, _ = guarded.route.matches(scope)
            if match is Match.FULL:
                return guarded
            # A partial match (path right, method wrong) is the router's 405, first match wins.
            if match is Match.PARTIAL:
                return None
        return None

    async def refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> Response | None:
        """The 401 or 415 for this request, or ``None`` when the route may take it.

        A refused request's scope names its route, as the router would have: the log line
        and the metrics count it under the route template.
        """
        guarded = self._match(scope)
        if guarded is None:
            return None
        refusal: Response | None = None
        authorization = headers.get(b"authorization", b"")
        if guarded.needs_key and not _has_bearer(authorization):
            # The dependency's own handler renders it: body and headers are the same as its 401.
            refusal = await handle_idgraph_error(Request(scope), AuthenticationError(MISSING_KEY))
        elif guarded.json_body and _wrong_media_type(
            headers.get(b"content-type"), headers, guarded.body_required
        ):
            # Authentication and authorization come first: a present but wrong key gets the 401
            # the route would give, a valid key without the route's scope its 403, not a 415
            # that tells a caller who may not use the route what it takes. Checked only here,
            # on the way to a refusal; a request that passes is checked by the route's
            # require(scope) as before (no second key lookup on the common path).
            if guarded.needs_key:
                refusal = await _unauthorized(scope, authorization, guarded.scopes)
            if refusal is None:
                refusal = problem(
                    Request(scope),
                    415,
                    "Unsupported media type",
                    f"the request body must be JSON: `Content-Type: {JSON_MEDIA_TYPE}`",
                    "unsupported-media-type",
                )
        if refusal is not None:
            scope["route"] = getattr(guarded.route, "original_route", guarded.route)
        return refusal


async def _unauthorized(
    scope: Scope, authorization: bytes, needed: frozenset[KeyScope]
) -> Response | None:
    """The 401 for a bearer key the key store does not know (or revoked), the 403 for a valid
    key that lacks one of the ``needed`` scopes (as :class:`api.deps.ScopeCheck` answers),
    else ``None``."""
    token = authorization.decode("latin-1").strip().partition(" ")[2].strip()
    try:
        key = scope["app"].state.container.api_keys.authenticate(token)
    except AuthenticationError as exc:
        return await handle_idgraph_error(Request(scope), exc)
    # Sorted: the same scope is named every time when a route needs more than one.
    for needed_scope in sorted(needed, key=lambda s: s.value):
        if not key.allows(needed_scope):
            return await handle_idgraph_error(Request(scope), ForbiddenError(needed_scope))
    return None


def _has_bearer(authorization: bytes) -> bool:
    scheme, _, credentials = authorization.decode("latin-1").strip().partition(" ")
    return scheme.lower() == "bearer" and bool(credentials.strip())


def _wrong_media_type(
    content_type: bytes | None, headers: dict[bytes, bytes], body_required: bool
) -> bool:
    if content_type is not None:
        return not is_json_media_type(content_type.decode("latin-1"))
    # No Content-Type: refused when a body is required or one was sent. An optional body may be
    # left out entirely (an empty POST carries no Content-Type).
    sent = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers
    return body_required or sent
