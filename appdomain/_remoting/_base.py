"""Define MarshalByRefObject, leases and the one_way marker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["MarshalByRefObject", "Lease", "one_way", "is_one_way"]


@dataclass(frozen=True)
class Lease:
    """How long an object stays reachable without calls: initial time, extended by each call.

    Leases are opt-in: return one from initialize_lifetime_service().  Unlike .NET's
    five-minute default, an object without a lease lives as long as any proxy to it.
    """

    initial_lease_time: float
    renew_on_call_time: float = 0.0

    def __post_init__(self) -> None:
        for name in ("initial_lease_time", "renew_on_call_time"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"'{name}' must be a number of seconds >= 0 (got {value!r})")


class MarshalByRefObject:
    """Base class of objects that cross domains by reference: others get a proxy to them."""

    def initialize_lifetime_service(self) -> Lease | None:
        """Return a Lease to let this object expire when unused; None (default) means never."""
        return None

    def InitializeLifetimeService(self) -> Lease | None:
        return self.initialize_lifetime_service()


def one_way[F: Callable[..., Any]](func: F) -> F:
    """Mark a method as one-way: remote callers do not wait and get no result or exception."""
    func.__appdomain_one_way__ = True  # type: ignore[attr-defined]
    return func


def is_one_way(func: Any) -> bool:
    """Tell whether func was marked with one_way."""
    return bool(getattr(func, "__appdomain_one_way__", False))
