"""Gather what a bug report needs: versions, call paths, socket routes, a quick self-check."""

from __future__ import annotations

import os
import platform
import socket
import statistics
import sys
import time
from importlib import metadata

from ._remoting import MarshalByRefObject

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Probe", "report"]

# How long the self-check's timed loops may run, in all (a domain create comes on top).
SELF_CHECK_SECONDS = 2.0


class Probe(MarshalByRefObject):
    """What the self-check creates in a new domain and calls."""

    def add(self, a: int, b: int) -> int:
        return a + b

    def call_back(self, probe: Probe, count: int) -> int:
        total = 0
        for i in range(count):
            total += probe.add(i, 1)
        return total


def report(version: str) -> list[tuple[str, str]]:
    """Return (topic, finding) rows for appdomain `version`, the self-check's figures last."""
    rows = [
        ("appdomain", version),
        ("python", f"{platform.python_implementation()} {sys.version.split()[0]}"),
        ("platform", f"{platform.system()} {platform.release()} {platform.machine()}"),
        ("subinterpreters", _subinterpreters()),
        ("per-interpreter GIL", _own_gil()),
        ("C switch", _c_switch()),
        ("msgpack", _msgpack()),
        ("socket routes", _socket_routes()),
    ]
    rows += _self_check()
    return rows


def _subinterpreters() -> str:
    if sys.version_info >= (3, 14):
        return "concurrent.interpreters (standard library)"
    try:
        backport = metadata.version("interpreters-pep-734")
    except metadata.PackageNotFoundError:
        backport = "not installed"
    return f"CPython's _interpreters, PEP 734 backport interpreters-pep-734 {backport}"


def _own_gil() -> str:
    import _interpreters

    gil = getattr(_interpreters.new_config("isolated"), "gil", "?")
    return "yes (each domain has its own)" if gil == "own" else f"no (config says {gil!r})"


def _c_switch() -> str:
    from . import _core

    try:
        from ._native import _ext  # noqa: F401 - imported to see whether it loads
    except ImportError as exc:
        return f"not built ({exc}): calls take the pure-Python routes, ~10x slower"
    if _core.native_module() is None:
        return "built, off (APPDOMAIN_PURE is set)"
    return "built, on"


def _msgpack() -> str:
    try:
        import msgpack
    except ImportError as exc:
        return f"missing ({exc})"
    c_ext = msgpack.Packer.__module__ == "msgpack._cmsgpack"
    where = "C extension" if c_ext else "pure-Python fallback"
    return (
        f"{msgpack.version[0]}.{msgpack.version[1]}.{msgpack.version[2]}, {where} in the "
        "main interpreter (domains always use the fallback)"
    )


def _socket_routes() -> str:
    routes = ["same-process (between domains)"]
    if hasattr(socket, "AF_UNIX") and hasattr(socket, "send_fds"):
        routes.append("SCM_RIGHTS (between processes)")
    if hasattr(socket.socket, "share"):
        routes.append("share/fromshare (between processes)")
    return ", ".join(routes)


def _self_check() -> list[tuple[str, str]]:
    from ._domains._domain import AppDomain

    begun = time.perf_counter()
    domain = AppDomain.create_domain("appdomain-info")
    created = time.perf_counter() - begun
    try:
        remote: Probe = domain.create_instance_and_unwrap(__name__, "Probe")
        here = Probe()
        call = _median_us(lambda: remote.add(1, 2), SELF_CHECK_SECONDS / 2)
        callback = _median_us(lambda: remote.call_back(here, 10), SELF_CHECK_SECONDS / 2) / 10
    finally:
        AppDomain.unload(domain)
    return [
        ("self-check create_domain", f"{created * 1e3:.1f} ms (the first one of this process)"),
        ("self-check proxy call", f"{call:.1f} µs (median)"),
        ("self-check callback", f"{callback:.1f} µs (median, into the default domain)"),
        ("cpus", str(os.cpu_count())),
    ]


def _median_us(call: Callable[[], object], seconds: float) -> float:
    """Median µs of call() over batches run for about `seconds`."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 3:
        begun = time.perf_counter()
        for _ in range(100):
            call()
        samples.append((time.perf_counter() - begun) / 100 * 1e6)
    return statistics.median(samples)
