"""Define the marker types callers use: Out[...] parameters, Ref boxes, @serializable."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

__all__ = ["OUT_MARKER", "Out", "Ref", "is_serializable", "serializable"]

T = TypeVar("T")


class _OutMarker:
    """Tag an annotation as an [Out] parameter (found in Annotated metadata)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Out"


OUT_MARKER = _OutMarker()

# ``Out[bytearray]`` is ``Annotated[bytearray, OUT_MARKER]``: type checkers see a plain
# bytearray, and plan_for() finds the marker in the metadata.
Out = Annotated[T, OUT_MARKER]


class Ref[V]:
    """Box a value passed by reference, like C# ``ref``: the callee's final value comes back.

    >>> r = Ref(5)
    >>> r.value
    5
    """

    __slots__ = ("value",)

    def __init__(self, value: V) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Ref({self.value!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not Ref:
            return NotImplemented
        return bool(self.value == other.value)

    __hash__ = None  # type: ignore[assignment]  # mutable box, like list


_SERIALIZABLE = "__appdomain_serializable__"


def serializable[C: type](cls: C) -> C:
    """Mark a class as crossing domains by value (state = ``__getstate__``/``__dict__``).

    Instances are rebuilt on the other side without calling ``__init__``. The mark is not
    inherited: a subclass must be marked again (as .NET's [Serializable]).
    """
    if not isinstance(cls, type):
        raise TypeError(f"'cls' must be a class (got {cls!r} that is a {type(cls).__name__})")
    setattr(cls, _SERIALIZABLE, True)
    return cls


def is_serializable(cls: type[Any]) -> bool:
    """Tell whether the class itself (not a base) was marked @serializable."""
    return cls.__dict__.get(_SERIALIZABLE) is True
