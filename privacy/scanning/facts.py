"""Attributes and events at ingest: typed by policy, PII-scanned, then handed on for sealing.

``policies/categories.yaml`` maps every attribute key and event name to a data category and a
value type. Every string value (attribute values, list items, event property values) goes
through the PII scanner, except values declared ``datetime``, which are stored in their
canonical form and hold nothing the scanner looks for (see ``_Value``); an entity the category
does not list in ``allowed_pii`` gets the category's action:

- ``reject``: the request fails with 422, naming the field and the entity type, never the value;
- ``redact``: the found spans are replaced by ``<ENTITY_TYPE>`` before the value is stored;
- ``quarantine``: the value is stored encrypted but flagged; no read sees it until released.

Unknown attribute keys, event names and properties follow ``unknown_*`` (reject or quarantine):
nothing is stored silently. The output is a list of :class:`~identity.model.FactInput` whose
payload is plaintext JSON; the resolution engine anchors them and the vault seals them before
anything reaches a store.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from identity.bounded import BoundedMap
from identity.errors import (
    BatchValidationError,
    InputLimitError,
    InvalidFieldError,
    PolicyFileError,
)
from identity.model import FactInput, FactKind, FactStatus
from identity.policy import PolicyFieldProblem, load_policy_file
from privacy.scanning import PiiFinding, PiiScanner, ScannerConfig, redact

_NAME = r"^[a-z][a-z0-9_]{0,63}$"
UNKNOWN_CATEGORY = "unknown"
MAX_LIST_ITEMS = 50


class ValueType(StrEnum):
    """The type an attribute value or event property must have."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATETIME = "datetime"
    STRING_LIST = "string_list"


class PiiAction(StrEnum):
    """What happens to a value holding PII its category does not allow."""

    REJECT = "reject"
    REDACT = "redact"
    QUARANTINE = "quarantine"


class UnknownAction(StrEnum):
    """What happens to an attribute, event or property the policy does not declare."""

    REJECT = "reject"
    QUARANTINE = "quarantine"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CategoryPolicy(_Frozen):
    """One data category."""

    description: str = ""
    special: bool = False  # GDPR Art. 9
    allowed_pii: tuple[str, ...] = ()
    on_pii: PiiAction


class AttributePolicy(_Frozen):
    """One attribute key."""

    category: str
    type: ValueType
    max_length: Annotated[int, Field(ge=1, le=4096)] = 256


class EventPolicy(_Frozen):
    """One event name and its properties."""

    category: str
    properties: dict[Annotated[str, Field(pattern=_NAME)], ValueType] = Field(default_factory=dict)


class FactsPolicy(_Frozen):
    """``policies/categories.yaml``."""

    version: int = Field(ge=1, le=1)
    accept_special_categories: bool = False
    categories: dict[Annotated[str, Field(pattern=_NAME)], CategoryPolicy]
    attributes: dict[Annotated[str, Field(pattern=_NAME)], AttributePolicy]
    events: dict[Annotated[str, Field(pattern=_NAME)], EventPolicy] = Field(default_factory=dict)
    unknown_attributes: UnknownAction = UnknownAction.REJECT
    unknown_events: UnknownAction = UnknownAction.QUARANTINE
    unknown_properties: UnknownAction = UnknownAction.REJECT
    scanner: ScannerConfig = Field(default_factory=ScannerConfig)

    @model_validator(mode="after")
    def _categories_exist(self) -> Self:
        for section, items in (("attributes", self.attributes), ("events", self.events)):
            for name, item in items.items():
                if item.category not in self.categories:
                    raise PolicyFieldProblem(
                        f"{section}.{name}.category",
                        f"unknown category {item.category!r}; declared: "
                        + ", ".join(sorted(self.categories)),
                    )
        return self

    def check_entities(self, known: frozenset[str], file: str) -> None:
        """Every ``allowed_pii`` entity must be one the scanner can report."""
        for name, category in self.categories.items():
            for index, entity in enumerate(category.allowed_pii):
                if entity not in known:
                    raise PolicyFileError(
                        file,
                        f"categories.{name}.allowed_pii.{index}",
                        f"unknown entity type {entity!r}; the scanner knows "
                        + ", ".join(sorted(known)),
                    )


def load_facts_policy(path: Path) -> FactsPolicy:
    """Load and validate ``categories.yaml``; any problem raises :class:`PolicyFileError`."""
    return load_policy_file(path, FactsPolicy)


@dataclass(frozen=True, slots=True)
class EventInput:
    """An event as received: name, time and properties (raw, not yet checked)."""

    name: str
    at: datetime
    properties: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class FactsOf:
    """The traits and events of one request, as :meth:`FactIntake.prepare_many` takes them."""

    traits: Mapping[str, Any] | None
    events: Sequence[EventInput]
    at: datetime
    pointer: str = "#"


class PiiRejectedError(InvalidFieldError):
    """PII was found where the category's action is ``reject``."""

    code = "pii-rejected"


class _ScanCache:
    """Bounded LRU of scan results, keyed by a keyed digest (HMAC-SHA256) of the value.

    Marketing values repeat a lot (age bands, cities, SKUs), and presidio costs far more than a
    dictionary lookup. The cache never holds the values themselves, only digests of them, and
    those digests are keyed with a random key made for this cache when it is created, kept in
    this process's memory only and never written anywhere. Why keyed: an unkeyed SHA-256 of an
    e-mail address *is* the "hashed e-mail" that ad-tech partners match people on, and a digest
    of a short value (a phone number, a name) is reversed by hashing candidates until one
    matches. Unkeyed, every digest that leaves the process (a core or heap dump, a swapped-out
    page) would be a linkable copy of the value; keyed with a key that exists only in this
    process, a digest alone can neither be matched against a hashed-e-mail list nor reversed by
    a dictionary attack, and digests of two processes cannot be joined.
    """

    def __init__(self, size: int) -> None:
        self._key = secrets.token_bytes(32)
        self._items: BoundedMap[bytes, tuple[PiiFinding, ...]] = BoundedMap(size)

    def _digest(self, text: str) -> bytes:
        # surrogatepass: a lone surrogate (valid in JSON) must not turn a scan into a 500.
        return hmac.digest(self._key, text.encode("utf-8", "surrogatepass"), "sha256")

    def scan_many(self, scanner: PiiScanner, texts: Sequence[str]) -> list[tuple[PiiFinding, ...]]:
        """The findings of every text, in order: cached ones from the cache, the others from one
        ``scanner.scan_many`` call over the distinct texts not cached (so a batch of values
        reaches the NER model as one batch).

        A batch repeats its values (a bulk chunk of 500 rows holds a few hundred distinct
        ones), so each distinct text is digested and looked up once; the texts themselves are
        held only for the length of this call, as the request that carried them is.
        """
        distinct = list(dict.fromkeys(texts))
        keys = [self._digest(t) for t in distinct]
        cached = self._items.get_many(keys)
        missing = [i for i, key in enumerate(keys) if key not in cached]
        if missing:
            scanned = scanner.scan_many([distinct[i] for i in missing])
            made = [(keys[i], tuple(f)) for i, f in zip(missing, scanned, strict=True)]
            self._items.put_many(made)
            cached.update(made)
        by_text = {text: cached[key] for text, key in zip(distinct, keys, strict=True)}
        return [by_text[t] for t in texts]


@dataclass(slots=True)
class _Value:
    """One scalar under inspection: where it is, its category, and its (possibly edited) value.

    ``scanned`` is False for a value whose declared type leaves no room for personal data in
    its text: a ``datetime`` value is stored as ``datetime.isoformat()`` of the parsed instant
    (digits and ``-T:.+``, see :func:`_datetime`), never as the text that came in. The scanner
    has nothing to find in it but false alarms: the fractional seconds of
    ``2025-12-14T17:03:22.835817+01:00`` read as a national phone number ("22.835817"), which
    would redact or reject a valid timestamp. The instant itself is behavioural data that its
    category governs; the scanner reports no DATE_TIME on purpose (see
    :func:`privacy.scanning.presidio_scanner._recognizers`).
    """

    pointer: str
    category: str
    value: Any
    findings: tuple[PiiFinding, ...] = ()
    scanned: bool = True


@dataclass(slots=True)
class _Draft:
    """A fact between checking and deciding: its values carry scan findings."""

    kind: FactKind
    name: str
    category: str
    at: datetime
    payload: dict[str, _Value] | _Value
    quarantine: bool


def _undeclared(reason: str, what: str, where: str) -> InvalidFieldError:
    return InvalidFieldError(reason, f"{what} is not declared in policies/categories.yaml", where)


class FactIntake:
    """Turns raw traits and events into :class:`FactInput` according to the policy."""

    def __init__(
        self, policy: FactsPolicy, scanner: PiiScanner | None, cache_size: int = 100_000
    ) -> None:
        self._policy = policy
        self._scanner = scanner
        self._cache = _ScanCache(cache_size)
        # Looked up once per scanned value in _decide: read from the frozen policy once here.
        self._allowed = {
            name: frozenset(category.allowed_pii) for name, category in policy.categories.items()
        }
        self._on_pii = {name: category.on_pii for name, category in policy.categories.items()}
        self._refused_special = frozenset(
            name
            for name, category in policy.categories.items()
            if category.special and not policy.accept_special_categories
        )

    @property
    def policy(self) -> FactsPolicy:
        """The facts policy."""
        return self._policy

    def prepare(
        self,
        traits: Mapping[str, Any] | None,
        events: Sequence[EventInput],
        at: datetime,
        pointer: str = "#",
    ) -> tuple[FactInput, ...]:
        """Check, scan and classify; raises :class:`BatchValidationError` with every problem
        (and :class:`InputLimitError` for a text over the scanner's limit)."""
        (result,) = self.prepare_many([FactsOf(traits, events, at, pointer)])
        if isinstance(result, BatchValidationError | InputLimitError):
            raise result
        return result

    def prepare_many(
        self, items: Sequence[FactsOf]
    ) -> list[tuple[FactInput, ...] | BatchValidationError | InputLimitError]:
        """:meth:`prepare` for several requests at once: one result per item, in order.

        Each item is checked and decided on its own: an invalid item does not affect the
        others, and gets the error :meth:`prepare` would raise for it (a
        :class:`BatchValidationError`, or the scanner's :class:`InputLimitError` for a text
        over its limit). The string values of all valid items are scanned together: the values
        the scan cache does not know reach the scanner in one batch, so the NER model runs once
        over them (``nlp.pipe``) instead of once per request. The findings are the same as
        item by item.
        """
        results: list[tuple[FactInput, ...] | BatchValidationError | InputLimitError | None] = []
        pending: dict[int, list[_Draft]] = {}
        for item in items:
            errors: list[InvalidFieldError] = []
            drafts = [
                *self._attribute_drafts(item.traits or {}, item.at, item.pointer, errors),
                *self._event_drafts(item.events, item.pointer, errors),
            ]
            if errors:
                results.append(BatchValidationError(errors))
                continue
            pending[len(results)] = drafts
            results.append(None)
        try:
            self._scan([d.payload for drafts in pending.values() for d in drafts])
        except InputLimitError:
            # A text over the scanner's limit fails the whole batch; scan item by item so that
            # only its own item fails, as it would have alone.
            for index, drafts in list(pending.items()):
                try:
                    self._scan([d.payload for d in drafts])
                except InputLimitError as exc:
                    results[index] = exc
                    del pending[index]
        for index, drafts in pending.items():
            errors = []
            facts = [self._decide(draft, errors) for draft in drafts]
            results[index] = BatchValidationError(errors) if errors else tuple(facts)
        return [r if r is not None else () for r in results]

    def check_rule_values(self, values: Sequence[tuple[str, str, Any]]) -> None:
        """PII-scan the constants of audience rules: ``(pointer, attribute, value)`` each.

        A value is scanned under its attribute's category like an incoming trait. PII the
        category does not allow is refused (:class:`PiiRejectedError`, 422) whatever the
        category's ``on_pii`` says: a rule constant cannot be quarantined, and redacting it
        would silently change which persons the segment selects. Raises
        :class:`BatchValidationError` with every problem (entity types only, never the value).
        """
        items: list[_Value] = []
        for pointer, attribute, value in values:
            declared = self._policy.attributes.get(attribute)
            if declared is None:
                continue  # validate_rules refuses undeclared attributes
            elements = list(value) if isinstance(value, tuple | list) else [value]
            items.extend(
                _Value(pointer, declared.category, element)
                for element in elements
                if isinstance(element, str)
            )
        self._scan(items)
        errors: list[InvalidFieldError] = []
        for item in items:
            allowed = set(self._policy.categories[item.category].allowed_pii)
            unexpected = sorted({f.entity_type for f in item.findings} - allowed)
            if unexpected:
                errors.append(
                    PiiRejectedError(
                        "pii_not_allowed",
                        f"found {', '.join(unexpected)} in a rule value of a {item.category} "
                        "attribute, which does not accept it",
                        item.pointer,
                    )
                )
        if errors:
            raise BatchValidationError(errors)

    def _attribute_drafts(
        self,
        traits: Mapping[str, Any],
        at: datetime,
        pointer: str,
        errors: list[InvalidFieldError],
    ) -> list[_Draft]:
        drafts = []
        for name, value in traits.items():
            where = f"{pointer}/traits/{name}"
            rules = self._policy.attributes.get(name)
            if rules is None:
                if self._policy.unknown_attributes is UnknownAction.REJECT:
                    errors.append(_undeclared("unknown_attribute", "attribute", where))
                else:
                    item = _Value(where, UNKNOWN_CATEGORY, value)
                    drafts.append(
                        _Draft(FactKind.ATTRIBUTE, name, UNKNOWN_CATEGORY, at, item, True)
                    )
                continue
            try:
                self._check_special(rules.category, where)
                checked = _typed(value, rules.type, rules.max_length, where)
            except InvalidFieldError as exc:
                errors.append(exc)
                continue
            item = _Value(where, rules.category, checked, scanned=_scanned(rules.type))
            drafts.append(_Draft(FactKind.ATTRIBUTE, name, rules.category, at, item, False))
        return drafts

    def _event_drafts(
        self, events: Sequence[EventInput], pointer: str, errors: list[InvalidFieldError]
    ) -> list[_Draft]:
        drafts = []
        for index, event in enumerate(events):
            where = f"{pointer}/events/{index}"
            rules = self._policy.events.get(event.name)
            if rules is None:
                if self._policy.unknown_events is UnknownAction.REJECT:
                    errors.append(_undeclared("unknown_event", "event", f"{where}/name"))
                    continue
                props = {
                    key: _Value(f"{where}/properties/{key}", UNKNOWN_CATEGORY, value)
                    for key, value in event.properties.items()
                }
                drafts.append(
                    _Draft(FactKind.EVENT, event.name, UNKNOWN_CATEGORY, event.at, props, True)
                )
                continue
            props, quarantine = {}, False
            for key, value in event.properties.items():
                prop_where = f"{where}/properties/{key}"
                value_type = rules.properties.get(key)
                if value_type is None:
                    if self._policy.unknown_properties is UnknownAction.REJECT:
                        errors.append(_undeclared("unknown_property", "property", prop_where))
                        continue
                    quarantine = True
                    props[key] = _Value(prop_where, rules.category, value)
                    continue
                try:
                    props[key] = _Value(
                        prop_where,
                        rules.category,
                        _typed(value, value_type, 1024, prop_where),
                        scanned=_scanned(value_type),
                    )
                except InvalidFieldError as exc:
                    errors.append(exc)
            try:
                self._check_special(rules.category, where)
            except InvalidFieldError as exc:
                errors.append(exc)
            drafts.append(
                _Draft(FactKind.EVENT, event.name, rules.category, event.at, props, quarantine)
            )
        return drafts

    def _check_special(self, category: str, where: str) -> None:
        if category in self._refused_special:
            raise InvalidFieldError(
                "special_category",
                f"{category} is a special category (GDPR Art. 9) and is not accepted",
                where,
            )

    def _scan(self, payloads: Sequence[dict[str, _Value] | _Value]) -> None:
        """Scan every string of every payload in one batch; findings go onto the values."""
        if self._scanner is None:
            return
        targets = _scan_targets(payloads)
        if not targets:
            return
        texts = [text for _, _, text in targets]
        for (target, slot, _), findings in zip(
            targets, self._cache.scan_many(self._scanner, texts), strict=True
        ):
            if not findings:
                continue
            target.findings += findings
            if slot is None:
                target.value = (target.value, findings)  # keep findings with the text to redact
            else:
                target.value[slot] = (target.value[slot], findings)

    def _decide(self, draft: _Draft, errors: list[InvalidFieldError]) -> FactInput:
        payload = draft.payload
        values = list(payload.values()) if isinstance(payload, dict) else [payload]
        quarantine = draft.quarantine
        found: set[str] = set()
        if any(item.findings for item in values):
            quarantine = self._settle_findings(values, found, errors) or quarantine
        # A value without findings is as checked: _scan replaces a text by (text, findings)
        # only where it found something, so there is nothing to strip from it.
        if isinstance(payload, dict):
            body: Any = {"properties": {k: v.value for k, v in payload.items()}}
        else:
            body = payload.value
        return FactInput(
            draft.kind,
            draft.name,
            draft.category,
            draft.at,
            _encode(body).encode(),
            FactStatus.QUARANTINED if quarantine else FactStatus.ACTIVE,
            tuple(sorted(found)),
        )

    def _settle_findings(
        self, values: Sequence[_Value], found: set[str], errors: list[InvalidFieldError]
    ) -> bool:
        """Apply the categories' actions to the values that have findings: refuse (into
        ``errors``), redact, or strip the findings and answer True (quarantine)."""
        quarantine = False
        for item in values:
            if not item.findings:
                continue
            allowed = self._allowed.get(item.category, frozenset())
            unexpected = sorted({f.entity_type for f in item.findings} - allowed)
            if not unexpected:
                item.value = _strip(item.value, None)
                continue
            found.update(unexpected)
            action = (
                PiiAction.QUARANTINE
                if item.category == UNKNOWN_CATEGORY
                else self._on_pii[item.category]
            )
            if action is PiiAction.REJECT:
                item.value = _strip(item.value, None)  # refused below; keep the payload plain
                errors.append(
                    PiiRejectedError(
                        "pii_not_allowed",
                        f"found {', '.join(unexpected)} in a {item.category} field, which does not "
                        "accept it",
                        item.pointer,
                    )
                )
            elif action is PiiAction.QUARANTINE:
                quarantine = True
                item.value = _strip(item.value, None)
            else:
                item.value = _strip(item.value, set(unexpected))
        return quarantine


# One encoder for every payload: json.dumps with non-default options builds a new JSONEncoder on
# each call. The output is the same (compact, keys sorted, ASCII-escaped).
_encode = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


def _scan_targets(
    payloads: Sequence[dict[str, _Value] | _Value],
) -> list[tuple[_Value, int | None, str]]:
    """Every string the scanner reads: (value, list position or None, text), in order."""
    targets: list[tuple[_Value, int | None, str]] = []
    for payload in payloads:
        values = payload.values() if isinstance(payload, dict) else (payload,)
        for item in values:
            if not item.scanned:
                continue
            if isinstance(item.value, str):
                targets.append((item, None, item.value))
            elif isinstance(item.value, list):
                targets.extend(
                    (item, position, element)
                    for position, element in enumerate(item.value)
                    if isinstance(element, str)
                )
    return targets


def _strip(value: Any, redact_types: set[str] | None) -> Any:
    """Drop the findings the scan attached; redact the spans of ``redact_types`` if given."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        text, findings = value
        if redact_types:
            text = redact(text, [f for f in findings if f.entity_type in redact_types])
        return text
    if isinstance(value, list):
        return [_strip(element, redact_types) for element in value]
    return value


def _string(value: Any, max_length: int) -> str:
    if not isinstance(value, str):
        raise TypeError("must be a string")
    if len(value) > max_length:
        raise ValueError(f"longer than {max_length} characters")
    return value


def _integer(value: Any, _max_length: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("must be an integer")
    return value


def _number(value: Any, _max_length: int) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("must be a number")
    return value


def _boolean(value: Any, _max_length: int) -> bool:
    if not isinstance(value, bool):
        raise TypeError("must be true or false")
    return value


def _datetime(value: Any, _max_length: int) -> str:
    message = "must be an RFC 3339 date-time string with a UTC offset"
    if not isinstance(value, str):
        raise TypeError(message)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise TypeError(message) from None
    if parsed.tzinfo is None:
        raise TypeError(message)
    return parsed.isoformat()


def _string_list(value: Any, max_length: int) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("must be a list of strings")
    if len(value) > MAX_LIST_ITEMS:
        raise ValueError(f"more than {MAX_LIST_ITEMS} items")
    if any(len(v) > max_length for v in value):
        raise ValueError(f"an item is longer than {max_length} characters")
    return list(value)


_CHECKS: dict[ValueType, Callable[[Any, int], Any]] = {
    ValueType.STRING: _string,
    ValueType.INTEGER: _integer,
    ValueType.NUMBER: _number,
    ValueType.BOOLEAN: _boolean,
    ValueType.DATETIME: _datetime,
    ValueType.STRING_LIST: _string_list,
}


def _scanned(value_type: ValueType) -> bool:
    """Whether a checked value of ``value_type`` goes through the PII scanner (see _Value)."""
    return value_type is not ValueType.DATETIME


def _typed(value: Any, value_type: ValueType, max_length: int, where: str) -> Any:
    """Check ``value`` against ``value_type``; returns the canonical value.

    Messages say what is wrong with the value, never what the value is.
    """
    try:
        return _CHECKS[value_type](value, max_length)
    except TypeError as exc:
        raise InvalidFieldError("wrong_type", str(exc), where) from None
    except ValueError as exc:
        raise InvalidFieldError("too_long", str(exc), where) from None
