"""What the console is given: the services it calls and its cookie settings.

Built by the app wiring from the one bootstrap (the console never builds or imports anything of
another entrypoint); tests build it from the same bootstrap.
"""

from __future__ import annotations

from dataclasses import dataclass

from privacy.access.operators import OperatorAccess
from privacy.access.reads import ReadService
from privacy.auditing.log import AuditLog
from privacy.dsr.service import DsrService
from services.lookup import PersonLookup
from services.operations import OperationsDashboard
from services.quarantine import QuarantineReview


@dataclass(frozen=True)
class ConsoleServices:
    """The use cases the console calls; the same objects the API and the CLI use."""

    access: OperatorAccess
    lookup: PersonLookup
    quarantine: QuarantineReview
    reads: ReadService
    dsr: DsrService
    audit: AuditLog
    dashboard: OperationsDashboard
    purposes: tuple[str, ...]
    regulations: tuple[str, ...]
    default_region: str | None


@dataclass(frozen=True)
class ConsoleConfig:
    """How the console serves: ``secure_cookies`` (``Secure`` flag; on outside development)."""

    secure_cookies: bool = True
    title: str = "idgraph console"
