"""Define CallPlan, how each parameter of one function crosses."""

from __future__ import annotations

__all__ = ["CallPlan"]


class CallPlan:
    """Say how each parameter of one function crosses: its tier, and which are [Out].

    A frozen value (equal when its fields are).  A plain class, not a dataclass: the
    dataclasses module imports inspect, ~14 ms of a new domain's first planned call.
    """

    __slots__ = ("name", "out_names", "out_positions", "params", "result_tier", "tiers")

    name: str
    params: tuple[str, ...]  # parameters that can be passed by position, in order
    out_positions: frozenset[int]
    out_names: frozenset[str]
    tiers: tuple[tuple[str, int], ...]
    result_tier: int

    def __init__(
        self,
        name: str,
        params: tuple[str, ...],
        out_positions: frozenset[int],
        out_names: frozenset[str],
        tiers: tuple[tuple[str, int], ...],
        result_tier: int,
    ) -> None:
        setter = object.__setattr__
        setter(self, "name", name)
        setter(self, "params", params)
        setter(self, "out_positions", out_positions)
        setter(self, "out_names", out_names)
        setter(self, "tiers", tiers)
        setter(self, "result_tier", result_tier)

    def _fields(self) -> tuple[object, ...]:
        return (
            self.name,
            self.params,
            self.out_positions,
            self.out_names,
            self.tiers,
            self.result_tier,
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"CallPlan is frozen: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"CallPlan is frozen: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not CallPlan:
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"CallPlan(name={self.name!r}, params={self.params!r}, "
            f"out_positions={self.out_positions!r}, out_names={self.out_names!r}, "
            f"tiers={self.tiers!r}, result_tier={self.result_tier!r})"
        )

    @property
    def has_out(self) -> bool:
        """Tell whether any parameter is copied back after the call."""
        return bool(self.out_names)

    def arg_name(self, index: int) -> str:
        """Name positional argument ``index`` for messages."""
        if index < len(self.params):
            return f"argument {self.params[index]!r}"
        return f"argument {index}"
