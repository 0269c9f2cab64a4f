"""problem+json answers as typed exceptions.

Every error the API answers is RFC 9457 ``application/problem+json`` with a ``type`` of the form
``urn:idgraph:problem:<name>``. :func:`problem_from_response` raises the class of its status (so
``except NotFoundError`` works without reading bodies) and keeps the problem's members: ``name``
(the part after the prefix, e.g. ``dsr-conflict``), ``title``, ``detail``, ``errors`` (one per
field, with a JSON pointer), ``instance`` (the request id in the server log).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

PROBLEM_PREFIX = "urn:idgraph:problem:"


@dataclass(frozen=True)
class FieldError:
    """One field that failed: where (RFC 6901 pointer into the request) and why."""

    pointer: str
    detail: str = ""
    reason: str = ""


@dataclass
class ProblemError(Exception):
    """An error answer of the API (any 4xx/5xx)."""

    status: int
    type: str
    title: str
    detail: str
    instance: str | None = None
    errors: list[FieldError] = field(default_factory=list)
    extensions: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(f"{self.status} {self.name}: {self.detail}")

    def __str__(self) -> str:
        return f"{self.status} {self.name}: {self.detail}"

    @property
    def name(self) -> str:
        """The problem type without its URN prefix (``dsr-conflict``)."""
        return self.type.removeprefix(PROBLEM_PREFIX)


class BadRequestError(ProblemError):
    """400: malformed JSON, an invalid cursor or header."""


class AuthenticationError(ProblemError):
    """401: no, unknown or revoked API key (or a refused webhook signature)."""


class ForbiddenError(ProblemError):
    """403: the key lacks the scope or the purpose."""


class NotFoundError(ProblemError):
    """404: unknown (or another consumer's) object."""


class ConflictError(ProblemError):
    """409: the object's state or an earlier request forbids this."""


class GoneError(ProblemError):
    """410: an export that expired or was destroyed by an erasure."""


class PayloadTooLargeError(ProblemError):
    """413: the body is over the server's limit."""


class UnsupportedMediaTypeError(ProblemError):
    """415: the body was not sent as JSON."""


class InvalidRequestError(ProblemError):
    """422: the request does not fit the schema or the policies; nothing was written."""


class RateLimitedError(ProblemError):
    """429: over the key's rate; ``retry_after`` seconds to wait (raised when retries ran out)."""

    @property
    def retry_after(self) -> float | None:
        """The server's ``Retry-After``, in seconds, if it sent one."""
        value = self.extensions.get("retry_after")
        return float(value) if isinstance(value, int | float) else None


class ServerError(ProblemError):
    """500 and other 5xx: a fault on the server; the log there has ``instance``."""


class ServiceUnavailableError(ServerError):
    """503: a store is unavailable for now (raised when retries ran out)."""


BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: InvalidRequestError,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}
KNOWN_MEMBERS = {"type", "title", "status", "detail", "instance", "errors"}


def problem_from_response(
    response: httpx.Response, retry_after: float | None = None
) -> ProblemError:
    """The typed exception for an error ``response`` (a non-problem body still maps by status)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"title": response.reason_phrase, "detail": response.text[:200]}
    status = response.status_code
    cls = BY_STATUS.get(status, ServerError if status >= 500 else ProblemError)
    extensions = {k: v for k, v in body.items() if k not in KNOWN_MEMBERS}
    if retry_after is not None:
        extensions["retry_after"] = retry_after
    errors = [
        FieldError(
            pointer=str(e.get("pointer", "")),
            detail=str(e.get("detail", "")),
            reason=str(e.get("reason", "")),
        )
        for e in body.get("errors") or []
        if isinstance(e, dict)
    ]
    return cls(
        status=status,
        type=str(body.get("type", f"{PROBLEM_PREFIX}http-{status}")),
        title=str(body.get("title", "")),
        detail=str(body.get("detail", "")),
        instance=body.get("instance"),
        errors=errors,
        extensions=extensions,
    )
