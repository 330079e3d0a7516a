"""A test's interpreter, made with only what running a test needs; a domain when it must be.

A domain's boot loads appdomain's call path, starts its dispatcher and registers it, and
its unload stops the threads through that path: ~9 ms of CPU a test over CPython's own
create and destroy, most of what isolating a test costs.  Most tests need none of it: their
module is imported and their function called, and the outcome comes back packed.  So a
test's interpreter is created without that boot; its creator runs the ``_remote``
operations in it directly (``call``: the calling thread runs them there, the reply comes
back on a queue), and destroys it after the test.

It still becomes a full domain, from the configuration left in it (``_domains._deferred``),
as soon as it needs one: when code in it imports appdomain's runtime (``AppDomain.current_
domain``, a nested domain...), and when the plugin needs it (``domain``: fixture values that
cross by appdomain's marshalling, the unload of a test that left threads running).
"""

from __future__ import annotations

import marshal as _stdlib_marshal
import threading

from .._core import _compat
from .._domains import _create, _domain, _preload, _runtime, _site
from .._errors import AppDomainError, AppDomainUnloadedException
from . import _remote

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .._core._wire import Shareable
    from .._domains._domain import AppDomain
    from ._remote import TestSpec

__all__ = ["LightDomain", "knows_imports", "learn_imports"]

# Run in the new interpreter: the modules running a test imports served from what the
# creator read once (_domains._preload), the creator's import path, what site would have
# done (compiled once), and the boot configuration for later.
_BOOT = (
    "import marshal, sys\n"
    + _create.boot_prologue("", check_path=True)
    + """\
import appdomain._domains._deferred as _deferred
_deferred.cfg = cfg
del cfg, site_plan, site_code, site_absent, preload, _deferred, marshal
"""
)
# What a test's interpreter imports from files to run a test, beside what is frozen or built
# in (in the order it imports them); a module missing here loads as usual, only slower.
_MODULES = (
    "appdomain",
    "appdomain._domains",
    "appdomain._domains._deferred",
    "__future__",
    "importlib",
    "types",
    "appdomain._testing",
    "appdomain._testing._loaders",
    "appdomain._testing._standin",
    "appdomain._testing._remade",
    _remote.__name__,
    "appdomain._testing._ar",
)
# What test modules' imports loaded from files in earlier tests' interpreters (learn_imports),
# served to the next ones as _MODULES are: every test module's, in the order first named.
_learned: tuple[str, ...] = ()
_learned_from: set[str] = set()  # the test modules whose imports were named
_learning = threading.Lock()
_CALL = f"""\
from {_remote.__name__} import light_call as _light_call
_light_call(op, packed, reply)
del _light_call, op, packed, reply
"""
_RUN_ENCODED = f"""\
from {_remote.__name__} import light_run_encoded as _light_run_encoded
_light_run_encoded(wire, reply)
del _light_run_encoded, wire, reply
"""
# Makes the interpreter a domain, if the test did not already (see _domains._deferred).
_UPGRADE = f"import {_runtime.__name__}\n"


class LightDomain:
    """One test's interpreter: no domain until it needs to be one (see the module's text)."""

    def __init__(self, name: str) -> None:
        from .. import marshal  # noqa: F401  (msgpack: loaded here before any subinterpreter)

        self.name = name
        self._domain: AppDomain | None = None
        self._replies = _compat.queue_create()
        self._booted = _compat.queue_create()  # the route, once it booted as a domain
        try:
            self.interp_id, site_plan = _site.create_interp()
        except BaseException:
            self._destroy_queues()
            raise
        try:
            cfg = _domain.deferred_boot(name, self.interp_id, self._booted)
            shared: dict[str, Shareable] = {
                "cfg": cfg,
                "site_plan": site_plan,
                "site_code": _preload.compiled(_site.SOURCE, "<appdomain site>"),
                "site_absent": _site.absent(cfg[2]),
                "preload": _preload.bundle(cfg[2], site_plan, _MODULES + _learned),
            }
            failure = _compat.exec_in(self.interp_id, _BOOT, shared)
            if failure is not None:
                raise AppDomainError(
                    f"the interpreter for {name!r} failed to start: {_why(failure)}"
                )
        except BaseException:
            _compat.destroy_interp(self.interp_id)
            self._destroy_queues()
            raise

    def call(self, op: str, spec: TestSpec) -> Any:
        """Run one of _remote's packed operations here; return its reply, unpacked.

        The calling thread runs it in the interpreter, domain or not (the test runs on it, as
        on the C switch's route), so the operations need no registering in its call path.
        """
        shared: dict[str, Shareable] = {
            "op": op,
            "packed": _remote.pack(spec),
            "reply": self._replies,
        }
        return self._run(op, _CALL, shared)

    def run_encoded(self, *args: object) -> Any:
        """Run _remote.run_test(*args) here, the arguments crossing by appdomain's marshalling;
        return its reply.  By-reference values make the interpreter a domain first."""
        from .. import marshal

        wire = marshal.encode_call(args, {})
        if _has_reference(wire):
            self.domain()  # a proxy here calls through the domain's call path
        shared: dict[str, Shareable] = {"wire": wire, "reply": self._replies}
        return self._run("run_test", _RUN_ENCODED, shared)

    def _run(self, what: str, source: str, shared: dict[str, Shareable]) -> Any:
        failure = _compat.exec_in(self.interp_id, source, shared)
        self._is_domain()  # the test may have made it one
        if failure is not None:
            raise AppDomainError(f"{what} failed in the test's interpreter: {_why(failure)}")
        kind, data = _compat.queue_get(self._replies)
        if kind == _remote.PACKED:
            return _stdlib_marshal.loads(data)
        from .. import marshal

        return marshal.from_shareable(data)

    def domain(self) -> AppDomain:
        """Return this interpreter as a domain, booting it as one first if it is not."""
        if not self._is_domain():
            failure = _compat.exec_in(self.interp_id, _UPGRADE)
            if failure is not None or not self._is_domain():
                why = "" if failure is None else f": {_why(failure)}"
                raise AppDomainError(f"the test's interpreter did not become a domain{why}")
        assert self._domain is not None
        return self._domain

    def is_domain(self) -> bool:
        """Tell whether this interpreter booted as a domain (the plugin's doing or the test's)."""
        return self._is_domain()

    def destroy(self) -> None:
        """Destroy the interpreter, which is no domain and runs no thread of the test's."""
        try:
            _compat.destroy_interp(self.interp_id)
        finally:
            self._destroy_queues()

    def unload_domain(self, timeout: float | None) -> None:
        """Unload it as a domain (AppDomain.unload), booting it as one first."""
        from .._domains._domain import AppDomain

        try:
            domain = self.domain()
        except AppDomainError:
            self.destroy()  # it never was a domain; nothing runs there but the test's threads
            raise
        try:
            AppDomain.unload(domain, timeout=timeout)
        except AppDomainUnloadedException:
            pass
        self._destroy_queues()

    def _is_domain(self) -> bool:
        if self._domain is None:
            try:
                route = _compat.queue_get(self._booted)
            except _compat.QueueEmpty:
                return False
            self._domain = _domain.adopt(self.name, self.interp_id, route)
        return True

    def _destroy_queues(self) -> None:
        _compat.queue_destroy(self._replies)
        _compat.queue_destroy(self._booted)


def knows_imports(module: str) -> bool:
    """Tell whether the modules test module's import loads are known (see learn_imports)."""
    return module in _learned_from


def learn_imports(module: str, imported: tuple[str, ...]) -> None:
    """Serve the next tests' interpreters the modules test module's import loaded from files.

    Like a domain's boot modules (``_domains._preload``), they are read once here, and a
    new interpreter is served each from the file its own import would have found, until
    its test module is imported (``_loaders.stop_serving``).  A module of a test module
    that imports none of them costs that interpreter only its entry.
    """
    global _learned
    with _learning:
        _learned_from.add(module)
        known = {*_MODULES, *_learned}
        new = tuple(name for name in dict.fromkeys(imported) if name not in known)
        if new:
            _learned = _learned + new


def _has_reference(node: Shareable) -> bool:
    """Tell whether an encoded value holds a by-reference one (any node tagged REFERENCE:
    every tuple of the tree is a node, so none is missed)."""
    if type(node) is not tuple or not node:
        return False
    from ..marshal._tags import REFERENCE

    return node[0] == REFERENCE or any(_has_reference(child) for child in node[1:])


def _why(failure: object) -> str:
    return str(getattr(failure, "formatted", None) or getattr(failure, "msg", "") or failure)
