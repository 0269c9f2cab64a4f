"""The API's one ASGI middleware: request ids and request logging, HTTP metrics, the edge guard
(401/415 by headers), the request-body size limit, the strict JSON check (duplicate keys,
nesting depth) of every JSON body, ``Cache-Control: no-store`` on ``/v1`` answers and the docs
pages' CSP.

These were five middlewares, each a coroutine layer with its own ``send`` wrapper and its own
pass over the request headers, for every request: one layer does the same work once (py-spy,
16 concurrent identify calls: the five layers were 5 % of the server's CPU)."""

from __future__ import annotations

import json
import logging
import re
import secrets
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.edge import EdgeGuard, GuardedRoute
from api.metrics import Metrics, RouteTemplates
from api.routing import DECODED_JSON
from identity.strict_json import MalformedJsonError, loads_strict

log = structlog.get_logger("idgraph.http")
# The stdlib logger the structlog one writes to: its level decides whether the per-request line
# is built at all (structlog's processors would build, redact and time-stamp it, then drop it).
_stdlib_log = logging.getLogger("idgraph.http")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
PROBLEM_JSON = b"application/problem+json"


async def _send_problem(
    scope: Scope,
    send: Send,
    status: int,
    title: str,
    detail: str,
    slug: str,
    **extensions: object,
) -> None:
    problem: dict[str, object] = {
        "type": f"urn:idgraph:problem:{slug}",
        "title": title,
        "status": status,
        "detail": detail,
        **extensions,
    }
    request_id = scope.get("state", {}).get("request_id")
    if request_id:
        problem["instance"] = f"urn:idgraph:request:{request_id}"
    body = json.dumps(problem).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


_DETAILS = {
    "too_deep": "the request body nests too deeply to be parsed",
    "duplicate_key": "the request body names the same key twice in one object",
}


def _decode_json(
    scope: Scope, headers: dict[bytes, bytes], body: bytes
) -> MalformedJsonError | None:
    """A JSON body with a duplicate key or nested too deeply, refused for every route (those
    FastAPI parses and those that read the raw bytes, such as signed webhooks) before anything
    parses it again. Bodies that are not JSON at all are left to the route's own 400/415.

    An accepted document is kept in the request's state for the routes that validate it
    (:mod:`api.routing`): they do not decode the same bytes again."""
    content_type = headers.get(b"content-type", b"")
    media_type = content_type.decode("latin-1").split(";", 1)[0].strip().lower()
    if not body or not (media_type == "application/json" or media_type.endswith("+json")):
        return None
    try:
        document = loads_strict(body)
    except MalformedJsonError as exc:
        return exc if exc.reason != "malformed_json" else None
    scope["state"][DECODED_JSON] = document
    return None


_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ApiMiddleware:
    """Every request of the API, in this order (each step as the separate middlewares did it):

    1. a request id (``X-Request-ID`` when the caller sent a well-formed one, else a random
       one) in ``scope["state"]``, the log context and the response headers;
    2. the edge guard (:class:`api.edge.EdgeGuard`): 401 without a bearer key, 415 for a body
       that is not JSON, before the body is read;
    3. bodies of methods that have one: ``Content-Length`` over ``max_bytes`` is a 413 before
       reading, a streamed body is counted as it comes (413 past ``max_bytes``, buffering at
       most that much), a JSON body with a duplicate key or nested too deeply is a 400;
    4. answers under ``/v1`` get ``Cache-Control: no-store`` unless they set their own, the docs
       pages (``docs_paths``) their CSP;
    5. one count and latency observation per request by method, route template and status
       (:class:`api.metrics.Metrics`), the 401/413/415s included, and one log line with method,
       route template, status and duration: no client IP (personal data), no query string.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        routes: list[GuardedRoute],
        max_bytes: int,
        docs_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = RouteTemplates()
        self.guard = EdgeGuard(routes)
        self.max_bytes = max_bytes
        self.docs_paths = docs_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        path = str(scope.get("path", ""))
        # Every /v1 answer may hold personal data (profiles, exports, person ids, DSR status):
        # no shared or browser cache may keep a copy.
        personal = path.startswith("/v1/")
        csp = path in self.docs_paths
        status = 500  # what the client gets when the app raises before answering
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                out = list(message.get("headers", []))
                out.append((b"x-request-id", request_id.encode()))
                if personal and not any(k.lower() == b"cache-control" for k, _ in out):
                    out.append((b"cache-control", b"no-store"))
                if csp:
                    out.append((b"content-security-policy", DOCS_CSP_BYTES))
                message["headers"] = out
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            refusal = await self.guard.refusal(scope, headers)
            if refusal is not None:
                await refusal(scope, receive, send_with_headers)
            elif scope["method"] in _NO_BODY_METHODS:
                await self.app(scope, receive, send_with_headers)
            else:
                body = await self._body(scope, headers, receive, send_with_headers)
                if body is not None:
                    await self.app(scope, _replay(body, receive), send_with_headers)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.record_request(
                scope["method"], self.templates.template(scope), status, seconds
            )
            if _stdlib_log.isEnabledFor(logging.INFO):
                route = scope.get("route")
                log.info(
                    "request",
                    method=scope["method"],
                    route=getattr(route, "path", "<unmatched>"),
                    status=status,
                    duration_ms=round(seconds * 1000, 2),
                )
            structlog.contextvars.unbind_contextvars("request_id")

    async def _body(
        self, scope: Scope, headers: dict[bytes, bytes], receive: Receive, send: Send
    ) -> bytes | None:
        """The whole body, or ``None`` when it was refused (the answer is sent) or the client
        went away."""
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _send_problem(
                    scope, send, 400, "Bad request", "invalid Content-Length", "bad-request"
                )
                return None
            if int(declared) > self.max_bytes:
                await self._too_large(scope, send)
                return None
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._too_large(scope, send)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        refusal = _decode_json(scope, headers, body)
        if refusal is not None:
            await _send_problem(
                scope,
                send,
                400,
                "Malformed JSON",
                _DETAILS.get(refusal.reason, refusal.message),
                refusal.code,
                errors=[{"pointer": refusal.pointer, "reason": refusal.reason}],
            )
            return None
        return body

    async def _too_large(self, scope: Scope, send: Send) -> None:
        await _send_problem(
            scope,
            send,
            413,
            "Content too large",
            f"request body exceeds {self.max_bytes} bytes (IDGRAPH_MAX_BODY_BYTES)",
            "content-too-large",
        )


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app the buffered body, then whatever comes next."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# The API docs pages (Swagger UI, ReDoc) run the vendored bundles from this origin only. Their
# bundles reference a few outside URLs themselves (ReDoc's footer logo on a CDN): the policy
# makes the browser refuse those, so reading the docs tells no third party anything. The pages
# start the bundles with an inline script and inject inline styles, hence 'unsafe-inline' there
# (and only there: the console's pages allow no inline code).
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
DOCS_CSP_BYTES = DOCS_CSP.encode()
