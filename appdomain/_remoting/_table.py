"""Keep this domain's objects that other domains hold references to, with their counts."""

from __future__ import annotations

import itertools
import threading
import time

from .. import _core
from .._errors import RemotingException
from ._base import Lease, MarshalByRefObject

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["export", "lookup", "release", "release_many", "incref", "live_count"]


class _Entry:
    """An exported object, how many remote references it has, and when its lease ends."""

    __slots__ = ("count", "expires", "lease", "obj")

    def __init__(self, obj: object, count: int, lease: Lease | None, expires: float) -> None:
        self.obj = obj
        self.count = count
        self.lease = lease
        self.expires = expires


# The C switch's export() and apply_releases() take this lock too: its own lock type is
# taken from C without a Python call (threading.Lock's acquire parses keywords each time).
_built = _core.native_built()
_lock: Any = threading.Lock() if _built is None else _built.TableLock()
_entries: dict[int, _Entry] = {}
# id(obj) -> object id while exported: one reference (and so one proxy) per object.
_by_identity: dict[int, int] = {}
_next_oid = itertools.count(1)
# Objects lent to lean calls in flight (the C switch lends and ends loans, no lock taken:
# its steps run whole, between two of this module's): oid -> obj while one call lends it,
# (obj, calls) while several do (a MarshalByRefObject is never an exact tuple); and
# id(obj) -> oid.  A lent object is found by lookup() but counts for nothing: the calls
# hold it.  export() and incref() give it the oid it was lent with.
_lent: dict[int, Any] = {}
_DEFAULT_LEASE = MarshalByRefObject.initialize_lifetime_service
_lent_ids: dict[int, int] = {}


def export(obj: object) -> int:
    """Publish obj for one more remote reference and return its object id."""
    ident = id(obj)
    if type(obj) in _leaseless:
        # The common case in one step: no lease to ask for (a new object a call returns).
        with _lock:
            oid = _by_identity.get(ident)
            if oid is not None:
                _entries[oid].count += 1
                return oid
            lent_as = _lent_ids.get(ident)
            oid = lent_as if lent_as is not None and lent_as not in _entries else next(_next_oid)
            _entries[oid] = _Entry(obj, 1, None, _FOREVER)
            _by_identity[ident] = oid
            return oid
    with _lock:
        oid = _by_identity.get(ident)
        if oid is not None:
            _entries[oid].count += 1
            return oid
    return _publish(obj, _lent_ids.get(ident))


# Types whose initialize_lifetime_service is MarshalByRefObject's (it returns None, and
# instances do not replace it: the attribute is looked up on the type).
_leaseless: set[type] = set()
_FOREVER = float("inf")


def _publish(obj: object, lent_as: int | None) -> int:
    """Export obj (not exported yet) with one reference, under lent_as if it was lent so."""
    lease, expires = _lease_of(obj)
    with _lock:
        oid = _by_identity.get(id(obj))
        if oid is not None:
            _entries[oid].count += 1
            return oid
        oid = lent_as if lent_as is not None and lent_as not in _entries else next(_next_oid)
        _entries[oid] = _Entry(obj, 1, lease, expires)
        _by_identity[id(obj)] = oid
        return oid


def _lease_of(obj: object) -> tuple[Lease | None, float]:
    """Return obj's lease (None: it lives as long as it is referenced) and when it ends."""
    cls = type(obj)
    if getattr(
        cls, "initialize_lifetime_service", None
    ) is _DEFAULT_LEASE and "initialize_lifetime_service" not in getattr(obj, "__dict__", ()):
        _leaseless.add(cls)
    lease = (
        obj.initialize_lifetime_service() if hasattr(obj, "initialize_lifetime_service") else None
    )
    if lease is not None and not isinstance(lease, Lease):
        raise TypeError(
            f"initialize_lifetime_service() must return a Lease or None (got {lease!r})"
        )
    expires = time.monotonic() + lease.initial_lease_time if lease is not None else float("inf")
    return lease, expires


def lookup(oid: int, *, renew: bool = True) -> Any:  # Any: callers use the object as theirs
    """Return the object behind oid, renewing its lease; raise if it is gone or expired."""
    entry = _entries.get(oid)
    if entry is None:
        lent = _lent_object(oid)
        if lent is not None:
            return lent
        raise RemotingException(f"object {oid} has been disconnected (no longer exported)")
    if entry.lease is not None:
        now = time.monotonic()
        if now > entry.expires:
            _drop(oid)
            raise RemotingException(
                f"object {oid} has been disconnected: its lease expired "
                f"after {entry.lease.initial_lease_time:g} s without renewal"
            )
        if renew:
            entry.expires = max(entry.expires, now + entry.lease.renew_on_call_time)
    return entry.obj


def _lent_object(oid: int) -> Any:
    """The object lent as oid to lean calls in flight, or None."""
    lent = _lent.get(oid)
    return lent[0] if type(lent) is tuple else lent


def incref(oid: int) -> None:
    """Count one more remote reference to an exported (or lent) object."""
    with _lock:
        entry = _entries.get(oid)
        if entry is not None:
            entry.count += 1
            return
    obj = _lent_object(oid)  # a proxy kept from a lean call: the object is still lent
    if obj is None:
        raise RemotingException(f"object {oid} has been disconnected")
    lease, expires = _lease_of(obj)
    with _lock:
        entry = _entries.get(oid)
        if entry is not None:
            entry.count += 1
            return
        _entries[oid] = _Entry(obj, 1, lease, expires)
        # Exported meanwhile under another id: both stay counted, that one keeps the name.
        _by_identity.setdefault(id(obj), oid)


def release(oid: int, count: int) -> None:
    """Drop count remote references; the object is forgotten when none remain."""
    with _lock:
        entry = _entries.get(oid)
        if entry is None:
            return
        entry.count -= count
        if entry.count <= 0:
            _drop_locked(oid)


def release_many(flat: list[int]) -> None:
    """Drop references in bulk: flat is [oid, count, oid, count, ...] (the C switch's queue)."""
    with _lock:
        for i in range(0, len(flat), 2):
            oid = flat[i]
            entry = _entries.get(oid)
            if entry is None:
                continue
            entry.count -= flat[i + 1]
            if entry.count <= 0:
                _drop_locked(oid)


def _drop(oid: int) -> None:
    with _lock:
        _drop_locked(oid)


def _drop_locked(oid: int) -> None:
    entry = _entries.pop(oid, None)
    if entry is not None and _by_identity.get(id(entry.obj)) == oid:
        del _by_identity[id(entry.obj)]


def live_count() -> int:
    """Return how many objects of this domain are referenced from other domains."""
    return len(_entries)
