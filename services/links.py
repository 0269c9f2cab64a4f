"""Resolve, explain and unlink, from raw ``(type, value)`` pairs.

Shared by the HTTP API (``/v1/resolve``, ``/v1/links/...``) and the CLI (``idgraph resolve``,
``explain``, ``unlink``): both hand over what the caller typed, and both get every problem of
both identifiers in one :class:`~identity.errors.BatchValidationError`.

An unlink that leaves the two identifiers in different persons records a do-not-link rule, so the
next event naming both does not merge them again (the identifier that would is refused with
``do_not_link``). Operators list and remove rules with ``idgraph links rules`` / ``idgraph links
allow``. Unlinks and rule removals are audited (``links.unlinked``, ``links.rule_removed``) with
the rule id and person references only.
"""

from __future__ import annotations

from identity.errors import BatchValidationError, InvalidFieldError
from identity.identifiers import NormalizedIdentifier
from identity.intake import normalize_all
from identity.model import DoNotLinkEntry, Explanation, UnlinkResult
from identity.resolution import ResolutionEngine
from privacy.auditing.log import AuditDraft, AuditLog, AuditRef
from services.metrics import NoMetrics, StoreOperation, UseCaseMetrics

RawIdentifier = tuple[str, str]
"""An identifier as a caller gave it: ``(type, raw value)``."""


class LinkService:
    """Questions and corrections about the links between identifiers."""

    def __init__(
        self,
        engine: ResolutionEngine,
        default_region: str | None,
        audit: AuditLog,
        metrics: UseCaseMetrics | None = None,
    ) -> None:
        self._engine = engine
        self._region = default_region
        self._audit = audit
        self._metrics: UseCaseMetrics = metrics or NoMetrics()

    def with_metrics(self, metrics: UseCaseMetrics) -> LinkService:
        """The same service reporting to ``metrics``."""
        return LinkService(self._engine, self._region, self._audit, metrics)

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

    def unlink(self, a: RawIdentifier, b: RawIdentifier, *, actor: str) -> UnlinkResult:
        """Remove the direct link between ``a`` and ``b``; split the person if it falls apart,
        and then keep the two apart with a do-not-link rule. Audited as ``actor``."""
        first, second = self._pair(a, b)
        with self._metrics.time_store(StoreOperation.UNLINK):
            result = self._engine.unlink(first, second)
        refs = {self._audit.person_ref(p) for p in (result.person_id_a, result.person_id_b)}
        self._audit.append(
            [
                AuditDraft(
                    actor=actor,
                    action="links.unlinked",
                    details={
                        "removed_links": result.removed_links,
                        "split": result.split,
                        "rule": AuditRef(result.rule_id) if result.rule_id else None,
                        "person_refs": [AuditRef(r) for r in sorted(refs)],
                    },
                )
            ]
        )
        return result

    def do_not_link_rules(self, after_rule_id: str = "", limit: int = 100) -> list[DoNotLinkEntry]:
        """A page of do-not-link rules in id order (node ids, types and persons; no values)."""
        return self._engine.do_not_link_page(after_rule_id, limit)

    def remove_rule(self, rule_id: str, *, actor: str) -> DoNotLinkEntry:
        """Remove a do-not-link rule: the two identifiers may be linked again by a later event
        (nothing is merged now). Audited as ``actor``. Raises
        :class:`~identity.errors.RuleNotFoundError` if there is no such rule."""
        entry = self._engine.remove_do_not_link(rule_id)
        self._audit.append(
            [
                AuditDraft(
                    actor=actor,
                    action="links.rule_removed",
                    details={
                        "rule": AuditRef(entry.rule.rule_id),
                        "types": [entry.type_a, entry.type_b],
                        "person_refs": [
                            AuditRef(r)
                            for r in sorted(
                                {
                                    self._audit.person_ref(p)
                                    for p in (entry.person_a, entry.person_b)
                                }
                            )
                        ],
                    },
                )
            ]
        )
        return entry

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
