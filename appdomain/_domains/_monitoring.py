"""Account for what each domain costs: .NET's AppDomain.MonitoringIsEnabled family.

Monitoring is process-wide, as in .NET: the default domain holds the switch, turns every
loaded domain's meter on (``_core/_meter.py``) and each new domain's as it starts.  What
each figure counts, exactly:

- processor time: the CPU time (each thread's own clock) of the calls the domain served
  on every route, plus that of the threads the domain started itself (while they run,
  and their total when they end, for threads started while monitoring was on; for the
  default domain its main thread too), minus the CPU time its threads spent in calls to
  other domains sent through ``_core.call``.  Not left out: proxy calls with plain
  arguments that the C switch carries in one step count in the calling domain as well
  as in their target.  Counting starts when monitoring is turned on.
- allocated memory: the bytes of arenas (1 MiB each) the domain's own object allocator
  (each domain has its own obmalloc) has taken from the system since the domain started,
  arenas given back since included.  Python keeps no count of every allocation, as .NET
  does: this is its allocator's nearest cumulative figure.
- survived memory: the bytes in the blocks of the domain's allocator now in use, i.e.
  its live objects of up to 512 bytes.  Not counted: objects larger than that (the
  allocator hands them to the process's malloc, counting them but not their size), and
  memory that C extensions allocate themselves.

Both memory figures come from CPython's ``_PyObject_DebugMallocStats`` of the domain's own
interpreter, read through ctypes into memory (``open_memstream``), about 0.1 ms a read.
"""

from __future__ import annotations

import sys
import threading
import time

from .. import _core
from .._core import register_op, state
from .._core._meter import Meter
from .._errors import AppDomainError
from . import _runtime

TYPE_CHECKING = False
if TYPE_CHECKING:
    import datetime
    import types
    from collections.abc import Callable
    from typing import Any

    from .._core import Route

    # (cpu ns, allocated bytes, survived bytes, calls in, calls out, threads, proxies
    # held, objects exported, monitoring on)
    type WireReading = tuple[int, int, int, int, int, int, int, int, bool]

__all__ = [
    "DomainStatistics",
    "counters",
    "is_enabled",
    "read",
    "require_enabled",
    "set_enabled",
    "survived_process_memory",
]

_OP = "appdomain._domains._monitoring:"

# Named counts the layers above add to statistics() (remoting: proxies held, objects
# exported), read in the domain they describe.
counters: dict[str, Callable[[], int]] = {}


# -- the switch --------------------------------------------------------------------------

_enabled = False
_meter: Meter | None = None  # kept when monitoring goes off, so the counts survive a pause


def is_enabled() -> bool:
    """Tell whether monitoring is on (in this domain; the default domain's is the process's)."""
    return _enabled


def require_enabled() -> None:
    """Raise unless monitoring is on (as .NET's Monitoring* members do)."""
    if not _enabled:
        raise AppDomainError(
            "monitoring is off: set AppDomain.monitoring_is_enabled = True before reading "
            "the monitoring_* figures"
        )


def set_enabled(on: object) -> None:
    """Turn monitoring on or off in every domain of the process."""
    if not isinstance(on, bool):
        raise TypeError(
            f"'monitoring_is_enabled' must be bool (got {on!r} that is a {type(on).__name__})"
        )
    if not _runtime.info.is_default:
        default = _runtime.info.default_route
        assert default is not None  # every other domain was booted with it
        _core.call(default, _OP + "set_everywhere", on)
        return
    _op_set_everywhere(on)


def _no_routes() -> list[Route]:
    return []


# The default domain's loaded domains (but itself): set by _domain once it creates one.
loaded_routes: Callable[[], list[Route]] = _no_routes


def _op_set_everywhere(on: bool) -> None:
    _op_set(on)
    for route in loaded_routes():
        try:
            _core.call(route, _OP + "set", on)
        except AppDomainError:
            pass  # unloaded meanwhile: nothing to count there


def started(route: Route) -> None:
    """Turn a new domain's meter on if monitoring is on (the default domain, at creation)."""
    if _enabled:
        _core.call(route, _OP + "set", True)


def _op_set(on: bool) -> None:
    global _enabled, _meter
    if on == _enabled:
        return
    _enabled = on
    if on:
        if _meter is None:
            _meter = Meter()
        _watch_new_threads()
    elif threading.getprofile() is _on_thread_start:
        threading.setprofile(_previous_profile)
    state.meter = _meter if on else None
    native = _core.native_module()
    if native is not None:
        native.refresh()


# -- threads the domain started ------------------------------------------------------------

# CPU nanoseconds of the threads started here that have ended (their clock is gone then).
_ended_ns = 0
_thread_local = threading.local()


class _ThreadEnd:
    """Held by a thread's locals: dropped as the thread ends, on that thread, so its own
    clock still reads its total."""

    def __del__(self) -> None:
        global _ended_ns
        used = time.thread_time_ns()
        _ended_ns += used  # no call in between: no thread switch, no lost update


# The domain's own threading.setprofile hook, which each new thread then gets.
_previous_profile: Callable[[types.FrameType, str, Any], object] | None = None


def _on_thread_start(frame: types.FrameType, event: str, arg: object) -> None:
    # Once, at the thread's first call: no cost afterwards.
    sys.setprofile(_previous_profile)
    _thread_local.end = _ThreadEnd()
    if _previous_profile is not None:
        _previous_profile(frame, event, arg)


def _watch_new_threads() -> None:
    global _previous_profile
    current: Any = threading.getprofile()
    if current is not _on_thread_start:
        _previous_profile = current
        threading.setprofile(_on_thread_start)


def _own_threads() -> list[threading.Thread]:
    """The threads this domain started (and, in the default domain, its main thread)."""
    pool = state.pool
    serving = {t.ident for t in pool.threads} if pool is not None else set()
    main = threading.main_thread()
    own = []
    for thread in threading.enumerate():
        if isinstance(thread, threading._DummyThread) or thread.ident in serving:
            continue  # a thread of another domain switched in, or a dispatcher (metered)
        if thread is main and not _runtime.info.is_default:
            continue  # a subdomain's "main thread" is the creator's, switched in
        own.append(thread)
    return own


def _threads_cpu_ns(threads: list[threading.Thread]) -> int:
    total = _ended_ns
    for thread in threads:
        if thread.ident is None:
            continue
        try:
            total += time.clock_gettime_ns(time.pthread_getcpuclockid(thread.ident))
        except (OSError, AttributeError):
            continue  # ended between the listing and the read: counted by _ThreadEnd
    return total


# -- memory: the domain's own allocator ----------------------------------------------------

_ARENA_BYTES_KEY = "arenas allocated total"


def _malloc_stats() -> dict[str, int]:
    """Read this interpreter's obmalloc statistics (sys._debugmallocstats, into memory)."""
    import ctypes
    import re

    libc = ctypes.CDLL(None)
    libc.open_memstream.restype = ctypes.c_void_p
    libc.open_memstream.argtypes = [
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.free.argtypes = [ctypes.c_void_p]
    buffer, size = ctypes.c_void_p(), ctypes.c_size_t()
    stream = libc.open_memstream(ctypes.byref(buffer), ctypes.byref(size))
    if not stream:
        raise AppDomainError("monitoring: cannot open a memory stream for the allocator's figures")
    dump = ctypes.pythonapi._PyObject_DebugMallocStats
    dump.argtypes = [ctypes.c_void_p]
    dump.restype = ctypes.c_int
    try:
        dumped = dump(stream)
    finally:
        libc.fclose(stream)  # sets buffer and size
    try:
        text = ctypes.string_at(buffer.value or 0, size.value).decode("ascii", "replace")
    finally:
        libc.free(buffer)
    if not dumped:
        raise AppDomainError(
            "monitoring: this Python's object allocator is not pymalloc, whose figures the "
            "memory counters read"
        )
    figures: dict[str, int] = {}
    for match in re.finditer(r"^# ([^=\n]+?)\s*=\s*([\d,]+)$", text, re.M):
        figures.setdefault(match.group(1).strip(), int(match.group(2).replace(",", "")))
    arenas = re.search(r"^Total\s*=\s*([\d,]+)$", text, re.M)
    current = figures.get("arenas allocated current", 0)
    figures["arena size"] = (
        int(arenas.group(1).replace(",", "")) // current if arenas and current else 1 << 20
    )
    return figures


def _memory() -> tuple[int, int]:
    """Return (allocated, survived) bytes of this domain's allocator."""
    figures = _malloc_stats()
    allocated = figures.get(_ARENA_BYTES_KEY, 0) * figures["arena size"]
    return allocated, figures.get("bytes in allocated blocks", 0)


# -- readings ------------------------------------------------------------------------------


def _op_read(_: None) -> WireReading:
    own = _own_threads()
    meter = _meter
    allocated, survived = _memory()
    # Threads running here now, this reading's own thread left out.
    running = {t.ident for t in own} | (set(state.inside) - {threading.get_ident()})
    proxies = counters["proxies_held"]() if "proxies_held" in counters else 0
    exported = counters["objects_exported"]() if "objects_exported" in counters else 0
    if meter is None:
        cpu = calls_in = calls_out = -1  # never counted
    else:
        cpu = max(0, meter.served_ns + _threads_cpu_ns(own) - meter.out_ns)
        calls_in, calls_out = meter.calls_in, meter.calls_out
        native = _core.native_module()
        if native is not None:  # the C switch's one-step proxy calls, counted in C
            calls_out += native.lean_calls()
    return (cpu, allocated, survived, calls_in, calls_out, len(running), proxies, exported,
            _enabled)  # fmt: skip


def read(route: Route) -> WireReading:
    """Read the counters of the domain at route."""
    reading: WireReading = _core.call(route, _OP + "read", None)
    return reading


def _op_process_survived(_: None) -> int:
    total = _memory()[1]
    for route in loaded_routes():
        try:
            total += read(route)[2]
        except AppDomainError:
            pass  # unloaded meanwhile: its memory is gone with it
    return total


def survived_process_memory() -> int:
    """Return the survived bytes of every domain of the process, summed."""
    if _runtime.info.is_default:
        return _op_process_survived(None)
    default = _runtime.info.default_route
    assert default is not None
    total: int = _core.call(default, _OP + "process_survived", None)
    return total


class DomainStatistics:
    """A snapshot of one domain: its calls, threads, proxies, objects and counters."""

    __slots__ = (
        "allocated_memory_size",
        "calls_in",
        "calls_out",
        "domain_id",
        "friendly_name",
        "monitoring",
        "objects_exported",
        "processor_time",
        "proxies_held",
        "survived_memory_size",
        "threads",
    )

    def __init__(self, domain_id: int, friendly_name: str, reading: WireReading) -> None:
        import datetime

        cpu, allocated, survived, calls_in, calls_out, threads, proxies, exported, on = reading
        self.domain_id: int = domain_id
        self.friendly_name: str = friendly_name
        self.monitoring: bool = on
        # Counted only while monitoring is on (AppDomain.monitoring_is_enabled): None if
        # it never was.
        counted = cpu >= 0
        self.calls_in: int | None = calls_in if counted else None
        self.calls_out: int | None = calls_out if counted else None
        self.processor_time: datetime.timedelta | None = (
            datetime.timedelta(microseconds=cpu / 1000) if counted else None
        )
        # Read each time, monitoring on or off.
        self.threads: int = threads
        self.proxies_held: int = proxies
        self.objects_exported: int = exported
        self.allocated_memory_size: int = allocated
        self.survived_memory_size: int = survived

    def as_dict(self) -> dict[str, Any]:
        """Return the figures by name."""
        return {name: getattr(self, name) for name in sorted(self.__slots__)}

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.as_dict().items())
        return f"DomainStatistics({fields})"

    def __str__(self) -> str:
        cpu = self.processor_time
        cpu_text = "-" if cpu is None else f"{cpu.total_seconds() * 1e3:.1f} ms"
        lines = [
            f"domain {self.domain_id} ({self.friendly_name!r}), monitoring "
            f"{'on' if self.monitoring else 'off'}",
            f"  calls in / out      {_or_dash(self.calls_in)} / {_or_dash(self.calls_out)}",
            f"  processor time      {cpu_text}",
            f"  threads             {self.threads}",
            f"  proxies held        {self.proxies_held}",
            f"  objects exported    {self.objects_exported}",
            f"  allocated memory    {self.allocated_memory_size:,} bytes",
            f"  survived memory     {self.survived_memory_size:,} bytes",
        ]
        return "\n".join(lines)


def _or_dash(value: int | None) -> str:
    return "-" if value is None else str(value)


register_op(_OP + "set", _op_set)
register_op(_OP + "set_everywhere", _op_set_everywhere)
register_op(_OP + "read", _op_read)
register_op(_OP + "process_survived", _op_process_survived)
