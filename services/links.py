"""Resolve, explain and unlink, from raw ``(type, value)`` pairs.

Shared by the HTTP API (``/v1/resolve``, ``/v1/links/...``) and the CLI (``idgraph resolve``,
``explain``, ``unlink``): both hand over what the caller typed, and both get every problem of
both identifiers in one :class:`~identity.errors.BatchValidationError`.
"""

from __future__ import annotations

from identity.errors import BatchValidationError, InvalidFieldError
from identity.identifiers import NormalizedIdentifier
from identity.intake import normalize_all
from identity.model import Explanation, UnlinkResult
from identity.resolution import ResolutionEngine
from services.metrics import NoMetrics, StoreOperation, UseCaseMetrics

RawIdentifier = tuple[str, str]
"""An identifier as a caller gave it: ``(type, raw value)``."""


class LinkService:
    """Questions and corrections about the links between identifiers."""

    def __init__(
        self,
        engine: ResolutionEngine,
        default_region: str | None,
        metrics: UseCaseMetrics | None = None,
    ) -> None:
        self._engine = engine
        self._region = default_region
        self._metrics: UseCaseMetrics = metrics or NoMetrics()

    def with_metrics(self, metrics: UseCaseMetrics) -> LinkService:
        """The same service reporting to ``metrics``."""
        return LinkService(self._engine, self._region, metrics)

    def resolve(self, identifier: RawIdentifier, pointer: str = "#/identifier") -> str | None:
        """The opaque person id ``identifier`` resolves to, ``None`` if it is not in the graph."""
        (normalized,) = normalize_all([identifier], self._engine.policy, self._region, pointer)
        with self._metrics.time_store(StoreOperation.RESOLVE):
            return self._engine.resolve(normalized)

    def explain(self, a: RawIdentifier, b: RawIdentifier) -> Explanation:
        """The chain of links (source, first and last time) that joins ``a`` and ``b``."""
        first, second = self._pair(a, b)
        with self._metrics.time_store(StoreOperation.EXPLAIN):
            return self._engine.explain(first, second)

    def unlink(self, a: RawIdentifier, b: RawIdentifier) -> UnlinkResult:
        """Remove the direct link between ``a`` and ``b``; split the person if it falls apart."""
        first, second = self._pair(a, b)
        with self._metrics.time_store(StoreOperation.UNLINK):
            return self._engine.unlink(first, second)

    def _pair(
        self, a: RawIdentifier, b: RawIdentifier
    ) -> tuple[NormalizedIdentifier, NormalizedIdentifier]:
        """Normalize both; errors of either located at ``#/a/...`` or ``#/b/...``."""
        errors: list[InvalidFieldError] = []
        found: list[NormalizedIdentifier] = []
        for name, item in (("a", a), ("b", b)):
            try:
                found.extend(normalize_all([item], self._engine.policy, self._region, "#"))
            except BatchValidationError as exc:
                # normalize_all locates errors at #/0/...; re-locate them at #/a or #/b.
                errors.extend(e.at(e.field.replace("#/0", f"#/{name}", 1)) for e in exc.errors)
        if errors:
            raise BatchValidationError(errors)
        return found[0], found[1]
