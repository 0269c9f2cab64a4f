"""Sign-in and sign-out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from console.render import base_path, page
from console.security import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Action,
    Posted,
    Services,
    login_form,
    new_login_token,
    session_token,
)
from privacy.access.operators import AccountLockedError, SignInFailedError, SignInThrottledError

router = APIRouter()


def _safe_next(value: object) -> str:
    """A path inside the console to go to after sign-in (never another site)."""
    if (
        isinstance(value, str)
        and value.startswith("/")
        and not value.startswith("//")
        and "\\" not in value
        and len(value) <= 200
    ):
        return value
    return "/"


def _forget(response: Response, name: str, request: Request) -> None:
    """Expire a cookie with the same flags it was set with."""
    response.delete_cookie(
        name,
        path=base_path(request) or "/",
        secure=request.app.state.config.secure_cookies,
        httponly=True,
        samesite="strict",
    )


def _login_page(
    request: Request, next_path: str, error: str = "", status_code: int = 200
) -> Response:
    token = new_login_token()
    response = page(
        request,
        "login.html",
        {"login_token": token, "next": next_path, "error": error, "csrf_field": CSRF_FIELD},
        status_code,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=1800,
        path=base_path(request) or "/",
        secure=request.app.state.config.secure_cookies,
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/login", name="login")
def login(request: Request, next: str = "/") -> Response:  # noqa: A002 - the query name
    """The sign-in form."""
    return _login_page(request, _safe_next(next))


@router.post("/login")
def sign_in(
    request: Request, services: Services, form: Annotated[FormData, Depends(login_form)]
) -> Response:
    """Check the credentials; on success a fresh session cookie (never the one presented)."""
    username = str(form.get("username", ""))[:64].strip()
    password = str(form.get("password", ""))[:256]
    code = str(form.get("totp", ""))[:16]
    next_path = _safe_next(form.get("next"))
    try:
        signed_in = services.access.sign_in(username, password, code)
    except SignInThrottledError as exc:
        response = _login_page(request, next_path, str(exc), 429)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except AccountLockedError as exc:
        return _login_page(request, next_path, str(exc), 423)
    except SignInFailedError as exc:
        return _login_page(request, next_path, str(exc), 401)
    base = base_path(request)
    response = RedirectResponse(base + next_path, status_code=303)
    _forget(response, LOGIN_COOKIE, request)
    response.set_cookie(
        SESSION_COOKIE,
        signed_in.token,
        path=base or "/",
        secure=request.app.state.config.secure_cookies,
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/logout")
def sign_out(
    request: Request, services: Services, posted: Annotated[Posted, Depends(Action(None))]
) -> Response:
    """End the session server-side and drop the cookie."""
    found = session_token(request, services)
    if found is not None:
        services.access.sign_out(found[0])
    base = base_path(request)
    response = RedirectResponse(base + "/login", status_code=303)
    _forget(response, SESSION_COOKIE, request)
    return response
