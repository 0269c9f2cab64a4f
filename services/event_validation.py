"""Validation of ingest input: a request (an API body, a bulk row, a stream record) becomes an
:class:`~identity.model.IdentityEvent` or the error that says what is wrong with it.

Apart from :class:`services.ingest.IngestService` (which calls it for every ingest path) because
it needs no store and no keys: the policies, the PII scanner, the limits and a clock. So a bulk
file can be read and validated in a process of its own (:mod:`services.bulk_reader`), built from
the settings alone, while the ingesting process writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from identity.errors import BatchValidationError, InputLimitError, InvalidFieldError
from identity.identifiers import NormalizedIdentifier
from identity.intake import normalize_all
from identity.model import FactInput, IdentityEvent
from identity.policy import IdentityPolicy
from privacy.scanning.facts import EventInput, FactIntake, FactsOf
from services.inputs import IdentifyInput, IdentifyRequest


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """Per-request limits and the default phone region (from settings, via the bootstrap)."""

    max_identifiers_per_event: int = 20
    max_batch_events: int = 500
    default_region: str | None = None


@dataclass(slots=True)
class _Checked:
    """A request of :meth:`EventValidation.events` whose identifiers were normalized."""

    index: int
    request: IdentifyInput
    at: datetime
    identifiers: tuple[NormalizedIdentifier, ...] = ()
    errors: list[InvalidFieldError] = field(default_factory=list)


class EventValidation:
    """Turns requests into events: identifiers normalized and checked against the identity
    policy, traits and events checked and PII-scanned against the facts policy. Writes
    nothing, holds no store."""

    def __init__(
        self,
        policy: IdentityPolicy,
        facts: FactIntake,
        limits: IngestLimits,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._policy = policy
        self._facts = facts
        self._limits = limits
        self._clock = clock

    @property
    def identifier_types(self) -> tuple[str, ...]:
        """The identifier types the identity policy declares (bulk CSV columns)."""
        return tuple(self._policy.types)

    def events(
        self,
        requests: Sequence[IdentifyRequest | IdentifyInput],
        pointers: Sequence[str] | None = None,
    ) -> list[IdentityEvent | InputLimitError | BatchValidationError]:
        """Validate, normalize and PII-scan ``requests``: one result per request, in order, each
        the event or what is wrong with it (``pointers`` locate the problems; default ``#``).

        The traits and event properties of all of them are PII-scanned as one batch
        (:meth:`FactIntake.prepare_many`): the NER model runs once over the values it has not
        seen, instead of once per request. Writes nothing."""
        wheres = list(pointers) if pointers is not None else ["#"] * len(requests)
        # Bulk rows arrive as plain values (services.inputs.identify_input, no model per row).
        inputs = [IdentifyInput.of(r) if isinstance(r, IdentifyRequest) else r for r in requests]
        limit = self._limits.max_identifiers_per_event
        policy, region = self._policy, self._limits.default_region
        results: list[IdentityEvent | InputLimitError | BatchValidationError | None] = []
        checked: list[_Checked] = []
        for request, pointer in zip(inputs, wheres, strict=True):
            if len(request.identifiers) > limit:
                results.append(
                    InputLimitError(
                        f"{pointer}/identifiers",
                        f"at most {limit} identifiers per event "
                        "(IDGRAPH_MAX_IDENTIFIERS_PER_EVENT)",
                    )
                )
                continue
            at = request.timestamp or self._clock()
            if not request.traits and not request.events:
                # Identifiers only (most bulk rows): nothing to scan, so when every identifier
                # normalizes the event is complete here, in one pass (no _Checked, no second
                # loop, one policy call per event: a tenth of the bulk reader's CPU went to
                # these layers). Otherwise the general path below locates every problem.
                identifiers = policy.normalize_valid(request.identifiers, region)
                if identifiers is not None:
                    results.append(
                        IdentityEvent(
                            identifiers, request.source, at, message_id=request.message_id
                        )
                    )
                    continue
            item = _Checked(len(results), request, at)
            try:
                item.identifiers = normalize_all(
                    request.identifiers,
                    self._policy,
                    self._limits.default_region,
                    f"{pointer}/identifiers",
                )
            except BatchValidationError as exc:
                item.errors.extend(exc.errors)
            results.append(None)
            checked.append(item)
        # Only requests with traits or events have facts to check and scan; the others (most
        # bulk rows: identifiers only) have none, which is what prepare_many answers for them,
        # without a FactsOf and its drafts per row.
        with_facts = [item for item in checked if item.request.traits or item.request.events]
        prepared = iter(
            self._facts.prepare_many(
                [
                    FactsOf(
                        item.request.traits,
                        [
                            EventInput(e.name, e.timestamp or item.at, e.properties)
                            for e in item.request.events
                        ],
                        item.at,
                        wheres[item.index],
                    )
                    for item in with_facts
                ]
            )
            if with_facts
            else ()
        )
        no_facts: tuple[FactInput, ...] = ()
        for item in checked:
            facts = next(prepared) if item.request.traits or item.request.events else no_facts
            if isinstance(facts, InputLimitError):
                results[item.index] = facts
                continue
            if isinstance(facts, BatchValidationError):
                item.errors.extend(facts.errors)
            if item.errors or isinstance(facts, BatchValidationError):
                results[item.index] = BatchValidationError(item.errors)
                continue
            results[item.index] = IdentityEvent(
                item.identifiers,
                item.request.source,
                item.at,
                facts,
                message_id=item.request.message_id,
            )
        return [r for r in results if r is not None]
