"""Sessions, scopes and CSRF for console pages (dependencies), and the response headers.

* The session cookie holds a random token (the store keeps its SHA-256): ``HttpOnly`` (no script
  reads it), ``SameSite=Strict`` (no other site's page sends it), ``Secure`` outside development,
  ``Path=/console``. A new token is minted at every sign-in (session fixation).
* Every state change is a POST carrying the session's CSRF token in a hidden field (synchronizer
  token), compared in constant time; a cross-origin ``Origin`` header is refused as well. The
  sign-in form, before any session exists, uses a double-submit token (cookie + field).
* Every page gets a strict Content-Security-Policy (only this origin's scripts, styles and
  images; no framing), ``no-store`` caching and no referrer to other origins.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console.wiring import ConsoleServices
from privacy.access.operators import ConsoleScope, Session, csrf_matches
from privacy.access.policy_engine import Caller

SESSION_COOKIE = "idgraph_console"
LOGIN_COOKIE = "idgraph_console_login"
CSRF_FIELD = "csrf_token"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # "no-referrer" makes Chromium send Origin: null
    (b"cache-control", b"no-store"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


class NotSignedInError(Exception):
    """No live session: pages redirect to the sign-in form, posts answer 401."""


class PageForbiddenError(Exception):
    """The operator's role lacks the scope the page needs (403)."""

    def __init__(self, scope: ConsoleScope) -> None:
        self.scope = scope
        super().__init__(f"your role lacks the {scope.value!r} scope")


class CsrfError(Exception):
    """A state change without the session's CSRF token, or from another origin (403)."""


class SecurityHeadersMiddleware:
    """Adds :data:`SECURITY_HEADERS` to every console response (pure ASGI: streams untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in {name for name, _ in SECURITY_HEADERS}
                ]
                message["headers"] = headers + list(SECURITY_HEADERS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def get_services(request: Request) -> ConsoleServices:
    """The services the wiring gave the console."""
    services: ConsoleServices = request.app.state.services
    return services


Services = Annotated[ConsoleServices, Depends(get_services)]


def cookie_values(request: Request, name: str) -> list[str]:
    """Every value the browser sent for cookie ``name``, most specific path first.

    A browser sends several cookies of one name when they differ in path or domain (another
    page of the site, or an attacker on a sibling subdomain, can plant one with ``Path=/``);
    Starlette keeps only the last. Looking at each keeps a planted cookie from shadowing the
    real one.
    """
    values = []
    for part in request.headers.get("cookie", "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name and value:
            values.append(value.strip('"'))
    return values[:5]


def session_token(request: Request, services: ConsoleServices) -> tuple[str, Session] | None:
    """The first cookie value that is a live session, with the session."""
    for token in cookie_values(request, SESSION_COOKIE):
        session = services.access.session(token)
        if session is not None:
            return token, session
    return None


def current_session(request: Request, services: Services) -> Session:
    """The signed-in operator's session, or :class:`NotSignedInError`."""
    found = session_token(request, services)
    if found is None:
        raise NotSignedInError
    request.state.session = found[1]
    return found[1]


SignedIn = Annotated[Session, Depends(current_session)]


def _same_origin(request: Request) -> bool:
    """A browser's ``Origin`` (sent on every POST) must be this server's own."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None  # "null" is an opaque (sandboxed, file:) origin: refuse it
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


class Needs:
    """Dependency: a signed-in operator whose role grants ``scope`` (403 page otherwise)."""

    def __init__(self, scope: ConsoleScope | None) -> None:
        self.scope = scope

    def __call__(self, session: SignedIn) -> Session:
        """The session, if its operator may use the page."""
        if self.scope is not None and not session.operator.allows(self.scope):
            raise PageForbiddenError(self.scope)
        return session


@dataclass(frozen=True, slots=True)
class Posted:
    """A checked state change: the operator's session and the submitted form."""

    session: Session
    form: FormData

    def text(self, name: str, max_length: int = 200) -> str:
        """A text field, stripped and cut to ``max_length`` (absent: empty)."""
        value = self.form.get(name)
        return value.strip()[:max_length] if isinstance(value, str) else ""

    def texts(self, name: str, max_length: int = 200) -> list[str]:
        """Every value of a repeated field."""
        return [v.strip()[:max_length] for v in self.form.getlist(name) if isinstance(v, str)]


class Action:
    """Dependency for a POST: session, scope, same origin and the CSRF token, then the form."""

    def __init__(self, scope: ConsoleScope | None) -> None:
        self.needs = Needs(scope)

    async def __call__(self, request: Request, session: SignedIn) -> Posted:
        """The posted form, once every check passed."""
        self.needs(session)
        form = await request.form(max_files=0, max_fields=200)
        token = form.get(CSRF_FIELD)
        if not _same_origin(request) or not isinstance(token, str):
            raise CsrfError
        if not csrf_matches(session.csrf_token, token):
            raise CsrfError
        return Posted(session, form)


def reader(session: Session) -> Caller:
    """The operator as a reader for the policy engine: its own purposes, audited as
    ``op_<username>`` (the read services record ``caller.actor``).

    Operators are the deploying organisation's own staff and work every consumer's audiences
    (``sees_all``, as admin keys do); what they may read stays bounded by their purposes and the
    policy engine, and every read is audited with the operator as actor."""
    actor = session.operator.actor
    return Caller(actor, session.operator.purposes, actor, actor, sees_all=True)


async def login_form(request: Request) -> FormData:
    """The sign-in form, if its double-submit token matches the pre-sign-in cookie."""
    form = await request.form(max_files=0, max_fields=10)
    token = form.get(CSRF_FIELD)
    if not _same_origin(request) or not isinstance(token, str):
        raise CsrfError
    if not any(csrf_matches(c, token) for c in cookie_values(request, LOGIN_COOKIE)):
        raise CsrfError
    return form


def new_login_token() -> str:
    """A fresh double-submit token for the sign-in form."""
    return secrets.token_urlsafe(32)


__all__ = [
    "CSRF_FIELD",
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "Action",
    "CsrfError",
    "Needs",
    "NotSignedInError",
    "PageForbiddenError",
    "Posted",
    "SecurityHeadersMiddleware",
    "Services",
    "SignedIn",
    "current_session",
    "login_form",
    "new_login_token",
    "reader",
]
