"""ASGI middleware: request ids and request logging, the request-body size limit, and the strict
JSON check (duplicate keys, nesting depth) of every JSON body."""

from __future__ import annotations

import json
import re
import secrets
import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from identity.strict_json import MalformedJsonError, loads_strict

log = structlog.get_logger("idgraph.http")

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


class RequestContextMiddleware:
    """Give every request an id (``X-Request-ID``) bound to the log context; log one line each.

    The log line has method, route template (``/v1/links/explain``, never a filled-in path),
    status and duration. No client IP (personal data) and no query string.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()
        personal = str(scope.get("path", "")).startswith("/v1/")

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                if personal and not any(k.lower() == b"cache-control" for k, _ in headers):
                    # Every /v1 answer may hold personal data (profiles, exports, person ids,
                    # DSR status): no shared or browser cache may keep a copy.
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            log.info(
                "request",
                method=scope["method"],
                route=getattr(route, "path", "<unmatched>"),
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")


_DETAILS = {
    "too_deep": "the request body nests too deeply to be parsed",
    "duplicate_key": "the request body names the same key twice in one object",
}


def _json_refusal(scope: Scope, body: bytes) -> MalformedJsonError | None:
    """A JSON body with a duplicate key or nested too deeply, refused for every route (those
    FastAPI parses and those that read the raw bytes, such as signed webhooks) before anything
    parses it again. Bodies that are not JSON at all are left to the route's own 400/415."""
    content_type = dict(scope.get("headers", [])).get(b"content-type", b"")
    media_type = content_type.decode("latin-1").split(";", 1)[0].strip().lower()
    if not body or not (media_type == "application/json" or media_type.endswith("+json")):
        return None
    try:
        loads_strict(body)
    except MalformedJsonError as exc:
        return exc if exc.reason != "malformed_json" else None
    return None


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413 before the app parses anything.

    Checks ``Content-Length`` up front and counts streamed bytes too (a chunked body has no
    length), buffering at most ``max_bytes``.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "OPTIONS"}:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _send_problem(
                    scope, send, 400, "Bad request", "invalid Content-Length", "bad-request"
                )
                return
            if int(declared) > self.max_bytes:
                await self._too_large(scope, send)
                return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await self._too_large(scope, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        refusal = _json_refusal(scope, body)
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
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        await _send_problem(
            scope,
            send,
            413,
            "Content too large",
            f"request body exceeds {self.max_bytes} bytes (IDGRAPH_MAX_BODY_BYTES)",
            "content-too-large",
        )


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


class DocsCspMiddleware:
    """Adds :data:`DOCS_CSP` to the responses of the docs pages (``paths``)."""

    def __init__(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return

        async def send_with_csp(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"content-security-policy", DOCS_CSP.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_csp)
