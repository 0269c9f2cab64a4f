"""Every route of the app is authenticated, or explicitly public: checked route by route.

The routes are read from the app itself, so a route added later (consent, profiles, audiences,
DSR) is checked without touching this file. A route that is neither guarded by
``api.deps.require(scope)`` nor listed in :data:`PUBLIC_ROUTES` fails the suite.
"""

from __future__ import annotations

import uuid
from typing import Any, cast

import fastapi.routing
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.convertors import Convertor, FloatConvertor, IntegerConvertor, UUIDConvertor

from api.edge import required_scopes
from privacy.access.api_keys import Scope
from tests.conftest import Api

# (method, path template) -> why it needs no API key. Add a route here only with a reason.
PUBLIC_ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "liveness probe: orchestrators probe without secrets",
    ("GET", "/livez"): "liveness probe (the Kubernetes name): 200 while the store connects",
    ("GET", "/readyz"): "readiness probe: orchestrators probe without secrets",
    # Served by fastapi-offline as ordinary routes (Swagger UI and ReDoc from vendored assets):
    # public like /openapi.json, which they render.
    ("GET", "/docs"): "the API documentation (Swagger UI), public like /openapi.json",
    ("GET", "/docs/oauth2-redirect"): "Swagger UI's OAuth2 redirect page (static)",
    ("GET", "/redoc"): "the API documentation (ReDoc), public like /openapi.json",
    ("POST", "/v1/webhooks/consent/{source}"): (
        "CMP webhooks carry no API key: each request is authenticated by its Standard Webhooks "
        "signature instead"
    ),
}
# Routes FastAPI itself adds (plain Starlette routes, not APIRoute): the API description only.
FRAMEWORK_ROUTES = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
# Mounted sub-apps, each with its own authentication (or none needed), with the reason.
MOUNTS: dict[str, str] = {
    "/static-offline-docs": "the vendored Swagger UI / ReDoc assets: public static files",
    "/console": (
        "the operator console: its own sessions (operators, not API keys); every page but the "
        "sign-in form needs one (tests/console/test_console.py walks its routes)"
    ),
}
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Bodies that are valid JSON but fail any schema: auth must answer before validation does.
WRONG_BODIES: tuple[Any, ...] = ({}, {"unexpected": [1, 2]}, [])
# Bodies FastAPI cannot parse at all, each with the Content-Type it is sent under: without a key
# the answer is still 401, never the 400/415/422 the body alone would earn.
UNPARSEABLE_BODIES: tuple[tuple[bytes, str | None], ...] = (
    (b'{"identifiers": [', "application/json"),
    (b"\xff\xfe not utf-8", "application/json"),
    (b"[" * 5_000 + b"]" * 5_000, "application/json"),
    (b"a=1&b=2", "application/x-www-form-urlencoded"),
    (b"hello", "text/plain"),
    (b"{", None),
)


def _app(api: Api) -> FastAPI:
    return cast(FastAPI, api.client.app)


def _all_routes(app: FastAPI) -> list[Any]:
    """Every route, included routers expanded, each with its effective path and dependencies.

    Newer FastAPI includes routers lazily (``app.routes`` holds one entry per router) and keeps
    ``include_router(prefix=..., dependencies=...)`` in a route context rather than on the
    ``APIRoute``; ``iter_route_contexts`` yields those contexts. Older FastAPI has flat routes.
    """
    expand = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(expand(app.routes)) if expand is not None else list(app.routes)


def _api_routes(app: FastAPI) -> list[Any]:
    """The FastAPI routes (``APIRoute`` or its context: ``path``, ``methods``, ``dependant``)."""
    return [
        route
        for route in _all_routes(app)
        if isinstance(getattr(route, "original_route", route), APIRoute)
    ]


# The edge guard's own walk: the guard (401/403 before 415) and these checks read one rule.
_needed_scopes = required_scopes


def _sample(convertor: Convertor[Any]) -> str:
    if isinstance(convertor, IntegerConvertor):
        return "1"
    if isinstance(convertor, FloatConvertor):
        return "1.5"
    if isinstance(convertor, UUIDConvertor):
        return str(uuid.UUID(int=1))
    return "x"


def _path(route: Any) -> str:
    """The route's path with a dummy value for each path parameter."""
    values = {name: _sample(conv) for name, conv in route.param_convertors.items()}
    return str(route.path_format.format(**values))


def _calls(route: Any) -> list[tuple[str, str, Any]]:
    """(method, path, json body or None) for every method of the route and every wrong body."""
    calls: list[tuple[str, str, Any]] = []
    for method in sorted(route.methods):
        bodies: tuple[Any, ...] = WRONG_BODIES if method in BODY_METHODS else (None,)
        calls.extend((method, _path(route), body) for body in bodies)
    return calls


def _is_problem(response: Any, status: int) -> bool:
    return bool(
        response.status_code == status
        and response.headers.get("content-type", "").startswith("application/problem+json")
        and response.json().get("status") == status
    )


def test_every_route_is_authenticated_or_explicitly_public(api: Api) -> None:
    app = _app(api)
    unguarded = [
        f"{method} {route.path}"
        for route in _api_routes(app)
        for method in sorted(route.methods)
        if not _needed_scopes(route.dependant) and (method, route.path) not in PUBLIC_ROUTES
    ]
    assert not unguarded, (
        "routes with neither require(scope) nor an entry in PUBLIC_ROUTES: " + ", ".join(unguarded)
    )
    others = [
        getattr(route, "path", repr(route))
        for route in _all_routes(app)
        if not isinstance(getattr(route, "original_route", route), APIRoute)
        and getattr(route, "path", None) not in FRAMEWORK_ROUTES
        and getattr(route, "path", None) not in MOUNTS
    ]
    assert not others, f"routes outside FastAPI's dependency system (no auth check): {others}"


def test_public_allow_list_names_only_existing_routes(api: Api) -> None:
    existing = {(m, r.path) for r in _api_routes(_app(api)) for m in r.methods}
    stale = [f"{method} {path}" for method, path in PUBLIC_ROUTES if (method, path) not in existing]
    assert not stale, f"PUBLIC_ROUTES entries for routes that no longer exist: {stale}"


def test_every_guarded_route_answers_401_without_a_key_before_validating(api: Api) -> None:
    failures = []
    checked = 0
    for route in _api_routes(_app(api)):
        if not _needed_scopes(route.dependant):
            continue
        for method, path, body in _calls(route):
            for headers in ({}, {"Authorization": "Bearer idg_unknown.secret"}):
                response = api.client.request(method, path, json=body, headers=headers)
                checked += 1
                if not _is_problem(response, 401) or response.headers.get("www-authenticate") != (
                    "Bearer"
                ):
                    failures.append(f"{method} {path} {headers} body={body!r}: {response.text}")
    assert checked > 0
    assert not failures, "\n".join(failures)


def test_every_guarded_route_answers_401_without_a_key_to_an_unparseable_body(api: Api) -> None:
    failures = []
    checked = 0
    for route in _api_routes(_app(api)):
        if not _needed_scopes(route.dependant):
            continue
        for method in sorted(route.methods & BODY_METHODS):
            for body, content_type in UNPARSEABLE_BODIES:
                for auth in (None, "Basic dXNlcjpwYXNz", "Bearer", "idg_no_scheme"):
                    headers = {"Content-Type": content_type} if content_type else {}
                    if auth is not None:
                        headers["Authorization"] = auth
                    response = api.client.request(
                        method, _path(route), content=body, headers=headers
                    )
                    checked += 1
                    if not _is_problem(response, 401) or (
                        response.headers.get("www-authenticate") != "Bearer"
                        or response.json()["type"] != "urn:idgraph:problem:unauthenticated"
                    ):
                        failures.append(
                            f"{method} {route.path} {content_type} {auth}: {response.text}"
                        )
    assert checked > 0
    assert not failures, "\n".join(failures)


def test_every_guarded_route_answers_401_to_a_wrong_key_when_the_content_type_is_wrong_too(
    api: Api,
) -> None:
    # Authentication first: a present but wrong key (unknown, malformed, revoked) with a
    # non-JSON body used to get the 415, which told an unauthenticated caller what the route
    # takes. A valid key still gets the 415 (the next test).
    key, revoked = api.container.api_keys.create("revoked", frozenset({Scope.ADMIN}))
    assert api.container.api_keys.revoke(key.key_id)
    failures = []
    checked = 0
    for route in _api_routes(_app(api)):
        if route.body_field is None or not _needed_scopes(route.dependant):
            continue
        for method in sorted(route.methods):
            for token in ("idg_unknown.secret", "not-a-key", revoked):
                for content_type in ("text/plain", "application/x-www-form-urlencoded"):
                    response = api.client.request(
                        method,
                        _path(route),
                        content=b"{}",
                        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
                    )
                    checked += 1
                    if not _is_problem(response, 401) or (
                        response.headers.get("www-authenticate") != "Bearer"
                        or response.json()["type"] != "urn:idgraph:problem:unauthenticated"
                    ):
                        failures.append(f"{method} {route.path} {content_type}: {response.text}")
    assert checked >= 30
    assert not failures, "\n".join(failures)


def test_every_guarded_route_answers_403_to_a_key_without_its_scope_when_the_content_type_is_wrong(
    api: Api,
) -> None:
    # Authorization before input checks, as authentication is: a valid key without the route's
    # scope and a non-JSON body used to get the 415 (which told a caller who may not use the
    # route what it takes); it gets the 403 the route gives with a JSON body.
    failures = []
    checked = 0
    for route in _api_routes(_app(api)):
        needed = _needed_scopes(route.dependant)
        if route.body_field is None or not needed:
            continue
        others = frozenset(Scope) - needed - {Scope.ADMIN}
        _, token = api.container.api_keys.create("route-auth-415", others)
        for method in sorted(route.methods):
            for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
                headers = {"Authorization": f"Bearer {token}"}
                if content_type is not None:
                    headers["Content-Type"] = content_type
                response = api.client.request(method, _path(route), content=b"{}", headers=headers)
                checked += 1
                if not _is_problem(response, 403) or (
                    response.json()["type"] != "urn:idgraph:problem:forbidden"
                ):
                    failures.append(f"{method} {route.path} {content_type}: {response.text}")
    assert checked >= 15
    assert not failures, "\n".join(failures)


def test_every_json_body_route_answers_415_to_a_non_json_body_and_documents_it(api: Api) -> None:
    operations = api.client.get("/openapi.json").json()["paths"]
    checked = 0
    for route in _api_routes(_app(api)):
        if route.body_field is None:
            continue
        for method in sorted(route.methods):
            documented = operations[route.path][method.lower()]["responses"]
            assert "415" in documented, f"{method} {route.path} does not document 415"
            response = api.client.request(
                method,
                _path(route),
                content=b"{}",
                headers={**api.admin, "Content-Type": "text/plain"},
            )
            checked += 1
            assert _is_problem(response, 415), f"{method} {route.path}: {response.text}"
    assert checked >= 5


def test_every_guarded_route_answers_403_to_a_key_without_its_scopes(api: Api) -> None:
    failures = []
    for route in _api_routes(_app(api)):
        needed = _needed_scopes(route.dependant)
        if not needed:
            continue
        # Every other scope, but never admin: admin implies them all.
        others = frozenset(Scope) - needed - {Scope.ADMIN}
        assert others, f"{route.path} needs every scope; cannot build a key without them"
        _, token = api.container.api_keys.create("route-auth-test", others)
        for method, path, body in _calls(route):
            response = api.client.request(
                method, path, json=body, headers={"Authorization": f"Bearer {token}"}
            )
            if not _is_problem(response, 403):
                failures.append(f"{method} {path} with {sorted(others)}: {response.text}")
    assert not failures, "\n".join(failures)


def test_every_body_route_refuses_an_oversized_body_with_413_for_a_valid_key(api: Api) -> None:
    limit = api.container.settings.max_body_bytes
    oversized = b'{"pad": "' + b"a" * limit + b'"}'
    checked = 0
    for route in _api_routes(_app(api)):
        for method in sorted(route.methods & BODY_METHODS):
            response = api.client.request(
                method,
                _path(route),
                content=oversized,
                headers={**api.admin, "Content-Type": "application/json"},
            )
            checked += 1
            assert _is_problem(response, 413), f"{method} {route.path}: {response.text}"
    assert checked > 0
