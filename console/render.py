"""Template rendering: every page gets the operator, the CSRF token, the navigation and the
mount path (``base``), so templates never build a URL from request data."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from console.reasons import explain
from privacy.access.operators import ConsoleScope, Session

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
TEMPLATES.env.autoescape = True  # every value is escaped, whatever the file extension

NAV: tuple[tuple[str, str, ConsoleScope | None], ...] = (
    ("Dashboard", "/", None),
    ("Requests", "/dsr", ConsoleScope.DSR),
    ("People", "/people", ConsoleScope.RESOLVE),
    ("Quarantine", "/quarantine", ConsoleScope.QUARANTINE),
    ("Audiences", "/audiences", ConsoleScope.READ),
    ("Audit", "/audit", ConsoleScope.AUDIT),
)


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _day(value: datetime | None) -> str:
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d")


TEMPLATES.env.filters["when"] = _when
TEMPLATES.env.filters["day"] = _day
TEMPLATES.env.globals["reason"] = explain


def base_path(request: Request) -> str:
    """Where the console is mounted (``/console``)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def page(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    status_code: int = 200,
    session: Session | None = None,
) -> HTMLResponse:
    """Render ``template`` with the common context."""
    session = session or getattr(request.state, "session", None)
    current = request.url.path.removeprefix(base_path(request)) or "/"
    nav = []
    if session is not None:
        nav = [
            {
                "label": label,
                "href": path,
                "current": current == path or (path != "/" and current.startswith(path + "/")),
            }
            for label, path, scope in NAV
            if scope is None or session.operator.allows(scope)
        ]
    values: dict[str, Any] = {
        "base": base_path(request),
        "session": session,
        "operator": session.operator if session else None,
        "csrf_token": session.csrf_token if session else "",
        "nav": nav,
        "title": request.app.state.config.title,
    }
    values.update(context or {})
    return TEMPLATES.TemplateResponse(request, template, values, status_code=status_code)
