"""Define the marker types callers use: Out[...] parameters, Ref boxes, @serializable."""

from __future__ import annotations

import types

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every new domain ~3 ms: Out makes it load on first use
    from typing import Annotated, ClassVar, Generic, TypeVar

__all__ = ["OUT_MARKER", "Out", "Ref", "is_serializable", "serializable"]


class _OutMarker:
    """Tag an annotation as an [Out] parameter (found in Annotated metadata)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Out"


OUT_MARKER = _OutMarker()

# ``Out[bytearray]`` is ``Annotated[bytearray, OUT_MARKER]``: type checkers see a plain
# bytearray, and plan_for() finds the marker in the metadata.  Made on first use (below).
if TYPE_CHECKING:
    T = TypeVar("T")
    Out = Annotated[T, OUT_MARKER]


def __getattr__(name: str) -> object:
    if name != "Out":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from typing import Annotated, TypeVar

    out = Annotated[TypeVar("T"), OUT_MARKER]  # type: ignore[valid-type]  # a value here
    globals()["Out"] = out
    return out


# Ref is generic to type checkers; at run time Ref[int] is a types.GenericAlias, since a
# class using typing.Generic (or ``class Ref[V]``) imports typing.
if TYPE_CHECKING:
    V = TypeVar("V")

    class _Box(Generic[V]):  # noqa: UP046  # Ref[V] without PEP 695, which imports typing
        __slots__ = ()
else:
    V = "V"

    class _Box:
        __slots__ = ()
        __class_getitem__ = classmethod(types.GenericAlias)


class Ref(_Box[V]):
    """Box a value passed by reference, like C# ``ref``: the callee's final value comes back.

    >>> r = Ref(5)
    >>> r.value
    5
    """

    __slots__ = ("value",)
    value: V

    def __init__(self, value: V) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Ref({self.value!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not Ref:
            return NotImplemented
        return bool(self.value == other.value)

    __hash__: ClassVar[None] = None  # type: ignore[assignment]  # mutable box, like list


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


def is_serializable(cls: type) -> bool:
    """Tell whether the class itself (not a base) was marked @serializable."""
    return cls.__dict__.get(_SERIALIZABLE) is True
