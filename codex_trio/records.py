"""`by_value`: frozen attrs classes with shared `__repr__`, `__eq__` and `__hash__`.

attrs compiles a fresh `__init__`, `__repr__`, `__eq__` and `__hash__` for every class it
builds, and compiling them is most of the cost of importing the protocol's classes: on the
stdio start-up path and in every API family's first call. A class declared
`@by_value @attrs.frozen(repr=False, eq=False)` gets only its `__init__` compiled and takes the
functions below instead, which read the same field list attrs would: the same repr text, and
equality and hashing by value per class. They are slower per call than generated code, which
no hot path notices (messages are compared and printed in tests and logs).
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

import attrs

T = TypeVar("T")


def _repr(self: Any) -> str:
    parts = []
    for field in type(self).__attrs_attrs__:
        if field.repr is False:
            continue
        value = getattr(self, field.name)
        text = field.repr(value) if callable(field.repr) else repr(value)
        parts.append(f"{field.name}={text}")
    return f"{type(self).__qualname__.rsplit('>.', 1)[-1]}({', '.join(parts)})"


def _key(self: Any) -> tuple[Any, ...]:
    return tuple(
        field.eq_key(getattr(self, field.name)) if field.eq_key else getattr(self, field.name)
        for field in type(self).__attrs_attrs__
        if field.eq
    )


def _eq(self: Any, other: Any) -> object:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _key(self) == _key(other)


def _hash(self: Any) -> int:
    values = tuple(
        getattr(self, field.name)
        for field in type(self).__attrs_attrs__
        if field.hash or (field.hash is None and field.eq)
    )
    return hash((type(self).__qualname__, values))


def by_value(cls: type[T]) -> type[T]:
    """Give a frozen attrs class built with `repr=False, eq=False` attrs' value semantics."""
    if not attrs.has(cast(type[Any], cls)):
        raise TypeError(f"{cls.__name__} is not an attrs class")
    for name, function in (("__repr__", _repr), ("__eq__", _eq), ("__hash__", _hash)):
        setattr(cls, name, function)
    return cls
