"""A cheaper ``__init__`` for frozen dataclasses built once per identifier in bulk ingest.

A frozen dataclass's generated ``__init__`` sets each field with
``object.__setattr__``, looked up as an attribute of ``object`` on every field of every instance.
Bulk ingest builds several such objects per identifier (hashed identifiers, nodes, links, facts,
outcomes: about a quarter of a million per 50,000 identifiers), and that lookup was most of their
cost. :func:`quick_init` gives a class the same ``__init__`` (same parameters, order and defaults;
still frozen afterwards) with ``object.__setattr__`` bound once, or for a slotted class each
slot's own descriptor (its ``__set__``), which skips the lookup of the name on the class too.
"""

from __future__ import annotations

import inspect
from dataclasses import MISSING, fields, is_dataclass
from types import MemberDescriptorType
from typing import Any, TypeVar

T = TypeVar("T")


def quick_init(cls: type[T]) -> type[T]:
    """Replace the generated ``__init__`` of the frozen dataclass ``cls`` with an equal one.

    Only for plain field lists: every field in ``__init__``, positional, with no default factory
    and no init-only variable (anything else raises :class:`TypeError` at import, never silently).
    A ``__post_init__`` is called last, as the generated ``__init__`` calls it.
    """
    if not is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"quick_init needs a frozen dataclass, not {cls.__name__}")
    generated = list(inspect.signature(cls.__init__).parameters)[1:]
    if generated != [f.name for f in fields(cls)]:
        raise TypeError(f"quick_init: {cls.__name__}.__init__ takes more than its fields")
    params: list[str] = []
    body: list[str] = []
    namespace: dict[str, Any] = {"_set": object.__setattr__}
    for f in fields(cls):
        if not f.init or f.kw_only or f.default_factory is not MISSING:
            raise TypeError(f"quick_init: field {cls.__name__}.{f.name} is not a plain field")
        if f.default is MISSING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        slot = inspect.getattr_static(cls, f.name, None)
        if isinstance(slot, MemberDescriptorType):
            # A slot: its descriptor sets it directly (what object.__setattr__ ends up calling,
            # without looking the name up on the class first: ~35 % less per field, measured).
            namespace[f"_set_{f.name}"] = slot.__set__
            body.append(f"    _set_{f.name}(self, {f.name})")
        else:
            body.append(f"    _set(self, {f.name!r}, {f.name})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body or ["    pass"])
    # Field names are Python identifiers of the class itself (dataclasses builds its own
    # __init__ the same way); nothing from outside the class reaches this text.
    exec(source, namespace)  # noqa: S102
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
