"""Typed Python client for the idgraph HTTP API (``pip install ./clients/python``)."""

from idgraph_client.client import IdGraph, identifier, new_message_id, parse_retry_after
from idgraph_client.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FieldError,
    ForbiddenError,
    GoneError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    ProblemError,
    RateLimitedError,
    ServerError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
)

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "FieldError",
    "ForbiddenError",
    "GoneError",
    "IdGraph",
    "InvalidRequestError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ProblemError",
    "RateLimitedError",
    "ServerError",
    "ServiceUnavailableError",
    "UnsupportedMediaTypeError",
    "identifier",
    "new_message_id",
    "parse_retry_after",
]
