"""Audience (segment) definitions: rules over attributes and events, for one purpose.

An audience is a *definition*, never a list of persons: its members are computed at read time
by :class:`privacy.access.reads.ReadService`, through the policy engine, so a withdrawn consent or
an
erasure takes effect on the next page without anyone maintaining a member table.

Rules (all of them must hold):

* ``attributes``: predicates on the person's latest active value of an attribute:
  ``eq``/``neq``/``in`` on any type (for a ``string_list`` attribute: the list contains the
  value / does not contain it / contains one of the values), ``gt``/``gte``/``lt``/``lte`` on
  ``integer`` and ``number`` attributes, ``exists``. A person without a readable value of the
  attribute (none stored, or past the purpose's retention) fails every predicate but none
  (``neq`` included: "not Lisbon" means a known city that is not Lisbon).
* ``events``: at least ``min_count`` events named ``event`` in the last ``within_days`` days.
  Pushed down to the store (:class:`identity.model.EventCountRule`), so only persons who pass
  them are loaded at all.
* ``any_of`` (optional): attribute predicates of which at least one must hold (one OR group;
  event rules are AND-only because only those are pushed down to the store).

Validation (:func:`validate_rules`) happens when an audience is defined: every attribute and
event must be declared in ``categories.yaml``, its category must be one the purpose may read, an
event window may not reach past the purpose's retention for the event's category (such events
could never be used), and values must have the attribute's type. Errors name the JSON pointer,
never the value.

Definitions hold no personal data (names, operators and the constants the segment is defined
with), so they live in the control database beside the API keys (:class:`SqliteAudienceStore`).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from identity.errors import BatchValidationError, InvalidFieldError, StoreUnavailableError
from privacy.access.purposes import Purpose
from privacy.scanning.facts import FactsPolicy, ValueType
from storage.sqlite import open_migrated

MAX_RULES = 20
MAX_IN_VALUES = 100
MAX_WINDOW_DAYS = 3_650

Scalar = str | int | float | bool


class AttributeOp(StrEnum):
    """Operators of attribute predicates."""

    EQ = "eq"
    NEQ = "neq"
    IN = "in"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    EXISTS = "exists"


_NUMERIC_OPS = frozenset({AttributeOp.GT, AttributeOp.GTE, AttributeOp.LT, AttributeOp.LTE})
_NUMERIC_TYPES = frozenset({ValueType.INTEGER, ValueType.NUMBER})


@dataclass(frozen=True, slots=True)
class AttributeRule:
    """``attribute op value`` on the person's latest readable value of ``attribute``."""

    attribute: str
    op: AttributeOp
    value: Scalar | tuple[Scalar, ...] | None = None

    def matches(self, present: bool, value: Any) -> bool:  # noqa: PLR0911 - one return per op
        """Whether a person whose value is ``value`` (``present``: there is one) passes."""
        if self.op is AttributeOp.EXISTS:
            return present
        if not present:
            return False
        items = value if isinstance(value, list) else [value]
        if self.op is AttributeOp.EQ:
            return any(_same(item, self.value) for item in items)
        if self.op is AttributeOp.NEQ:
            return not any(_same(item, self.value) for item in items)
        if self.op is AttributeOp.IN:
            wanted = self.value if isinstance(self.value, tuple) else (self.value,)
            return any(_same(item, w) for item in items for w in wanted)
        if not _is_number(value) or not _is_number(self.value):
            return False
        if self.op is AttributeOp.GT:
            return bool(value > self.value)
        if self.op is AttributeOp.GTE:
            return bool(value >= self.value)
        if self.op is AttributeOp.LT:
            return bool(value < self.value)
        return bool(value <= self.value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(a: object, b: object) -> bool:
    # True == 1 in Python; a boolean attribute must not equal the number 1.
    return a == b and isinstance(a, bool) == isinstance(b, bool)


@dataclass(frozen=True, slots=True)
class EventRule:
    """At least ``min_count`` events named ``event`` within the last ``within_days`` days."""

    event: str
    within_days: int
    min_count: int = 1


@dataclass(frozen=True, slots=True)
class AudienceRules:
    """The rules of an audience: every attribute and event rule, and one of ``any_of``."""

    attributes: tuple[AttributeRule, ...] = ()
    events: tuple[EventRule, ...] = ()
    any_of: tuple[AttributeRule, ...] = ()

    @property
    def attribute_names(self) -> tuple[str, ...]:
        """Every attribute the rules look at (what a member scan must load), sorted."""
        return tuple(sorted({r.attribute for r in (*self.attributes, *self.any_of)}))

    def matches(self, values: dict[str, Any]) -> bool:
        """Whether the attribute rules hold for ``values`` (name -> readable latest value)."""
        for rule in self.attributes:
            if not rule.matches(rule.attribute in values, values.get(rule.attribute)):
                return False
        if self.any_of:
            return any(
                r.matches(r.attribute in values, values.get(r.attribute)) for r in self.any_of
            )
        return True

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form (what the store keeps and the API returns)."""
        return {
            "attributes": [_attribute_json(r) for r in self.attributes],
            "events": [
                {"event": r.event, "within_days": r.within_days, "min_count": r.min_count}
                for r in self.events
            ],
            "any_of": [_attribute_json(r) for r in self.any_of],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AudienceRules:
        """The inverse of :meth:`to_json` (for stored, already validated definitions)."""
        return cls(
            attributes=tuple(_attribute_rule(r) for r in data.get("attributes", [])),
            events=tuple(
                EventRule(str(r["event"]), int(r["within_days"]), int(r["min_count"]))
                for r in data.get("events", [])
            ),
            any_of=tuple(_attribute_rule(r) for r in data.get("any_of", [])),
        )


def _attribute_json(rule: AttributeRule) -> dict[str, Any]:
    value = list(rule.value) if isinstance(rule.value, tuple) else rule.value
    return {"attribute": rule.attribute, "op": rule.op.value, "value": value}


def _attribute_rule(data: dict[str, Any]) -> AttributeRule:
    value = data.get("value")
    return AttributeRule(
        str(data["attribute"]),
        AttributeOp(data["op"]),
        tuple(value) if isinstance(value, list) else value,
    )


@dataclass(frozen=True, slots=True)
class Audience:
    """A stored audience definition."""

    audience_id: str
    name: str
    purpose: str
    rules: AudienceRules
    created_at: datetime
    created_by: str  # the API key id that defined it
    owner: str = ""  # the consumer it belongs to; other consumers get a 404


def _value_fits(value: object, value_type: ValueType) -> bool:
    if value_type in (ValueType.STRING, ValueType.STRING_LIST, ValueType.DATETIME):
        return isinstance(value, str)
    if value_type is ValueType.INTEGER:
        return isinstance(value, int) and not isinstance(value, bool)
    if value_type is ValueType.NUMBER:
        return _is_number(value)
    if value_type is ValueType.BOOLEAN:
        return isinstance(value, bool)
    return False  # pragma: no cover - every ValueType is handled above


def _check_attribute(
    rule: AttributeRule,
    pointer: str,
    purpose_id: str,
    purpose: Purpose,
    facts: FactsPolicy,
    errors: list[InvalidFieldError],
) -> None:
    declared = facts.attributes.get(rule.attribute)
    if declared is None:
        errors.append(
            InvalidFieldError("unknown_attribute", "not declared in categories.yaml", pointer)
        )
        return
    if declared.category not in purpose.categories:
        errors.append(
            InvalidFieldError(
                "category_not_allowed",
                f"{rule.attribute!r} is in category {declared.category!r}, which purpose "
                f"{purpose_id!r} may not read",
                pointer,
            )
        )
        return
    if rule.op is AttributeOp.EXISTS:
        if rule.value is not None:
            errors.append(InvalidFieldError("invalid_value", "exists takes no value", pointer))
        return
    if rule.op in _NUMERIC_OPS and declared.type not in _NUMERIC_TYPES:
        errors.append(
            InvalidFieldError(
                "invalid_operator",
                f"{rule.op.value} needs an integer or number attribute; {rule.attribute!r} is "
                f"{declared.type.value}",
                pointer,
            )
        )
        return
    values: tuple[Scalar, ...]
    if rule.op is AttributeOp.IN:
        values = rule.value if isinstance(rule.value, tuple) else ()
        if not values or len(values) > MAX_IN_VALUES:
            errors.append(
                InvalidFieldError(
                    "invalid_value", f"in takes a list of 1 to {MAX_IN_VALUES} values", pointer
                )
            )
            return
    else:
        if rule.value is None or isinstance(rule.value, tuple):
            errors.append(
                InvalidFieldError("invalid_value", f"{rule.op.value} takes one value", pointer)
            )
            return
        values = (rule.value,)
    if not all(_value_fits(v, declared.type) for v in values):
        errors.append(
            InvalidFieldError(
                "invalid_value",
                f"the value must be of {rule.attribute!r}'s type ({declared.type.value})",
                pointer,
            )
        )


def validate_rules(
    purpose_id: str, purpose: Purpose, facts: FactsPolicy, rules: AudienceRules
) -> None:
    """Check ``rules`` against ``categories.yaml`` and the purpose (see the module docstring).

    Raises :class:`BatchValidationError` listing every problem by JSON pointer.
    """
    errors: list[InvalidFieldError] = []
    if not rules.attributes and not rules.events and not rules.any_of:
        errors.append(
            InvalidFieldError("empty_rules", "an audience needs at least one rule", "#/rules")
        )
    for section, items in (("attributes", rules.attributes), ("any_of", rules.any_of)):
        if len(items) > MAX_RULES:
            errors.append(
                InvalidFieldError("too_many_rules", f"at most {MAX_RULES}", f"#/rules/{section}")
            )
            continue
        for index, rule in enumerate(items):
            pointer = f"#/rules/{section}/{index}"
            _check_attribute(rule, pointer, purpose_id, purpose, facts, errors)
    if len(rules.events) > MAX_RULES:
        errors.append(InvalidFieldError("too_many_rules", f"at most {MAX_RULES}", "#/rules/events"))
    for index, event_rule in enumerate(rules.events[:MAX_RULES]):
        pointer = f"#/rules/events/{index}"
        declared = facts.events.get(event_rule.event)
        if declared is None:
            errors.append(
                InvalidFieldError("unknown_event", "not declared in categories.yaml", pointer)
            )
            continue
        access = purpose.categories.get(declared.category)
        if access is None:
            errors.append(
                InvalidFieldError(
                    "category_not_allowed",
                    f"{event_rule.event!r} is in category {declared.category!r}, which purpose "
                    f"{purpose_id!r} may not read",
                    pointer,
                )
            )
            continue
        if not 1 <= event_rule.within_days <= min(access.retention_days, MAX_WINDOW_DAYS):
            errors.append(
                InvalidFieldError(
                    "past_retention",
                    f"within_days must be between 1 and {access.retention_days} (the retention "
                    f"of {declared.category!r} for {purpose_id!r})",
                    pointer + "/within_days",
                )
            )
        if not 1 <= event_rule.min_count <= 1_000_000:
            errors.append(
                InvalidFieldError(
                    "invalid_value", "min_count must be between 1 and 1000000", pointer
                )
            )
    if errors:
        raise BatchValidationError(errors)


class AudienceStoreUnavailableError(StoreUnavailableError):
    """The control database could not store or load an audience definition."""

    code = "audience-store-unavailable"


class AudienceStore(Protocol):
    """Audience definitions (adapter: :class:`SqliteAudienceStore`)."""

    def create(
        self, name: str, purpose: str, rules: AudienceRules, created_by: str, owner: str
    ) -> Audience:
        """Store a (validated) definition under a new random id, owned by ``owner``."""
        ...

    def get(self, audience_id: str) -> Audience | None:
        """The definition, or ``None``."""
        ...

    def list_audiences(self, purposes: Collection[str] | None, limit: int = 500) -> list[Audience]:
        """Definitions for ``purposes`` (``None``: every purpose), newest first."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


def new_audience_id() -> str:
    """A random, opaque audience id: ``aud_`` + 80 bits from the OS CSPRNG."""
    return "aud_" + secrets.token_hex(10)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS audiences (audience_id TEXT PRIMARY KEY,
    name TEXT NOT NULL, purpose TEXT NOT NULL, rules TEXT NOT NULL,
    created_at TEXT NOT NULL, created_by TEXT NOT NULL, owner TEXT NOT NULL DEFAULT '');
"""


def _add_owner_column(conn: sqlite3.Connection) -> None:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(audiences)")}
    if "owner" not in columns:  # defined before ownership: the key's default consumer
        conn.execute("ALTER TABLE audiences ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
        conn.execute("UPDATE audiences SET owner = created_by")


class SqliteAudienceStore:
    """Audience definitions in their own table of the control database (``control.sqlite3``).

    The file is shared with :class:`privacy.access.api_keys.ApiKeyStore` (each opens its own
    connection;
    WAL lets them coexist). Definitions are never updated: a changed segment is a new audience, so
    an export can always be traced back to the exact rules it was made with.
    """

    def __init__(self, path: Path, busy_timeout_ms: int = 10_000) -> None:
        self._lock = threading.Lock()
        # The same opener as every other service-state file (storage/sqlite.py): owner-only,
        # WAL, synchronous=FULL, the schema created in one write transaction.
        self._conn = open_migrated(
            path,
            busy_timeout_ms,
            AudienceStoreUnavailableError,
            "control database",
            _SCHEMA,
            None,
            after=_add_owner_column,
        )

    def create(
        self, name: str, purpose: str, rules: AudienceRules, created_by: str, owner: str
    ) -> Audience:
        """Store a (validated) definition under a new random id, owned by ``owner``."""
        audience = Audience(
            new_audience_id(), name, purpose, rules, datetime.now(UTC), created_by, owner
        )
        try:
            with self._lock:
                self._conn.execute(
                    "INSERT INTO audiences (audience_id, name, purpose, rules, created_at, "
                    "created_by, owner) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        audience.audience_id,
                        name,
                        purpose,
                        json.dumps(rules.to_json(), sort_keys=True),
                        audience.created_at.isoformat(),
                        created_by,
                        owner,
                    ),
                )
        except sqlite3.Error as exc:
            raise AudienceStoreUnavailableError(f"cannot store the audience: {exc}") from exc
        return audience

    def get(self, audience_id: str) -> Audience | None:
        """The definition, or ``None``."""
        try:
            with self._lock:
                row = self._conn.execute(
                    "SELECT audience_id, name, purpose, rules, created_at, created_by, owner "
                    "FROM audiences WHERE audience_id = ?",
                    (audience_id,),
                ).fetchone()
        except sqlite3.Error as exc:
            raise AudienceStoreUnavailableError(f"cannot load the audience: {exc}") from exc
        if row is None:
            return None
        return Audience(
            row[0],
            row[1],
            row[2],
            AudienceRules.from_json(json.loads(row[3])),
            datetime.fromisoformat(row[4]),
            row[5],
            row[6],
        )

    def list_audiences(self, purposes: Collection[str] | None, limit: int = 500) -> list[Audience]:
        """Definitions for ``purposes`` (``None``: every purpose), newest first."""
        sql = "SELECT audience_id, name, purpose, rules, created_at, created_by FROM audiences"
        params: list[object] = []
        if purposes is not None:
            wanted = sorted(purposes)
            if not wanted:
                return []
            sql += f" WHERE purpose IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        sql += " ORDER BY created_at DESC, audience_id LIMIT ?"
        params.append(limit)
        try:
            with self._lock:
                rows = self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise AudienceStoreUnavailableError(f"cannot list audiences: {exc}") from exc
        return [
            Audience(
                row[0],
                row[1],
                row[2],
                AudienceRules.from_json(json.loads(row[3])),
                datetime.fromisoformat(row[4]),
                row[5],
            )
            for row in rows
        ]

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


__all__ = [
    "AttributeOp",
    "AttributeRule",
    "Audience",
    "AudienceRules",
    "EventRule",
    "SqliteAudienceStore",
    "validate_rules",
]
