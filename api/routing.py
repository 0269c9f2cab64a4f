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

import inspect
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

# The key of the decoded document in ``scope["state"]`` (request.state); set only by the
# middleware, for the exact bytes it hands on to the app.
DECODED_JSON = "idgraph_decoded_json"

Certified = TypeVar("Certified")
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
_FAST_PATH = "__idgraph_fast_path__"


@dataclass(frozen=True, slots=True)
class FastPath(Generic[Certified]):
    """A route's fast path (see :func:`fast_path`): ``certify`` judges the request without any
    effect (``None``: FastAPI's handler takes it), ``answer`` answers a certified request given
    the values of the route's dependencies, by the endpoint's parameter names."""

    certify: Callable[[Request], Certified | None]
    answer: Callable[[Request, Certified, Mapping[str, Any]], Awaitable[Response]]


def fast_path(
    certify: Callable[[Request], Certified | None],
    answer: Callable[[Request, Certified, Mapping[str, Any]], Awaitable[Response]],
) -> Callable[[Endpoint], Endpoint]:
    """Give a :class:`DecodedJsonRoute` endpoint a fast path, tried before FastAPI's handler.

    For a route whose requests are nearly all in one plain shape (``POST /v1/ingest``), FastAPI's
    per-request machinery (dependency solving with its exit stacks and sub-dependency cache, body
    validation through the route's model field, the content type parsed again by the ``email``
    package) is a measurable share of the server's CPU. ``certify`` judges the request *before
    anything with an effect happens* and returns ``None`` for every request it cannot vouch for:
    FastAPI then handles that request as if there were no fast path, so a refused request gets
    FastAPI's own answer, word for word. For a certified request the route's dependencies run
    directly, derived from the route's own signature (:func:`_direct_dependencies`: the same
    dependencies, sub-dependencies first, in FastAPI's order, and what they raise raised), and
    ``answer`` gets their values by the endpoint's parameter names. So the route's signature is
    the one place its dependencies are stated: a dependency added there runs on both paths, and
    one the fast path cannot run directly stops the app at startup. ``answer`` must answer
    exactly as the endpoint would (``tests/api/test_ingest_fast_path.py`` compares the two over
    HTTP). With dependency overrides set on the app (tests), FastAPI's handler answers every
    request. Apply it below the router's decorator, so the route sees the attribute when it is
    built.
    """

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, _FAST_PATH, FastPath(certify, answer))
        return endpoint

    return mark


class FastPathDependencyError(TypeError):
    """A route with a fast path depends on something the fast path cannot run directly."""


@dataclass(frozen=True, slots=True)
class _Direct:
    """One dependency of a fast-path route, run without FastAPI's solver."""

    name: str  # the parameter it fills in its dependent
    call: Callable[..., Any]
    connection: tuple[str, ...]  # its parameters that take the request
    needs: tuple[_Direct, ...]  # its own dependencies, in their order
    use_cache: bool  # ``Depends(use_cache=...)``: one call per request unless False
    # A ``yield`` dependency, as FastAPI runs one: ``asynccontextmanager(call)`` entered on the
    # request's exit stack (resumed after the answer, or the error thrown into it).
    context: Callable[..., AbstractAsyncContextManager[Any]] | None


def _direct_dependencies(dependant: Dependant, where: str) -> tuple[_Direct, ...]:
    """The route's dependencies as :class:`_Direct` steps, or :class:`FastPathDependencyError`
    for one that needs FastAPI's solver: a plain ``def`` (FastAPI runs it on a worker thread),
    or a parameter other than the request and its own dependencies (query, header, cookie,
    path or body values that FastAPI would validate)."""
    steps = []
    for dep in dependant.dependencies:
        call = dep.call
        if call is None or dep.name is None:
            raise FastPathDependencyError(f"{where}: a dependency without a callable")
        # A callable instance (a ScopeCheck) is judged by its __call__ method.
        target = call if inspect.isroutine(call) else type(call).__call__
        generator = inspect.isasyncgenfunction(target)
        if not (generator or inspect.iscoroutinefunction(target)):
            raise FastPathDependencyError(
                f"{where}: dependency {dep.name!r} ({call!r}) is not async; the fast path runs "
                "dependencies on the event loop only"
            )
        values = (
            dep.path_params
            or dep.query_params
            or dep.header_params
            or dep.cookie_params
            or dep.body_params
        )
        others = (
            dep.websocket_param_name,
            dep.response_param_name,
            dep.background_tasks_param_name,
            dep.security_scopes_param_name,
        )
        if values or any(others) or dep.own_oauth_scopes:
            raise FastPathDependencyError(
                f"{where}: dependency {dep.name!r} takes request values or security scopes that "
                "FastAPI's solver handles; the fast path passes only the request and dependencies"
            )
        connection = tuple(
            n for n in (dep.request_param_name, dep.http_connection_param_name) if n is not None
        )
        context = asynccontextmanager(call) if generator else None
        needs = _direct_dependencies(dep, where)
        steps.append(_Direct(dep.name, call, connection, needs, dep.use_cache, context))
    return tuple(steps)


async def _solve(
    steps: tuple[_Direct, ...],
    request: Request,
    stack: AsyncExitStack,
    cache: dict[Callable[..., Any], Any],
) -> dict[str, Any]:
    """The values of ``steps`` by parameter name, as FastAPI's solver gives them: each
    dependency's own first, one call per callable per request (FastAPI's ``use_cache``)."""
    values: dict[str, Any] = {}
    for step in steps:
        if step.use_cache and step.call in cache:
            values[step.name] = cache[step.call]
            continue
        kwargs = await _solve(step.needs, request, stack, cache) if step.needs else {}
        for name in step.connection:
            kwargs[name] = request
        if step.context is not None:
            value = await stack.enter_async_context(step.context(**kwargs))
        else:
            value = await step.call(**kwargs)
        cache[step.call] = values[step.name] = value
    return values


def decoded_json(request: Request) -> Any | None:
    """The document the middleware decoded from this request's body, or ``None``."""
    state = request.scope.get("state") or {}
    return state.get(DECODED_JSON)


def forget_decoded_json(request: Request) -> None:
    """Drop the decoded document from the request's state (a handler that turned it into its
    own values no longer needs it: freed now, not when the response has gone out)."""
    state = request.scope.get("state") or {}
    state.pop(DECODED_JSON, None)


class DecodedJsonRequest(Request):
    """A request whose :meth:`json` is the document the middleware decoded, if it did."""

    async def json(self) -> Any:
        """The body's JSON document (decoded once per request)."""
        state = self.scope.get("state") or {}
        if DECODED_JSON in state:
            return state[DECODED_JSON]
        return await super().json()


class DecodedJsonRoute(APIRoute):
    """An API route that validates the document the middleware already decoded (and tries its
    endpoint's :func:`fast_path` first, if it has one)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, given a :class:`DecodedJsonRequest`."""
        handler = super().get_route_handler()
        fast: FastPath[Any] | None = getattr(self.endpoint, _FAST_PATH, None)

        if fast is None:

            async def decoded_json_handler(request: Request) -> Response:
                return await handler(DecodedJsonRequest(request.scope, request.receive))

            return decoded_json_handler

        # Derived from the route's signature once, when the route is built (at startup).
        where = f"{' '.join(sorted(self.methods or ()))} {self.path}"
        steps = _direct_dependencies(self.dependant, where)

        async def fast_path_handler(request: Request) -> Response:
            decoded = DecodedJsonRequest(request.scope, request.receive)
            # Dependency overrides (a test's) apply to FastAPI's handler only: not around them.
            if not getattr(request.scope.get("app"), "dependency_overrides", None):
                certified = fast.certify(decoded)
                if certified is not None:
                    async with AsyncExitStack() as stack:
                        values = await _solve(steps, decoded, stack, {})
                        return await fast.answer(decoded, certified, values)
            return await handler(decoded)

        return fast_path_handler
