"""Create domains: boot appdomain in a fresh subinterpreter, or start a domain on another host.

Only the default domain creates domains (others ask it: ``domain.create``); each function
here records the new domain in ``_registry`` and returns its id, from which ``_domain``
makes the ``AppDomain`` handle.
"""

from __future__ import annotations

import sys

from .. import _core
from .._core import Route, _compat
from .._errors import AppDomainError
from . import _preload, _registry, _runtime, _site

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .._core._wire import Shareable
    from ._hosting import Host
    from ._setup import AppDomainSetup
    from ._startup import Startup

__all__ = ["adopt", "boot_prologue", "create_hosted", "create_here", "deferred_boot"]


def boot_prologue(indent: str, check_path: bool) -> str:
    """The start of a new interpreter's boot, as source lines indented by indent.

    It serves the interpreter appdomain's boot modules (_preload), gives it the creator's
    import path, and does site's work where it was created without site (_site).  It reads
    the names the creator shares: preload, cfg, site_plan, site_code, site_absent.  With
    check_path, top-level modules are served only while sys.path is still the creator's (a
    test's interpreter, _testing._light); a domain's own .pth lines may add to its path.
    """
    check = ", cfg[2]" if check_path else ""
    lines = (
        "if preload is not None:",
        f'    _appdomain_preload = {{"__name__": "{_preload.__name__}"}}',
        "    exec(marshal.loads(preload[0]), _appdomain_preload)",
        f'    _appdomain_preload["install"](preload[1], preload[2]{check})',
        "    del _appdomain_preload",
        "sys.path[:] = list(cfg[2])",
        "if site_plan is not None:",
        '    exec(marshal.loads(site_code), {"site_plan": site_plan, "site_absent": site_absent})',
    )
    return "".join(f"{indent}{line}\n" for line in lines)


# Run in a fresh interpreter: the prologue, then boot appdomain there.
# The collector stays off while the domain boots: its imports make no garbage cycles, and
# the collections they would trigger cost ~1 ms for nothing.  Then what the boot made goes
# to the oldest generation (freeze, unfreeze): the first young collection would look at all
# of it (~0.5 ms, in the domain's first call).
# The module is named from the imported one, so moving it cannot leave a stale string here.
# Compiled once per process (~0.8 ms a domain with site's work): the domain runs `boot`.
_BOOT_TEXT = (
    "import gc, sys\ngc.disable()\ntry:\n"
    + boot_prologue("    ", check_path=False)
    + f"""\
    import {_runtime.__name__} as _appdomain_runtime
    _appdomain_runtime.boot_subdomain(cfg)
finally:
    gc.freeze()  # what the boot made is old: no collection looks at it all again at once
    gc.unfreeze()
    gc.enable()
    for _appdomain_name in ("boot", "cfg", "site_plan", "site_code", "site_absent", "preload",
                            "_appdomain_preload", "_appdomain_runtime", "_appdomain_name"):
        globals().pop(_appdomain_name, None)  # what is there: a failed boot reports its error
"""
)
_BOOT_SOURCE = "import marshal\nexec(marshal.loads(boot))\ndel marshal\n"

_said_pure = False


def _say_pure_once() -> None:
    global _said_pure
    if _core.native_missing and not _said_pure:
        _said_pure = True
        import warnings

        warnings.warn(
            "appdomain: the native domain switch (appdomain._native) was not built, most "
            "likely for want of a C compiler when appdomain was installed; cross-domain calls "
            "use the slower pure-Python path",
            RuntimeWarning,
            stacklevel=4,
        )


def create_here(
    name: str,
    setup: AppDomainSetup,
    inherited: list[str],
    startup: Startup | None,
    unload_timeout: float,
) -> int:
    """Start a subinterpreter domain: its shadow copies, its boot, then its initializer.

    An initializer that raises unloads the domain (within unload_timeout) and raises.
    """
    _say_pure_once()
    if _core.CURRENT_INTERP == _core.MAIN_INTERP:
        # msgpack (under appdomain.marshal) must be loaded by the main interpreter before
        # any subinterpreter imports it, or CPython 3.13 aborts at exit.
        from .. import marshal  # noqa: F401
    sys_path = setup.sys_path(inherited)
    shadow = None
    if startup is not None and startup.folders:
        from . import _shadow

        shadow = _shadow.prepare(name, startup.folders, startup.cache_path)
        if shadow is not None:
            sys_path = shadow.sys_path(sys_path)
    try:
        domain_id = _start_interp(name, sys_path)
    except BaseException:
        if shadow is not None:
            shadow.remove()
        raise
    if shadow is not None:
        from . import _shadow

        _shadow.track(domain_id, shadow)
    route = _registry.records[domain_id].route
    _monitor(route)
    if startup is not None and startup.initializer is not None:
        try:
            startup.run_initializer(name, route)
        except BaseException:
            _registry.unload(domain_id, unload_timeout)
            raise
    return domain_id


def _monitor(route: Route) -> None:
    from . import _monitoring

    _monitoring.loaded_routes = _registry.loaded_routes
    _monitoring.started(route)


def _start_interp(name: str, sys_path: list[str]) -> int:
    default = _runtime.ensure_started()
    interp_id, site_plan = _site.create_interp()
    domain_id = interp_id + 1
    reply_queue = _compat.queue_create()
    main_path, main_module = _runtime.main_script()
    cfg = (
        domain_id,
        name,
        tuple(sys_path),
        (*default,),  # a plain tuple: a Route (a tuple subclass) cannot cross
        main_path,
        main_module,
        reply_queue,
    )
    try:
        shared: dict[str, Shareable] = {
            "boot": _preload.compiled(_BOOT_TEXT, "<appdomain boot>"),
            "cfg": cfg,
            "site_plan": site_plan,
            "site_code": _preload.compiled(_site.SOURCE, "<appdomain site>"),
            "site_absent": _site.absent(sys_path),
            "preload": _preload.bundle(sys_path, site_plan),
        }
        excinfo = _compat.exec_in(interp_id, _BOOT_SOURCE, shared)
        if excinfo is not None:
            detail = getattr(excinfo, "formatted", None) or getattr(excinfo, "msg", "")
            raise AppDomainError(f"domain {name!r} failed to start: {detail}")
        route = Route(*_compat.queue_get(reply_queue))
    except BaseException:
        _compat.destroy_interp(interp_id)
        raise
    finally:
        _compat.queue_destroy(reply_queue)
    _registry.add(domain_id, name, route)
    return domain_id


def deferred_boot(name: str, interp_id: int, reply_queue: int) -> _runtime.BootConfig:
    """The boot configuration of an interpreter made by _site.create_interp, which becomes
    the domain named name only when something in it first imports _runtime (_deferred);
    its route then arrives on reply_queue, for adopt.  For the pytest plugin's test
    interpreters, which most tests never need as domains."""
    default = _runtime.ensure_started()
    main_path, main_module = _runtime.main_script()
    return (interp_id + 1, name, tuple(sys.path), (*default,), main_path, main_module, reply_queue)


def adopt(name: str, interp_id: int, route: tuple[int, int, str, int]) -> int:
    """Record, as a loaded domain, an interpreter booted from deferred_boot's configuration."""
    domain_id = interp_id + 1
    _registry.add(domain_id, name, Route(*route))
    _monitor(Route(*route))
    return domain_id


def create_hosted(
    name: str, setup: AppDomainSetup, host: Host, startup: Startup, unload_timeout: float
) -> int:
    """Start a domain on another host (a process, a Ray actor), then run its initializer."""
    if setup.shadow_copy_files:
        raise AppDomainError(
            f"shadow copy works for domains of this process; {host!r} loads the files "
            "themselves (copy them before creating the domain, or use a subinterpreter domain)"
        )
    hosted = host.start_domain(name, setup, list(sys.path))
    domain_id = hosted.route.interp_id + 1
    _registry.add(domain_id, name, hosted.route, hosted)
    try:
        startup.run_initializer(name, hosted.route)
    except BaseException:
        _registry.unload(domain_id, unload_timeout)
        raise
    return domain_id
