"""quick_init gives a frozen dataclass the same constructor as the generated one, only cheaper."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import InitVar, dataclass, field
from typing import Any

import pytest

from identity import hashing, identifiers, model
from identity.frozen import quick_init

DECORATED = [
    hashing.HashedIdentifier,
    identifiers.NormalizedIdentifier,
    model.Fact,
    model.IdentityEvent,
    model.IdentifierNode,
    model.Link,
    model.PersonRecord,
    model.EventOutcome,
    model.ConsentRecord,
    model.MemberRow,
]


@dataclass(frozen=True, slots=True)
class _Plain:
    a: str
    b: int
    c: tuple[int, ...] = ()
    d: str | None = None

    def __post_init__(self) -> None:
        if self.b < 0:
            raise ValueError("b must not be negative")


_Quick: Any = quick_init(
    dataclass(frozen=True, slots=True)(
        type(
            "_Quick",
            (),
            {
                "__annotations__": dict(_Plain.__annotations__),
                "c": (),
                "d": None,
                "__post_init__": _Plain.__post_init__,
            },
        )
    )
)

CALLS: list[tuple[tuple[object, ...], dict[str, object]]] = [
    (("x", 1), {}),
    (("x", 1, (2,)), {}),
    (("x", 1, (2,), "y"), {}),
    (("x",), {"b": 2, "d": "z"}),
    ((), {"a": "x", "b": 3, "c": (1, 2)}),
]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_fields_are_set_as_the_generated_init_sets_them_when_called_any_way(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    plain = _Plain(*args, **kwargs)  # type: ignore[arg-type]
    quick = _Quick(*args, **kwargs)
    assert dataclasses.astuple(quick) == dataclasses.astuple(plain)
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.a = "changed"


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [(("x",), {}), (("x", 1, (), None, 5), {}), (("x", 1), {"a": "y"}), (("x", 1), {"e": 1})],
)
def test_bad_calls_are_refused_when_the_generated_init_refuses_them(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    with pytest.raises(TypeError):
        _Plain(*args, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _Quick(*args, **kwargs)


def test_post_init_runs_when_a_quick_init_class_is_built() -> None:
    with pytest.raises(ValueError, match="negative"):
        _Quick("x", -1)


@pytest.mark.parametrize("cls", DECORATED, ids=lambda c: c.__name__)
def test_domain_constructors_keep_their_parameters_when_decorated(cls: type) -> None:
    parameters = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in parameters] == [f.name for f in dataclasses.fields(cls)]
    assert [p.default for p in parameters] == [
        inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        for f in dataclasses.fields(cls)
    ]


def test_classes_quick_init_cannot_copy_exactly_are_refused_at_import() -> None:
    @dataclass(frozen=True)
    class WithFactory:
        a: list[int] = field(default_factory=list)

    @dataclass(frozen=True)
    class WithInitVar:
        a: int
        b: InitVar[int]

    @dataclass(frozen=True, kw_only=True)
    class KeywordOnly:
        a: int

    @dataclass
    class NotFrozen:
        a: int

    for cls in (WithFactory, WithInitVar, KeywordOnly, NotFrozen):
        with pytest.raises(TypeError):
            quick_init(cls)
