"""Start appdomain inside each interpreter and serve the operations every domain answers.

The default domain (the main interpreter) starts its dispatcher lazily, the first time
another domain may need to call back into it.  Every other domain is booted by
``boot_subdomain`` right after its interpreter is created.  Both then answer the
``domain.*`` operations below through the call path.
"""

from __future__ import annotations

import _frozen_importlib_external  # importlib.machinery's loaders, without importing it
import gc
import importlib
import os
import sys
import threading
import time

from .. import _aliases, _core
from .._core import Route, WakeSocket, _compat, is_internal, register_op, state
from .._errors import ThreadAbortException
from ._events import Event, EventArgs, UnhandledExceptionEventArgs

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing, collections.abc and socket cost every new domain ~5 ms
    import _socket
    import types
    from collections.abc import Callable, Sequence
    from importlib.machinery import ModuleSpec
    from typing import Any

    from .._core._wire import Shareable

    # What a new domain gets from its creator: (domain id, name, sys.path, the default
    # domain's route, the main script's path and module name, the queue to report on).
    type BootConfig = tuple[int, str, tuple[str, ...], tuple[int, int, str, int], str, str, int]

__all__ = ["info", "ensure_started", "boot_subdomain", "MAIN_ALIAS", "wire_module", "load_module"]

# The default domain's main script is imported under this name in other domains (_aliases).
MAIN_ALIAS = _aliases.MAIN_ALIAS


class DomainInfo:
    """What this interpreter knows about itself as a domain."""

    def __init__(self, id: int, name: str, is_default: bool) -> None:
        self.id = id
        self.name = name
        self.is_default = is_default
        self.default_route: Route | None = None
        self.main_path = ""
        self.main_module = ""


def _default_name() -> str:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return os.path.basename(path) if path else "DefaultDomain"


_IS_MAIN = _core.CURRENT_INTERP == _core.MAIN_INTERP
info = DomainInfo(
    id=_core.CURRENT_INTERP + 1,
    name=_default_name() if _IS_MAIN else f"Domain{_core.CURRENT_INTERP + 1}",
    is_default=_IS_MAIN,
)
data: dict[str, Shareable] = {}
_start_lock = threading.Lock()


def ensure_started() -> Route:
    """Start this domain's dispatcher if needed and return its route."""
    if state.route is not None:
        return state.route
    with _start_lock:
        if state.route is None:
            _start_dispatcher(daemon=info.is_default)
    assert state.route is not None
    if info.is_default and info.default_route is None:
        info.default_route = state.route
    return state.route


def _start_dispatcher(*, daemon: bool) -> None:
    inbox = _compat.queue_create()
    waker = WakeSocket()
    _sockets_to_close.add(waker.sock)
    releases = _compat.queue_create()
    pool = _core.Pool(inbox, waker, daemon=daemon)
    state.pool = pool
    state.route = Route(_core.CURRENT_INTERP, inbox, waker.address, releases)
    _core.install_entry_points()
    native = _core.native_module()
    if native is not None:
        native.register()
    pool.start()


# The dispatcher's own sockets, closed once the domain's threads are gone (join_threads).
_sockets_to_close: set[_socket.socket] = set()


def boot_subdomain(cfg: BootConfig) -> None:
    """Initialise this fresh interpreter as a domain and report its route to the creator."""
    domain_id, name, _sys_path, default_route, main_path, main_module, reply_queue = cfg
    info.id = domain_id
    info.name = name
    info.is_default = False
    info.default_route = Route(*default_route)
    alias_creator_main(main_path, main_module)
    _quiet_aborts()
    route = ensure_started()
    _compat.queue_put(reply_queue, tuple(route))


def _boot_deferred() -> None:
    """Boot this interpreter from the configuration its creator left in _deferred, if any.

    Such an interpreter was made for one isolated test and becomes a domain only once
    something in it imports this module (see _deferred).
    """
    deferred = sys.modules.get(f"{__package__}._deferred")
    cfg = getattr(deferred, "cfg", None)
    if cfg is not None and not _IS_MAIN:
        setattr(deferred, "cfg", None)  # noqa: B010  (a module found by name, typed object)
        boot_subdomain(cfg)


# -- the default domain's main script, seen from other domains ---------------------------------


# True where "__main__" on the wire names the creator's main script, not this interpreter's:
# every domain but the default, and a host process of another's (a Ray actor).
_main_aliased = False


def alias_creator_main(main_path: str, main_module: str) -> None:
    """Load the creator's main script (path, or module name) for what names "__main__"."""
    global _main_aliased
    _main_aliased = True
    info.main_path = main_path
    info.main_module = main_module
    sys.meta_path.insert(0, _MainAliasFinder())
    # appdomain.marshal, which loads later (on first use), finds the alias there.
    _aliases.local_to_wire[MAIN_ALIAS] = "__main__"
    _aliases.wire_to_local["__main__"] = MAIN_ALIAS


class _MainAliasFinder:  # a meta path finder; importlib.abc would cost every domain ~4 ms
    """Import the default domain's main script as MAIN_ALIAS, on first use."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != MAIN_ALIAS:
            return None
        import importlib.util  # on first use: with types, ~0.4 ms of every domain's start

        path = info.main_path
        if info.main_module:
            spec = importlib.util.find_spec(info.main_module)
            if spec is not None and spec.origin:
                path = spec.origin
        if path:
            return importlib.util.spec_from_file_location(
                MAIN_ALIAS, path, loader=_MainLoader(MAIN_ALIAS, path)
            )
        raise ImportError(
            "the default domain's __main__ is not a script file (interactive session or -c), "
            "so its classes and functions cannot be loaded in another domain; move them to a module"
        )


# True while this domain imports the default domain's main script.
importing_main = False


class _MainLoader(_frozen_importlib_external.SourceFileLoader):
    """Load the main script, noting it so that its unguarded top-level code fails clearly."""

    def exec_module(self, module: types.ModuleType) -> None:
        global importing_main
        importing_main = True
        try:
            super().exec_module(module)
        finally:
            importing_main = False


def exec_module_from_file(
    name: str, path: str, loader: _frozen_importlib_external.SourceFileLoader | None = None
) -> types.ModuleType:
    """Import the file at path as module name (registered in sys.modules unless it fails)."""
    import importlib.util  # on first use (see _MainAliasFinder)

    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import module {name!r} from {path!r}", name=name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def wire_module(module: str) -> str:
    """Name a module as other domains should: this domain's alias of __main__ becomes __main__."""
    if module == MAIN_ALIAS:
        return "__main__"
    return module


def load_module(module: str) -> types.ModuleType:
    """Import a module named by another domain (``__main__`` is the default domain's script)."""
    if module == "__main__" and _main_aliased:
        module = MAIN_ALIAS
    return importlib.import_module(module)


def main_script() -> tuple[str, str]:
    """Describe the default domain's main script for new domains: (path, module name)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or ""
    spec = getattr(main, "__spec__", None)
    name = spec.name if spec is not None and spec.name not in ("__main__", None) else ""
    return (os.path.abspath(path) if path else "", name)


# -- events --------------------------------------------------------------------------------


def _quiet_aborts() -> None:
    """Let threads ended by an unload's abort end silently, as .NET's ThreadAbortException does."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not isinstance(args.exc_value, ThreadAbortException):
            previous(args)

    threading.excepthook = hook


def _install_excepthooks() -> None:
    previous_thread_hook = threading.excepthook

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None and not isinstance(args.exc_value, ThreadAbortException):
            _raise_unhandled(args.exc_value, is_terminating=False)
        previous_thread_hook(args)

    threading.excepthook = thread_hook


def _raise_unhandled(exc: BaseException, *, is_terminating: bool) -> None:
    unhandled_exception.fire(_sender(), UnhandledExceptionEventArgs(exc, is_terminating))


# Returns this domain's AppDomain object, the sender of its events: set by _domain when it
# loads, which it has whenever a handler is subscribed (handlers subscribe through it).
current_domain: Callable[[], object] | None = None


def _sender() -> object:
    return current_domain() if current_domain is not None else None


domain_unload = Event("domain_unload")
unhandled_exception = Event("unhandled_exception", on_first_subscribe=_install_excepthooks)


# -- operations every domain answers -----------------------------------------------------------


def _op_set_data(payload: tuple[str, Shareable]) -> None:
    key, value = payload
    data[key] = value


def _op_get_data(key: str) -> tuple[bool, Shareable]:
    # Whether the key is there at all: a stored None is not the caller's default.
    return (True, data[key]) if key in data else (False, None)


def _op_callback(payload: tuple[str, str, Shareable]) -> Shareable:
    from .. import marshal

    module_name, qualname, wire_args = payload
    func: Any = load_module(module_name)
    for part in qualname.split("."):
        func = getattr(func, part)
    args, kwargs = marshal.decode_call(wire_args)
    result = func(*args, **kwargs)
    wire: Shareable = marshal.to_shareable(result, name="result")
    return wire


def _op_execute_assembly(payload: tuple[str, tuple[str, ...]]) -> int:
    import runpy

    path, argv = payload
    saved_argv, saved_path0 = sys.argv, sys.path[0] if sys.path else None
    sys.argv = [path, *argv]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        return _exit_code(exc.code)
    finally:
        sys.argv = saved_argv
        if sys.path and sys.path[0] != saved_path0:
            del sys.path[0]
    return 0


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    # What Python does for `sys.exit("message")`: the script's own output, not a diagnostic.
    print(code, file=sys.stderr)
    return 1


# How long unload lets a domain's threads end by themselves (their sockets shut down)
# before it aborts them.
ABORT_GRACE_SECONDS = 0.05


# Orders an unload's steps here against its cancel, which may run first when the unloader
# gave up on a step that then ran late (a thread held this domain's GIL meanwhile): each
# cancel starts a new generation, and a step of an earlier one stops short.
_unload_lock = threading.Lock()
_generation = 0


def _claim(token: int) -> bool:
    """Take one claim from an unload step's token; False when the unloader gave up on it."""
    try:
        _compat.queue_get(token)
    except _compat.QueueError:
        return False
    return True


def _op_unload_begin(token: int) -> int:
    """Run domain_unload, then abort what still runs here; return how many threads were hit."""
    with _unload_lock:
        if not _claim(token):
            return 0  # the unloader gave up before this ran: the unload is cancelled
        generation = _generation
        state.unloading = True
    if len(domain_unload):
        domain_unload.fire(_sender(), EventArgs())
    with _unload_lock:
        if generation != _generation:
            return 0  # cancelled while its handlers ran
        return _stop_threads()


def _stop_threads() -> int:
    for hook in list(_core.unload_hooks):
        try:
            hook()
        except Exception:  # a failing clean-up must not keep the domain alive
            pass
    state.aborting = True
    me = threading.get_ident()
    # Shut sockets first: threads blocked in accept()/recv() then leave on their own, and
    # an abort landing in their clean-up code is avoided.  Threads blocked in appdomain's
    # own waits (replies, channels) raise ThreadAbortException themselves once woken.
    _shutdown_sockets()
    waiting = set(_core.state.waiting)
    _core.wake_waiting_threads()
    pool = state.pool
    workers = {t.ident for t in pool.threads} if pool is not None else set()
    targets = set(state.inside)
    own_threads = [
        thread
        for thread in threading.enumerate()
        if thread.ident not in workers
        and thread is not threading.main_thread()
        and not isinstance(thread, threading._DummyThread)
        and thread.ident != me
    ]
    grace_until = time.monotonic() + ABORT_GRACE_SECONDS
    for thread in own_threads:
        thread.join(max(0.0, grace_until - time.monotonic()))
        if thread.is_alive():
            targets.add(thread.ident or 0)
    targets.discard(me)
    targets.discard(0)
    # A second, asynchronous abort would land somewhere in their way out, perhaps inside an
    # import, whose lock it would leave held: every later entry into this domain, the
    # unload's own included, would then wait forever (seen on 3.14, 1 unload in 6).
    targets -= waiting
    if targets:
        _load_unwinding_modules()
    for ident in targets:
        _async_raise(ident)
    return len(targets)


def _load_unwinding_modules() -> None:
    """Import now what an aborted call imports on its way out: its error crosses back with
    its traceback.  An abort landing inside that import would leave the import lock held."""
    import traceback  # noqa: F401

    from .. import marshal  # noqa: F401


def _async_raise(ident: int) -> None:
    # Only bytecode boundaries see the exception: a thread stuck in a long C call stays
    # stuck until the call returns, which is why unload has a timeout.
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(ThreadAbortException)
    )


def _shutdown_sockets() -> None:
    """Shut down this domain's sockets so threads blocked in accept()/recv() wake up."""
    socket = sys.modules.get("socket")
    if socket is None:  # never imported here: the domain has no socket objects
        return
    for obj in gc.get_objects():
        if isinstance(obj, socket.socket) and not is_internal(obj):
            try:
                obj.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _op_unload_cancel(_: None) -> None:
    cancel_unload()


def cancel_unload() -> None:
    """Serve this domain again after a cancelled unload."""
    global _generation
    with _unload_lock:
        _generation += 1
        state.unloading = False
        state.aborting = False
        native = _core.native_module()
        if native is not None:
            native.register()  # release_interp closed this domain to native calls
        if state.pool is not None:
            state.pool.restart()


def join_threads(deadline: float, report_queue: int, token: int) -> None:
    """Wait until deadline (monotonic) for this domain's threads to end, then release its
    resources.

    Runs on the domain's unload helper thread, switched into this domain, with two claims
    on token (see _domains._bounded).  Raises TimeoutError when threads remain, or when
    the unloader gave up meanwhile, so the unload can be cancelled with the domain intact.
    """
    if not _claim(token):
        return  # the unloader gave up before this ran; nobody reads the report
    me = threading.current_thread()
    if state.pool is not None:
        state.pool.stop()
    for thread in threading.enumerate():
        if thread is me or thread is threading.main_thread():
            continue
        if isinstance(thread, threading._DummyThread):
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            raise TimeoutError(f"thread {thread.name!r} is still running")
    if not _claim(token):
        raise TimeoutError("the unload gave up waiting")  # the cancel follows
    # Tell the unloader which channels hold values sent from here, to re-send them, and
    # which entry queues to wait on before destroying the interpreter.
    from .._channels import _rehome  # here: a domain's start need not import channels

    channels = tuple(_rehome.sent_to)
    _compat.queue_put(report_queue, (channels, tuple(_core.state.entry_queues)))
    # Nothing runs here any more: release what the interpreter's teardown would not.
    for sock in list(_sockets_to_close):
        sock.close()
    _core.close_mailboxes()


def wait_at_exit(deadline: float) -> None:
    """At the process's exit, let this domain's threads end as Python lets its own end.

    Runs this domain's threading exit callbacks (concurrent.futures shuts its executors
    down there), then waits until deadline (monotonic) for its threads: appdomain's own
    (dispatchers, "appdomain-*") excepted.  Raises TimeoutError naming those still running
    (and the callbacks that failed), else RuntimeError naming the callbacks that failed.
    Runs on the domain's unload helper thread, switched into this domain.
    """
    callbacks: list[Callable[[], object]] = getattr(threading, "_threading_atexits", [])
    failed = []
    for callback in reversed(callbacks):
        try:
            callback()
        except Exception as exc:  # as Python's own exit: report it (below), carry on
            failed.append(f"exit callback failed: {exc!r}")
    callbacks.clear()  # run once: the domain's finalization would run them again
    pool = state.pool
    internal = {t.ident for t in pool.threads} if pool is not None else set()
    me = threading.current_thread()
    still = []
    for thread in threading.enumerate():
        if (
            thread is me
            or thread is threading.main_thread()
            or isinstance(thread, threading._DummyThread)
            or thread.ident in internal
            or thread.name.startswith("appdomain-")
        ):
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            still.append(repr(thread.name))
    # Raised, not printed: the default domain reports it on its own `appdomain` logger,
    # where the program's logging configuration is (this domain's logging is not).
    if still:
        raise TimeoutError("; ".join([f"thread {', '.join(still)} still running", *failed]))
    if failed:
        raise RuntimeError("; ".join(failed))


register_op("domain.set_data", _op_set_data)
register_op("domain.get_data", _op_get_data)
register_op("domain.callback", _op_callback)
register_op("domain.execute_assembly", _op_execute_assembly)
register_op("domain.unload_begin", _op_unload_begin, control=True)
register_op("domain.unload_cancel", _op_unload_cancel, control=True)


# Last, once every operation above is registered: a deferred boot (see _boot_deferred).
_boot_deferred()
