"""Create, use and unload application domains: isolated subinterpreters with their own GIL."""

from __future__ import annotations

import atexit
import os
import sys
import weakref

from .. import _core
from .._core import Route
from .._errors import (
    AppDomainError,
    AppDomainUnloadedException,
)
from . import _calls, _create, _exit, _registry, _runtime
from ._events import Event
from ._hosting import SubinterpreterHost
from ._setup import AppDomainSetup
from ._startup import Startup

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs every new domain ~3 ms to import
    import datetime
    from collections.abc import Callable, Sequence
    from typing import Any, overload

    from ._assemblies import AssemblyInfo
    from ._monitoring import DomainStatistics
    from ._startup import WireStartup

__all__ = ["AppDomain", "AppDomainSetup"]

_NO_TYPE = object()  # create_instance_and_unwrap got a class, not (module, type name)


class _AppDomainType(type):
    """Give AppDomain its class-level properties (CurrentDomain)."""

    @property
    def current_domain(cls) -> AppDomain:
        """The domain this code runs in."""
        return _current()

    @property
    def CurrentDomain(cls) -> AppDomain:
        return _current()

    @property
    def monitoring_is_enabled(cls) -> bool:
        """Whether every domain counts its calls and CPU time (see _monitoring); off at start."""
        from . import _monitoring

        return _monitoring.is_enabled()

    @monitoring_is_enabled.setter
    def monitoring_is_enabled(cls, on: bool) -> None:
        from . import _monitoring

        _monitoring.set_enabled(on)

    @property
    def MonitoringIsEnabled(cls) -> bool:
        return cls.monitoring_is_enabled

    @MonitoringIsEnabled.setter
    def MonitoringIsEnabled(cls, on: bool) -> None:
        cls.monitoring_is_enabled = on

    @property
    def monitoring_survived_process_memory_size(cls) -> int:
        """Bytes of live small objects in every domain's allocator, summed (see _monitoring)."""
        from . import _monitoring

        _monitoring.require_enabled()
        return _monitoring.survived_process_memory()

    @property
    def MonitoringSurvivedProcessMemorySize(cls) -> int:
        return cls.monitoring_survived_process_memory_size


class AppDomain(metaclass=_AppDomainType):
    """A handle on one application domain (a subinterpreter), usable from any domain."""

    # Seconds unload waits for the domain's threads before giving up.
    unload_timeout: float = 10.0
    # Seconds the process waits at exit for the threads of the domains still loaded, as
    # Python waits for non-daemon threads, before it reports them (stderr, the "appdomain"
    # logger) and unloads the domains.  Default: APPDOMAIN_EXIT_TIMEOUT, else 30.
    exit_timeout: float = _exit.env_exit_timeout()
    # The status the process exits with when a domain cannot be unloaded at exit (it could
    # not be finalized, so appdomain ends the process itself).  None: the program's status
    # is not known, and it is 1.  The pytest plugin sets it to the session's exit status.
    # Where every domain unloads, Python exits as usual with its own status.
    exit_code: int | None = None

    __slots__ = ("__weakref__", "_id", "_name", "_route")
    _id: int
    _name: str
    _route: Route | None

    def __init__(self, *_: object) -> None:
        raise TypeError("use AppDomain.create_domain(name) to create a domain")

    @classmethod
    def _handle(cls, domain_id: int, name: str, route: Route | None) -> AppDomain:
        existing = _handles.get(domain_id)
        if existing is not None:
            if route is not None and existing._route is None:
                existing._route = route
            return existing
        handle = object.__new__(cls)
        handle._id = domain_id
        handle._name = name
        handle._route = route
        _handles[domain_id] = handle
        return handle

    # -- identity ----------------------------------------------------------------------

    @property
    def id(self) -> int:
        """The domain's number: 1 for the default domain, never reused."""
        return self._id

    @property
    def friendly_name(self) -> str:
        """The name given at creation (the main script's name for the default domain)."""
        return self._name

    def is_default_app_domain(self) -> bool:
        """Tell whether this is the default domain (the main interpreter)."""
        return self._id == _core.MAIN_INTERP + 1

    def __repr__(self) -> str:
        return f"<AppDomain #{self._id} {self._name!r}>"

    @property
    def route(self) -> Route:
        """Where calls into this domain go (internal; remoting uses it)."""
        if self._route is None:
            self._route = (
                _runtime.ensure_started() if self is _current() else _registry.route_of(self._id)
            )
        return self._route

    # -- creating and unloading ------------------------------------------------------------

    @classmethod
    def create_domain(cls, friendly_name: str, setup: AppDomainSetup | None = None) -> AppDomain:
        """Create a new domain: a fresh subinterpreter with its own GIL and modules."""
        if not isinstance(friendly_name, str):
            raise TypeError(
                f"'friendly_name' must be str (got {friendly_name!r} that is a "
                f"{type(friendly_name).__name__})"
            )
        if setup is not None and not isinstance(setup, AppDomainSetup):
            raise TypeError(
                f"'setup' must be AppDomainSetup or None (got {setup!r} that is a "
                f"{type(setup).__name__})"
            )
        if _runtime.importing_main:
            # As multiprocessing's bootstrapping error: without this, every domain would
            # re-run the script's top level and create domains without end.
            raise AppDomainError(
                f"domain {_runtime.info.id} imported the main script {_runtime.info.main_path!r} "
                "to load a class or function from it, and the script tried to create a domain "
                "while being imported; put the script's top-level code under "
                "'if __name__ == \"__main__\":'"
            )
        setup = setup or AppDomainSetup()
        startup = Startup.of(setup, _calls.importable_name)
        host = setup.host
        if host is not None and not isinstance(host, SubinterpreterHost):
            if not _runtime.info.is_default:
                raise AppDomainError(
                    f"a domain on {host!r} is created from the default domain (the main "
                    f"interpreter), which owns the links to other processes; this code runs "
                    f"in domain {_runtime.info.id}"
                )
            return _recorded(
                _create.create_hosted(friendly_name, setup, host, startup, cls.unload_timeout)
            )
        if _runtime.info.is_default:
            return _recorded(
                _create.create_here(
                    friendly_name, setup, list(sys.path), startup, cls.unload_timeout
                )
            )
        default = _registry.default_route()
        domain_id, name, route = _core.call(
            default,
            "domain.create",
            (friendly_name, tuple(setup.sys_path(sys.path)), startup.to_wire()),
        )
        return cls._handle(domain_id, name, Route(*route))

    @staticmethod
    def unload(domain: AppDomain, timeout: float | None = None) -> None:
        """Unload domain: run its domain_unload event, stop its threads, destroy it.

        Raises CannotUnloadAppDomainException, leaving the domain loaded and usable, when
        its threads do not stop within timeout seconds (default AppDomain.unload_timeout).
        The bound holds even when a thread holds the domain's GIL in C code that never
        releases it (a catastrophic regex, a blocking ctypes.PyDLL call): the error then
        says so and names the thread, and the domain serves again once the GIL is free.
        """
        if not isinstance(domain, AppDomain):
            raise TypeError(
                f"'domain' must be an AppDomain (got {domain!r} that is a {type(domain).__name__})"
            )
        if timeout is None:
            timeout = AppDomain.unload_timeout
        if domain.is_default_app_domain():
            raise AppDomainError("the default domain cannot be unloaded")
        if domain is _current():
            raise AppDomainError(
                f"{domain!r} cannot unload itself from one of its own threads; "
                "unload it from another domain"
            )
        if _runtime.info.is_default:
            _registry.unload(domain.id, timeout)
        else:
            _core.call(_registry.default_route(), "domain.unload", (domain.id, float(timeout)))

    def __enter__(self) -> AppDomain:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._id in _registry.records or not _runtime.info.is_default:
            try:
                AppDomain.unload(self)
            except AppDomainUnloadedException:
                pass

    # -- using a domain ----------------------------------------------------------------------

    def set_data(self, name: str, value: object) -> None:
        """Store a copy of value in the domain under name."""
        _calls.set_data(self.route, name, value)

    # Overloads for type checkers only (typing.overload at run time would import typing into
    # every domain, ~3 ms of its start); the definition after them is the one that runs.
    if TYPE_CHECKING:

        @overload
        def get_data(self, name: str) -> Any: ...
        @overload
        def get_data[T](self, name: str, default: T) -> T: ...

    def get_data(self, name: str, default: object = None) -> Any:
        """Return a copy of the value stored in the domain under name, or default.

        Type checkers take the value to be of the default's type:
        ``d.get_data("count", 0)`` is an ``int`` to them.
        """
        return _calls.get_data(self.route, name, default)

    def do_callback[**P, R](self, callback: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run an importable function inside the domain; return (a copy of) its result.

        Type checkers check the arguments against the function's parameters and see its
        return type.
        """
        # A copy of what callback returned: an R, which marshal's object does not say.
        return _calls.do_callback(self.route, callback, args, kwargs)  # type: ignore[return-value]

    def execute_assembly(self, path: str | os.PathLike[str], args: Sequence[str] = ()) -> int:
        """Run a script as __main__ with its own sys.argv; return the exit code."""
        return _calls.execute_assembly(self.route, path, args)

    # The overloads exist for type checkers only: typing.overload at run time would import
    # typing into every domain (~3 ms of its start).  The run-time method takes either form.
    if TYPE_CHECKING:

        @overload
        def create_instance_and_unwrap[T](
            self, type_: type[T], /, *args: object, **kwargs: object
        ) -> T: ...
        @overload
        def create_instance_and_unwrap(
            self, module_name: str, type_name: str, /, *args: object, **kwargs: object
        ) -> Any: ...
        def create_instance_and_unwrap(
            self, module_name: str | type, /, *args: object, **kwargs: object
        ) -> Any: ...

    else:

        def create_instance_and_unwrap(self, module_name, type_name=_NO_TYPE, *args, **kwargs):
            """Create a type inside the domain and return a proxy to it (or a copy).

            Name the type by module and type name, ``("calcs", "Calculator")``, or pass the
            class itself, ``(Calculator)``: it is found in the domain by its module and
            qualified name, and type checkers see the result as a ``Calculator``.  The
            arguments that follow go to the constructor.  A MarshalByRefObject comes back as
            a transparent proxy, a serializable type as a copy.  Module "__main__" means the
            default domain's main script.
            """
            if isinstance(module_name, type):
                module_name, type_name, args = (
                    *_calls.type_name(module_name),
                    args if type_name is _NO_TYPE else (type_name, *args),
                )
            elif type_name is _NO_TYPE:
                raise TypeError(
                    "create_instance_and_unwrap() takes a class, or a module name and a type "
                    f"name (got only {module_name!r})"
                )
            return _calls.create_instance(self.route, module_name, type_name, args, kwargs)

    if TYPE_CHECKING:

        @overload
        def create_instance_from_and_unwrap[T](
            self, path: str | os.PathLike[str], type_: type[T], /, *args: object, **kwargs: object
        ) -> T: ...
        @overload
        def create_instance_from_and_unwrap(
            self, path: str | os.PathLike[str], type_name: str, /, *args: object, **kwargs: object
        ) -> Any: ...

    def create_instance_from_and_unwrap(
        self,
        path: str | os.PathLike[str],
        type_name: str | type,
        /,
        *args: object,
        **kwargs: object,
    ) -> Any:
        """Like create_instance_and_unwrap, loading the module from a file path.

        The type is named by its name in the file, or by a class whose qualified name it has
        there: type checkers then see the result as that class, which fits when the file is
        the one that defines it (a plugin loaded from its own file).
        """
        return _calls.create_instance_from(self.route, path, type_name, args, kwargs)

    # -- where it runs --------------------------------------------------------------------

    @property
    def host(self) -> object:
        """What runs the domain: SubinterpreterHost(), or the ProcessHost/RayHost it was created on.

        Known in the default domain, which creates domains on other hosts.
        """
        hosted = _registry.hosted_of(self._id)
        if hosted is None:
            if _registry.is_foreign_id(self._id):
                raise AppDomainError(f"the host of {self!r} is known in the default domain")
            return SubinterpreterHost()
        return hosted.host

    @property
    def process_id(self) -> int:
        """The id of the process the domain runs in (this one's for a subinterpreter)."""
        return _registry.where(self._id)[0]

    @property
    def node(self) -> str:
        """The name of the machine the domain runs on."""
        return _registry.where(self._id)[1]

    @property
    def host_exited(self) -> Event:
        """Raised in the default domain when the domain's host process ends on its own.

        The handler gets (domain, HostExitedEventArgs(cause, exit_code, signal)); the
        domain is then unloaded.  A subinterpreter's host is this process: it never fires.
        """
        hosted = _registry.hosted_of(self._id)
        if hosted is not None:
            return hosted.exited
        if _registry.is_foreign_id(self._id):
            raise AppDomainError(f"subscribe to host_exited of {self!r} in the default domain")
        event = _quiet_hosts.get(self._id)
        if event is None:
            event = _quiet_hosts[self._id] = Event("host_exited")
        return event

    @host_exited.setter
    def host_exited(self, value: Event) -> None:
        if value is not self.host_exited:
            raise TypeError("use 'domain.host_exited += handler' to subscribe")

    # -- events (subscribed from inside the domain they concern) -------------------------------

    def _own_event(self, event: Event) -> Event:
        if self is not _current():
            raise AppDomainError(
                f"subscribe to {event.name} from inside {self!r} (e.g. with do_callback), "
                f"not from {_current()!r}"
            )
        return event

    @property
    def domain_unload(self) -> Event:
        """Raised inside this domain just before it is unloaded."""
        return self._own_event(_runtime.domain_unload)

    @domain_unload.setter
    def domain_unload(self, value: Event) -> None:
        if value is not _runtime.domain_unload:
            raise TypeError("use 'domain.domain_unload += handler' to subscribe")

    @property
    def unhandled_exception(self) -> Event:
        """Raised inside this domain when an exception escapes one of its threads."""
        return self._own_event(_runtime.unhandled_exception)

    @unhandled_exception.setter
    def unhandled_exception(self, value: Event) -> None:
        if value is not _runtime.unhandled_exception:
            raise TypeError("use 'domain.unhandled_exception += handler' to subscribe")

    # -- modules ("assemblies") and their events (in _assemblies) --------------------------

    def get_assemblies(self) -> list[AssemblyInfo]:
        """Return the modules loaded in the domain, as AssemblyInfo(name, file, version)."""
        from . import _assemblies

        return _assemblies.get_assemblies(self.route)

    def load(self, module_name: str) -> AssemblyInfo:
        """Import a module in the domain and return its AssemblyInfo (ImportError if missing)."""
        from . import _assemblies

        return _assemblies.load(self.route, module_name)

    @property
    def assembly_load(self) -> Event:
        """Raised inside this domain when a module has been imported from a file."""
        from . import _assemblies

        return self._own_event(_assemblies.assembly_load)

    @assembly_load.setter
    def assembly_load(self, value: Event) -> None:
        _check_subscribed("assembly_load", value)

    @property
    def assembly_resolve(self) -> Event:
        """Raised inside this domain when an import found nothing: a handler may answer a
        path (a file, or a folder to look in) or a ModuleSpec to load instead."""
        from . import _assemblies

        return self._own_event(_assemblies.assembly_resolve)

    @assembly_resolve.setter
    def assembly_resolve(self, value: Event) -> None:
        _check_subscribed("assembly_resolve", value)

    @property
    def first_chance_exception(self) -> Event:
        """Raised inside this domain when an exception is raised, before any handler runs.

        Off until a handler subscribes (it then costs on every raise in the domain)."""
        from . import _assemblies

        return self._own_event(_assemblies.first_chance_exception)

    @first_chance_exception.setter
    def first_chance_exception(self, value: Event) -> None:
        _check_subscribed("first_chance_exception", value)

    # -- monitoring (in _monitoring, which says exactly what each figure counts) -------------

    @property
    def monitoring_total_processor_time(self) -> datetime.timedelta:
        """CPU time of the threads while they ran in this domain, since monitoring went on."""
        import datetime

        from . import _monitoring

        _monitoring.require_enabled()
        return datetime.timedelta(microseconds=_monitoring.read(self.route)[0] / 1000)

    @property
    def monitoring_total_allocated_memory_size(self) -> int:
        """Bytes of arena memory this domain's allocator has taken since the domain started."""
        from . import _monitoring

        _monitoring.require_enabled()
        return _monitoring.read(self.route)[1]

    @property
    def monitoring_survived_memory_size(self) -> int:
        """Bytes of this domain's live objects of up to 512 bytes (its allocator's blocks)."""
        from . import _monitoring

        _monitoring.require_enabled()
        return _monitoring.read(self.route)[2]

    def statistics(self) -> DomainStatistics:
        """Take a snapshot: calls in/out, threads, proxies held, objects exported, counters."""
        from . import _monitoring

        return _monitoring.DomainStatistics(self._id, self._name, _monitoring.read(self.route))

    @property
    def MonitoringTotalProcessorTime(self) -> datetime.timedelta:
        return self.monitoring_total_processor_time

    @property
    def MonitoringTotalAllocatedMemorySize(self) -> int:
        return self.monitoring_total_allocated_memory_size

    @property
    def MonitoringSurvivedMemorySize(self) -> int:
        return self.monitoring_survived_memory_size

    # -- .NET names ------------------------------------------------------------------------

    @property
    def Id(self) -> int:
        return self._id

    @property
    def FriendlyName(self) -> str:
        return self._name

    @property
    def DomainUnload(self) -> Event:
        return self.domain_unload

    @DomainUnload.setter
    def DomainUnload(self, value: Event) -> None:
        self.domain_unload = value

    @property
    def UnhandledException(self) -> Event:
        return self.unhandled_exception

    @UnhandledException.setter
    def UnhandledException(self, value: Event) -> None:
        self.unhandled_exception = value

    @property
    def AssemblyLoad(self) -> Event:
        return self.assembly_load

    @AssemblyLoad.setter
    def AssemblyLoad(self, value: Event) -> None:
        self.assembly_load = value

    @property
    def AssemblyResolve(self) -> Event:
        return self.assembly_resolve

    @AssemblyResolve.setter
    def AssemblyResolve(self, value: Event) -> None:
        self.assembly_resolve = value

    @property
    def FirstChanceException(self) -> Event:
        return self.first_chance_exception

    @FirstChanceException.setter
    def FirstChanceException(self, value: Event) -> None:
        self.first_chance_exception = value

    GetAssemblies = get_assemblies
    Load = load
    CreateInstanceAndUnwrap = create_instance_and_unwrap
    CreateInstanceFromAndUnwrap = create_instance_from_and_unwrap
    IsDefaultAppDomain = is_default_app_domain
    SetData = set_data
    GetData = get_data
    DoCallBack = do_callback
    ExecuteAssembly = execute_assembly
    CreateDomain = create_domain
    Unload = unload


# -- handles (one per domain id and interpreter, so `is` compares domains) ------------------

_handles: weakref.WeakValueDictionary[int, AppDomain] = weakref.WeakValueDictionary()


def _current() -> AppDomain:
    info = _runtime.info
    return AppDomain._handle(info.id, info.name, _core.state.route)


def handle(domain_id: int, name: str, route: Route | None) -> AppDomain:
    """Return this interpreter's handle on the domain (made on first use)."""
    return AppDomain._handle(domain_id, name, route)


def _recorded(domain_id: int) -> AppDomain:
    record = _registry.records[domain_id]
    return AppDomain._handle(domain_id, record.name, record.route)


def adopt(name: str, interp_id: int, route: tuple[int, int, str, int]) -> AppDomain:
    """Register an interpreter booted from deferred_boot's configuration; return its handle."""
    return _recorded(_create.adopt(name, interp_id, route))


deferred_boot = _create.deferred_boot

# The host_exited events of subinterpreter domains: this process is their host, so they never fire.
_quiet_hosts: dict[int, Event] = {}


def _op_create(
    payload: tuple[str, tuple[str, ...]] | tuple[str, tuple[str, ...], WireStartup],
) -> tuple[int, str, tuple[int, int, str, int]]:
    name, sys_path = payload[0], payload[1]
    startup = Startup.from_wire(payload[2]) if len(payload) > 2 else None
    domain_id = _create.create_here(
        name, AppDomainSetup(), list(sys_path), startup, AppDomain.unload_timeout
    )
    record = _registry.records[domain_id]
    return (domain_id, record.name, (*record.route,))


def _unload_all_at_exit() -> None:
    """Wait for the domains' threads, then unload them, so the interpreter can finalize.

    A domain that cannot be unloaded ends the process without finalizing it (see _exit).
    """
    unload_hosted_at_exit()
    records = _registry.records
    loaded = [(domain_id, rec.name, rec.route.interp_id) for domain_id, rec in records.items()]
    if loaded:
        _exit.finish(
            loaded,
            _registry.unload,
            AppDomain.exit_timeout,
            AppDomain.unload_timeout,
            AppDomain.exit_code,
        )


def unload_hosted_at_exit() -> None:
    """Unload the domains on other hosts (their processes end; nothing here waits for them)."""
    _registry.unload_hosted(AppDomain.unload_timeout)


def _check_subscribed(name: str, value: object) -> None:
    """Accept only the event itself back: 'd.event += handler' assigns it to the property."""
    from . import _assemblies

    if value is not getattr(_assemblies, name):
        raise TypeError(f"use 'domain.{name} += handler' to subscribe")


_runtime.current_domain = _current  # the sender of this domain's events

if _runtime.info.is_default:
    _core.register_op("domain.create", _op_create)
    atexit.register(_unload_all_at_exit)
