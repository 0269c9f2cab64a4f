"""What the use cases report to monitoring: a port the entrypoints' metrics implement.

The use cases time their store calls and count ingest outcomes; *where* that goes (an app's own
Prometheus registry, nothing for a one-off CLI command) is the entrypoint's choice.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from enum import StrEnum
from typing import Protocol

from identity.model import EventOutcome


class StoreOperation(StrEnum):
    """The engine/store calls timed by ``idgraph_store_seconds`` (its ``operation`` label)."""

    INGEST = "ingest"
    RESOLVE = "resolve"
    EXPLAIN = "explain"
    UNLINK = "unlink"


class UseCaseMetrics(Protocol):
    """Store latency and ingest outcomes (label values from fixed sets only)."""

    def time_store(self, operation: StoreOperation) -> AbstractContextManager[None]:
        """Observe how long the enclosed engine call takes (failures included)."""
        ...

    def record_ingest(self, outcomes: Iterable[EventOutcome]) -> None:
        """Count the outcomes, refusals and facts of ingested events."""
        ...


class NoMetrics:
    """Metrics that go nowhere (CLI commands, benches)."""

    def time_store(self, operation: StoreOperation) -> AbstractContextManager[None]:
        """No timing."""
        return nullcontext()

    def record_ingest(self, outcomes: Iterable[EventOutcome]) -> None:
        """No counting."""
