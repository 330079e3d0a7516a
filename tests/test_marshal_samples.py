"""Define importable sample types for the marshal tests (no tests live here).

Subinterpreters find these by module name, so they must sit at module level.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from appdomain.marshal import serializable


class Color(enum.Enum):
    RED = 1
    GREEN = "g"


class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclass
class Point:
    x: int
    y: int


@dataclass(frozen=True)
class Segment:
    start: Point
    end: Point
    tags: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Slotted:
    a: int
    b: Any = None


class Pair(NamedTuple):
    left: Any
    right: Any


@serializable
class Account:
    def __init__(self, owner: str, balance: int) -> None:
        self.owner = owner
        self.balance = balance
        self.inits = 1

    def __eq__(self, other: object) -> bool:
        return type(other) is Account and vars(self) == vars(other)


@serializable
class Custom:
    def __init__(self, n: int) -> None:
        self.n = n

    def __getstate__(self) -> dict[str, int]:
        return {"doubled": self.n * 2}

    def __setstate__(self, state: dict[str, int]) -> None:
        self.n = state["doubled"] // 2


class NotMarked:
    pass


class AppError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"code {code}: {detail}")
        self.code = code
        self.detail = detail


class Handle:
    """Stand-in for a MarshalByRefObject: crosses by reference (an id)."""

    registry: ClassVar[dict[int, Handle]] = {}

    def __init__(self, ident: int) -> None:
        self.ident = ident
        Handle.registry[ident] = self


class SubHandle(Handle):
    pass


def reduce_handle(h: Handle) -> tuple[Any, ...]:
    return (h.ident,)


def rebuild_handle(payload: tuple[Any, ...]) -> Handle:
    return Handle.registry.get(payload[0]) or Handle(payload[0])


def scale(x: int, factor: int = 2) -> int:
    """A module-level function: crosses by name."""
    return x * factor


def renamed() -> None:
    """Stands for no function by its name: the module gives that name to another one below."""


stale = renamed
globals()["renamed"] = scale


class Outer:
    """A class with a nested class and a method: both cross by name."""

    class Inner:
        pass

    def method(self) -> int:
        return 1

    instance_attr = Point(1, 2)
