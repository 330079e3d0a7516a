"""Define CallPlan (a dataclass: its module imports dataclasses, so it is loaded on demand)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CallPlan"]


@dataclass(frozen=True, slots=True)
class CallPlan:
    """Say how each parameter of one function crosses: its tier, and which are [Out]."""

    name: str
    params: tuple[str, ...]  # parameters that can be passed by position, in order
    out_positions: frozenset[int]
    out_names: frozenset[str]
    tiers: tuple[tuple[str, int], ...]
    result_tier: int

    @property
    def has_out(self) -> bool:
        """Tell whether any parameter is copied back after the call."""
        return bool(self.out_names)

    def arg_name(self, index: int) -> str:
        """Name positional argument ``index`` for messages."""
        if index < len(self.params):
            return f"argument {self.params[index]!r}"
        return f"argument {index}"
