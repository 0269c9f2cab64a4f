"""FastAPI dependencies: the container's collaborators and API-key scope checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import ApiKey, AuthenticationError, ForbiddenError, Scope
from api.bootstrap import Container
from api.settings import Settings
from identity.resolution import ResolutionEngine
from privacy.facts import FactIntake

_bearer = HTTPBearer(auto_error=False, description="API key: `Authorization: Bearer idg_...`")


def get_container(request: Request) -> Container:
    """The container built at startup."""
    container: Container = request.app.state.container
    return container


def get_engine(container: Annotated[Container, Depends(get_container)]) -> ResolutionEngine:
    """The resolution engine."""
    return container.engine


def get_facts(container: Annotated[Container, Depends(get_container)]) -> FactIntake:
    """The fact intake (policy + PII scanner)."""
    return container.facts


def get_settings(container: Annotated[Container, Depends(get_container)]) -> Settings:
    """The settings."""
    return container.settings


def require(scope: Scope) -> Callable[..., ApiKey]:
    """A dependency that authenticates the bearer key and checks it has ``scope``."""

    def check(
        request: Request,
        container: Annotated[Container, Depends(get_container)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiKey:
        if credentials is None:
            raise AuthenticationError("an API key is required: `Authorization: Bearer <key>`")
        key = container.api_keys.authenticate(credentials.credentials)
        if not key.allows(scope):
            raise ForbiddenError(scope)
        request.state.api_key_id = key.key_id
        return key

    return check


Engine = Annotated[ResolutionEngine, Depends(get_engine)]
Facts = Annotated[FactIntake, Depends(get_facts)]
AppSettings = Annotated[Settings, Depends(get_settings)]
IngestKey = Annotated[ApiKey, Depends(require(Scope.INGEST))]
ResolveKey = Annotated[ApiKey, Depends(require(Scope.RESOLVE))]
AdminKey = Annotated[ApiKey, Depends(require(Scope.ADMIN))]
