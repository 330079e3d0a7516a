"""Define MarshalByRefObject, leases and the one_way marker."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # collections.abc costs every new domain ~1.5 ms (collections, operator)
    from collections.abc import Callable

__all__ = ["MarshalByRefObject", "Lease", "one_way", "is_one_way"]


class Lease:
    """How long an object stays reachable without calls: initial time, extended by each call.

    Leases are opt-in: return one from initialize_lifetime_service().  Unlike .NET's
    five-minute default, an object without a lease lives as long as any proxy to it.
    """

    __slots__ = ("initial_lease_time", "renew_on_call_time")
    initial_lease_time: float
    renew_on_call_time: float

    def __init__(self, initial_lease_time: float, renew_on_call_time: float = 0.0) -> None:
        for name, value in (
            ("initial_lease_time", initial_lease_time),
            ("renew_on_call_time", renew_on_call_time),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"'{name}' must be a number of seconds >= 0 (got {value!r})")
        self.initial_lease_time = float(initial_lease_time)
        self.renew_on_call_time = float(renew_on_call_time)

    def __repr__(self) -> str:
        return (
            f"Lease(initial_lease_time={self.initial_lease_time!r}, "
            f"renew_on_call_time={self.renew_on_call_time!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Lease):
            return NotImplemented
        return (self.initial_lease_time, self.renew_on_call_time) == (
            other.initial_lease_time,
            other.renew_on_call_time,
        )

    def __hash__(self) -> int:
        return hash((self.initial_lease_time, self.renew_on_call_time))


class MarshalByRefObject:
    """Base class of objects that cross domains by reference: others get a proxy to them."""

    def initialize_lifetime_service(self) -> Lease | None:
        """Return a Lease to let this object expire when unused; None (default) means never."""
        return None

    def InitializeLifetimeService(self) -> Lease | None:
        """The .NET name of initialize_lifetime_service."""
        return self.initialize_lifetime_service()


def one_way[F: Callable[..., object]](func: F) -> F:
    """Mark a method as one-way: remote callers do not wait and get no result or exception."""
    vars(func)["__appdomain_one_way__"] = True
    return func


def is_one_way(func: object) -> bool:
    """Tell whether func was marked with one_way."""
    return bool(getattr(func, "__appdomain_one_way__", False))
