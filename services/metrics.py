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


class JournalBatchSource(StrEnum):
    """Where the ingest journal's applier took a queued batch's events from
    (``idgraph_ingest_journal_batches_opened``'s ``source`` label)."""

    MEMORY = "memory"  # kept by the accepting process as it validated them
    JOURNAL = "journal"  # unsealed, decompressed and decoded from the batch's journal row


class UseCaseMetrics(Protocol):
    """Store latency, ingest outcomes and the ingest journal's applier (label values from fixed
    sets only)."""

    def time_store(self, operation: StoreOperation) -> AbstractContextManager[None]:
        """Observe how long the enclosed engine call takes (failures included)."""
        ...

    def record_ingest(self, outcomes: Iterable[EventOutcome]) -> None:
        """Count the outcomes, refusals and facts of ingested events."""
        ...

    def record_opened_batches(self, source: JournalBatchSource, count: int) -> None:
        """Count ``count`` queued batches the journal's applier opened from ``source``."""
        ...


class NoMetrics:
    """Metrics that go nowhere (CLI commands, benches)."""

    def time_store(self, operation: StoreOperation) -> AbstractContextManager[None]:
        """No timing."""
        return nullcontext()

    def record_ingest(self, outcomes: Iterable[EventOutcome]) -> None:
        """No counting."""

    def record_opened_batches(self, source: JournalBatchSource, count: int) -> None:
        """No counting."""
