"""The identity policy: which identifier types exist and how they may be linked.

Loaded from ``policies/identity.yaml`` into frozen pydantic models with ``extra="forbid"`` so a
typo in a policy file stops startup with the file and field named, instead of being ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Self, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from identity.errors import InvalidIdentifierError, PolicyFileError, UnknownIdentifierTypeError
from identity.identifiers import NORMALIZERS, NormalizedIdentifier, NormalizeFn, Normalizer

_TYPE_NAME = r"^[a-z][a-z0-9_]{0,39}$"


class PolicyFieldProblem(Exception):  # noqa: N818 - a signal inside model hooks, not an API error
    """Raised inside model hooks; not a ValueError so pydantic does not re-locate it at the root."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class IdentifierTypePolicy(BaseModel):
    """Rules for one identifier type."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = ""
    normalizer: Normalizer
    priority: Annotated[int, Field(ge=0, le=1000)]
    max_per_person: Annotated[int, Field(ge=1, le=10_000)]
    max_length: Annotated[int, Field(ge=1, le=4096)] = 256
    blocked_values: tuple[str, ...] = ()
    blocked_patterns: tuple[str, ...] = ()
    # Keep the normalized value, encrypted in the vault, for activation (audience export,
    # access requests) and for re-hashing after a key rotation. Off by default: a value that is
    # not kept cannot leak.
    keep_raw: bool = False

    @field_validator("blocked_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for index, pattern in enumerate(patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"pattern {index} is not a valid regular expression: {exc}"
                ) from exc
        return patterns


class IdentityPolicy(BaseModel):
    """All identifier types, keyed by type name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(ge=1, le=1)
    types: dict[Annotated[str, Field(pattern=_TYPE_NAME)], IdentifierTypePolicy]

    @model_validator(mode="after")
    def _at_least_one_type(self) -> Self:
        if not self.types:
            raise ValueError("at least one identifier type must be declared")
        return self

    def model_post_init(self, context: Any, /) -> None:
        # Blocked values are compared after normalization and case-insensitively: a list entry
        # `null` is meant to catch `NULL` and `Null` too, whatever the type's normalizer keeps.
        # Values that do not normalize could never match and are a mistake in the file.
        blocked: dict[str, frozenset[str]] = {}
        compiled: dict[str, tuple[re.Pattern[str], ...]] = {}
        for name, rules in self.types.items():
            normalize = NORMALIZERS[rules.normalizer]
            values = set()
            for index, raw in enumerate(rules.blocked_values):
                try:
                    values.add(normalize(name, raw, "US").casefold())
                except InvalidIdentifierError as exc:
                    raise PolicyFieldProblem(
                        f"types.{name}.blocked_values.{index}",
                        f"does not normalize ({exc.reason}), so it could never match",
                    ) from None
            blocked[name] = frozenset(values)
            compiled[name] = tuple(re.compile(p) for p in rules.blocked_patterns)
        object.__setattr__(self, "_blocked", blocked)
        object.__setattr__(self, "_patterns", compiled)
        # type -> (max_length, normalizer), for normalize_valid (one dict lookup per value).
        object.__setattr__(
            self,
            "_normalizers",
            {
                name: (rules.max_length, NORMALIZERS[rules.normalizer])
                for name, rules in self.types.items()
            },
        )

    @property
    def type_names(self) -> tuple[str, ...]:
        """Declared identifier types, highest priority first."""
        return tuple(sorted(self.types, key=lambda t: (-self.types[t].priority, t)))

    def rules(self, identifier_type: str) -> IdentifierTypePolicy:
        """The rules for ``identifier_type``; raises :class:`UnknownIdentifierTypeError`."""
        try:
            return self.types[identifier_type]
        except KeyError:
            raise UnknownIdentifierTypeError(identifier_type, self.type_names) from None

    def normalize(
        self, identifier_type: str, value: str, region: str | None
    ) -> NormalizedIdentifier:
        """Normalize one raw identifier, enforcing the type's length limit first."""
        rules = self.rules(identifier_type)
        if len(value) > rules.max_length:
            raise InvalidIdentifierError(
                identifier_type,
                "too_long",
                f"value is longer than {rules.max_length} characters",
            )
        normalized = NORMALIZERS[rules.normalizer](identifier_type, value, region)
        return NormalizedIdentifier(identifier_type, normalized)

    def normalize_valid(
        self, pairs: Iterable[tuple[str, str]], region: str | None
    ) -> tuple[NormalizedIdentifier, ...] | None:
        """:meth:`normalize` of every ``(type, value)`` when all of them normalize; ``None`` as
        soon as one does not (an unknown type, a value too long or invalid).

        For input that is nearly always valid (bulk rows, ``POST /v1/ingest`` events): one call
        per event instead of one per value, and no error is built for the valid ones. A caller
        that gets ``None`` normalizes again with :func:`identity.intake.normalize_all`, which
        locates every problem; the identifiers of an event that normalizes are the same either
        way (the same normalizers, the same length limits).
        """
        normalizers: dict[str, tuple[int, NormalizeFn]] = getattr(self, "_normalizers")  # noqa: B009
        normalized: list[NormalizedIdentifier] = []
        try:
            for identifier_type, value in pairs:
                rules = normalizers.get(identifier_type)
                if rules is None or len(value) > rules[0]:
                    return None
                normalized.append(
                    NormalizedIdentifier(identifier_type, rules[1](identifier_type, value, region))
                )
        except InvalidIdentifierError:
            return None
        return tuple(normalized)

    def blocklist(self, identifier_type: str) -> tuple[frozenset[str], tuple[re.Pattern[str], ...]]:
        """The blocked values (normalized, casefolded) and compiled patterns of a declared type:
        what :meth:`blocked_reason` compares, for a caller that screens many identifiers in a
        loop of its own. Raises :class:`UnknownIdentifierTypeError`."""
        self.rules(identifier_type)
        blocked: dict[str, frozenset[str]] = getattr(self, "_blocked")  # noqa: B009
        patterns: dict[str, tuple[re.Pattern[str], ...]] = getattr(self, "_patterns")  # noqa: B009
        return blocked[identifier_type], patterns[identifier_type]

    def blocked_reason(self, identifier: NormalizedIdentifier) -> str | None:
        """Why this identifier may never be linked (a listed value or pattern), or ``None``."""
        blocked: dict[str, frozenset[str]] = getattr(self, "_blocked")  # noqa: B009
        patterns: dict[str, tuple[re.Pattern[str], ...]] = getattr(self, "_patterns")  # noqa: B009
        values = blocked[identifier.type]
        if values and identifier.value.casefold() in values:
            return "blocked_value"
        for pattern in patterns[identifier.type]:
            if pattern.search(identifier.value):
                return "blocked_pattern"
        return None


def _field_path(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "<root>"


M = TypeVar("M", bound=BaseModel)


def load_policy_file(path: Path, model: type[M]) -> M:
    """Load a YAML policy file into ``model``; any problem raises :class:`PolicyFileError`
    naming the file and the field (dotted path) at fault."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyFileError(str(path), "<file>", f"cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise PolicyFileError(str(path), "<file>", f"not valid YAML: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise PolicyFileError(str(path), _field_path(first["loc"]), first["msg"]) from None
    except PolicyFieldProblem as exc:
        raise PolicyFileError(str(path), exc.field, exc.message) from None


def load_identity_policy(path: Path) -> IdentityPolicy:
    """Load and validate ``identity.yaml``; any problem raises :class:`PolicyFileError`."""
    return load_policy_file(path, IdentityPolicy)
