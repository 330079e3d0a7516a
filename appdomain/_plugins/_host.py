"""PluginHost: load a folder of plugins in a domain, and reload them while the host runs.

Each load is a *generation*: a new domain, shadow-copying the folder (so its files can be
edited while the domain runs), in which every plugin is imported before any call is sent
to it.  Calls go to the newest generation that loaded in full; a generation replaced by a
newer one takes no new calls and is unloaded by the watcher thread once the calls it was
serving have returned.  A load that fails (a syntax error, an exception at import) is
unloaded at once and leaves the current generation serving; ``reload_failed`` says why.

The watcher polls the folder's signature (names, sizes and modification times of its
files) every ``poll_interval`` seconds: no dependency, and a bounded delay.  A change is
loaded once the folder has stayed the same for 10 ms, so that a file seen while it is
being written is not loaded half written.
"""

from __future__ import annotations

import os
import threading
import weakref

from .. import _core, marshal
from .._domains import _runtime
from .._domains._domain import AppDomain
from .._domains._events import Event, EventArgs
from .._domains._setup import AppDomainSetup
from .._errors import AppDomainError, AppDomainUnloadedException
from . import _folder

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["PluginEventArgs", "PluginHost"]

# How long a changed folder must stay unchanged before it is loaded.
SETTLE_SECONDS = 0.01


class PluginEventArgs(EventArgs):
    """What a PluginHost event reports: the generation, its domain, the files, the error."""

    __slots__ = ("domain", "error", "files", "generation")
    generation: int
    domain: AppDomain | None
    files: tuple[str, ...]
    error: BaseException | None

    def __init__(
        self,
        generation: int,
        domain: AppDomain | None,
        files: tuple[str, ...] = (),
        error: BaseException | None = None,
    ) -> None:
        self.generation = generation
        self.domain = domain
        self.files = files  # the files whose change started this (relative to the folder)
        self.error = error

    def __repr__(self) -> str:
        return (
            f"PluginEventArgs(generation={self.generation!r}, domain={self.domain!r}, "
            f"files={self.files!r}, error={self.error!r})"
        )


class _Generation:
    """One load of the plugins: its domain, and the calls it is serving."""

    __slots__ = ("domain", "in_flight", "number", "plugins", "retired")

    def __init__(self, number: int, domain: AppDomain, plugins: tuple[str, ...]) -> None:
        self.number = number
        self.domain = domain
        self.plugins = plugins
        self.in_flight = 0
        self.retired = False


class PluginHost:
    """Host the plugins of a folder in a domain; reload them, in a new domain, when they change.

    ``folder`` holds the plugins: each module ``name.py`` or package ``name/`` not starting
    with ``_``.  ``host.invoke("name", "function", *args)`` (or ``host["name"].function(*args)``)
    calls a plugin's function in the current generation's domain.  Events, fired on the
    watcher thread: ``reloaded`` (a new generation serves), ``reload_failed`` (a load
    failed; the old generation still serves), ``unloaded`` (an old generation's domain was
    unloaded once its calls had finished).
    """

    folder: str
    name: str
    poll_interval: float
    cache_path: str | os.PathLike[str] | None
    reloaded: Event
    reload_failed: Event
    unloaded: Event

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        name: str = "plugins",
        poll_interval: float = 0.025,
        cache_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(folder, (str, os.PathLike)):
            raise TypeError(
                f"'folder' must be str or os.PathLike (got {folder!r} that is a "
                f"{type(folder).__name__})"
            )
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"PluginHost: the plugin folder {os.fspath(folder)!r} does not exist"
            )
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"'name' must be a non-empty str (got {name!r} that is a {type(name).__name__})"
            )
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)):
            raise TypeError(
                f"'poll_interval' must be a number of seconds (got {poll_interval!r} that is a "
                f"{type(poll_interval).__name__})"
            )
        if not 0 < poll_interval <= 60:
            raise ValueError(
                "'poll_interval' must be more than 0 and at most 60 seconds "
                f"(got {poll_interval!r})"
            )
        if cache_path is not None and not isinstance(cache_path, (str, os.PathLike)):
            raise TypeError(
                f"'cache_path' must be str or os.PathLike or None "
                f"(got {cache_path!r} that is a {type(cache_path).__name__})"
            )
        self.folder = os.path.abspath(os.fspath(folder))
        self.name = name
        self.poll_interval = float(poll_interval)
        self.cache_path = cache_path
        self.reloaded = Event("reloaded")
        self.reload_failed = Event("reload_failed")
        self.unloaded = Event("unloaded")
        # The error of the last load that failed (None once a load succeeds).
        self.last_error: BaseException | None = None
        self._lock = threading.Lock()  # guards the generations and their counts
        # One load at a time (watcher or reload()); re-entrant, so that an event handler,
        # which runs under it, may call reload() or close().
        self._reload_lock = threading.RLock()
        self._current: _Generation | None = None
        self._retired: list[_Generation] = []
        self._numbers = 0
        self._signature: _folder.Signature = ()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._closed = False
        self._loader = 0  # the thread running a reload (its event handlers run on it)
        self._on_unload: _Closer | None = None

    # -- life ------------------------------------------------------------------------------

    def start(self) -> PluginHost:
        """Load the plugins (raising if that fails) and start watching the folder."""
        if self._closed:
            raise AppDomainError(f"plugin host {self.name!r} is closed")
        if self._current is not None:
            return self
        self._signature = _folder.signature(self.folder)
        generation = self._load(())
        self._current = generation
        watcher = threading.Thread(
            target=_watch, args=(weakref.ref(self),), name=f"appdomain-plugins-{self.name}"
        )
        self._watcher = watcher
        watcher.start()
        # Before threading waits for non-daemon threads at exit: stop watching then.
        threading._register_atexit(_close_at_exit, weakref.ref(self))  # type: ignore[attr-defined]
        if not _runtime.info.is_default:
            # The plugin domains belong to the default domain: close them with this one.
            self._on_unload = _Closer(weakref.ref(self))
            _runtime.domain_unload += self._on_unload
        return self

    def close(self) -> None:
        """Stop watching and unload every generation's domain (calls still running abort)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._wake.set()
        watcher = self._watcher
        if (
            watcher is not None
            and watcher is not threading.current_thread()
            and self._loader != threading.get_ident()  # not from a handler of a reload()
        ):
            watcher.join()  # it may wait for the reload lock, held here in that case
        with self._reload_lock, self._lock:
            generations = [*self._retired, *([self._current] if self._current else [])]
            self._retired, self._current = [], None
        for generation in generations:
            self._unload(generation)
        if self._on_unload is not None:
            _runtime.domain_unload -= self._on_unload
            self._on_unload = None

    def __enter__(self) -> PluginHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what it serves ----------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """The number of the generation that takes new calls (1 for the first load)."""
        return self._serving().number

    @property
    def domain(self) -> AppDomain:
        """The domain of the generation that takes new calls."""
        return self._serving().domain

    @property
    def plugins(self) -> tuple[str, ...]:
        """The plugins the current generation loaded."""
        return self._serving().plugins

    def _serving(self) -> _Generation:
        generation = self._current
        if generation is None:
            raise AppDomainError(
                f"plugin host {self.name!r} is "
                + ("closed" if self._closed else "not started: call start() first")
            )
        return generation

    def invoke(self, plugin: str, function: str, /, *args: object, **kwargs: object) -> Any:
        """Call plugin.function(*args, **kwargs) in the current generation; return its result."""
        with self._lock:
            generation = self._serving()
            if plugin not in generation.plugins:
                raise LookupError(
                    f"no plugin {plugin!r} in {self.folder!r} (loaded: "
                    f"{', '.join(generation.plugins) or 'none'})"
                )
            generation.in_flight += 1
        try:
            wire_args = marshal.encode_call(args, kwargs)
            result = _core.call(
                generation.domain.route, "domain.callback", (plugin, function, wire_args)
            )
            return marshal.from_shareable(result)
        finally:
            with self._lock:
                generation.in_flight -= 1
                done = generation.retired and generation.in_flight == 0
            if done:
                self._wake.set()  # the watcher unloads it

    def __getitem__(self, plugin: str) -> _Plugin:
        return _Plugin(self, plugin)

    # -- reloading ---------------------------------------------------------------------------

    def reload(self) -> bool:
        """Load the folder again now, as a change would; return whether the new load serves."""
        return self._reload(_folder.signature(self.folder), ("(reload)",))

    def _reload(self, signature: _folder.Signature, files: tuple[str, ...]) -> bool:
        with self._reload_lock:
            if self._closed or self._current is None:
                return False
            self._loader = threading.get_ident()
            try:
                return self._reload_locked(signature, files)
            finally:
                self._loader = 0

    def _reload_locked(self, signature: _folder.Signature, files: tuple[str, ...]) -> bool:
        serving = self._serving()
        self._signature = signature
        try:
            generation = self._load(files)
        except Exception as exc:
            self.last_error = exc
            self.reload_failed.fire(
                self, PluginEventArgs(serving.number, serving.domain, files, exc)
            )
            return False
        with self._lock:
            old, self._current = self._current, generation
            if old is not None:
                old.retired = True
                self._retired.append(old)
        self.last_error = None
        self.reloaded.fire(self, PluginEventArgs(generation.number, generation.domain, files))
        self._unload_finished()
        return True

    def _load(self, files: tuple[str, ...]) -> _Generation:
        """Create a domain on a copy of the folder and import every plugin in it."""
        self._numbers += 1
        number = self._numbers
        setup = AppDomainSetup(
            application_base=self.folder, shadow_copy_files=True, cache_path=self.cache_path
        )
        domain = AppDomain.create_domain(f"{self.name}-{number}", setup)
        try:
            names = tuple(_folder.plugin_names(self.folder))
            for plugin in names:
                domain.load(plugin)
        except BaseException:
            AppDomain.unload(domain)
            raise
        return _Generation(number, domain, names)

    def _unload_finished(self) -> None:
        """Unload the retired generations whose calls have all returned."""
        with self._lock:
            done = [g for g in self._retired if g.in_flight == 0]
            self._retired = [g for g in self._retired if g.in_flight]
        for generation in done:
            self._unload(generation)

    def _unload(self, generation: _Generation) -> None:
        try:
            AppDomain.unload(generation.domain)
        except AppDomainUnloadedException:
            pass
        except AppDomainError as exc:  # its threads would not stop: try again later
            self.last_error = exc
            with self._lock:
                self._retired.append(generation)
            return
        self.unloaded.fire(self, PluginEventArgs(generation.number, generation.domain))

    def _poll(self) -> None:
        """One look at the folder: reload on a change, unload what finished."""
        signature = _folder.signature(self.folder)
        if signature != self._signature:
            # A file being written is seen first truncated or half written: reload once
            # the folder has stayed the same for SETTLE_SECONDS.
            while not self._stop.wait(SETTLE_SECONDS):
                again = _folder.signature(self.folder)
                if again == signature:
                    break
                signature = again
            self._reload(signature, _folder.changed_files(self._signature, signature))
        self._unload_finished()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"generation {self._numbers}"
        return f"<PluginHost {self.name!r} on {self.folder!r}, {state}>"

    # -- .NET-style names ------------------------------------------------------------------

    Invoke = invoke
    Reload = reload


class _Plugin:
    """A plugin of a host: its functions are called in the generation current at each call."""

    __slots__ = ("_host", "_name")

    def __init__(self, host: PluginHost, name: str) -> None:
        self._host = host
        self._name = name

    def __getattr__(self, function: str) -> Any:
        if function.startswith("__"):
            raise AttributeError(function)  # copy, pickle and friends probe for these
        host, plugin = self._host, self._name

        def call(*args: object, **kwargs: object) -> Any:
            return host.invoke(plugin, function, *args, **kwargs)

        call.__name__ = function
        return call

    def __repr__(self) -> str:
        return f"<plugin {self._name!r} of {self._host!r}>"


def _watch(host_ref: weakref.ref[PluginHost]) -> None:
    """The watcher thread: poll the folder until the host closes or is collected."""
    while True:
        host = host_ref()
        if host is None or host._stop.is_set():
            return
        wake, interval = host._wake, host.poll_interval
        del host  # hold no reference while waiting: a forgotten host can be collected
        wake.wait(interval)
        wake.clear()
        host = host_ref()
        if host is None or host._stop.is_set():
            return
        try:
            host._poll()
        except Exception as exc:  # a folder that vanished, say: report it, keep watching
            host.last_error = exc
        del host


class _Closer:
    """A domain_unload handler that closes a host (held weakly) as its domain unloads."""

    __slots__ = ("host_ref",)

    def __init__(self, host_ref: weakref.ref[PluginHost]) -> None:
        self.host_ref = host_ref

    def __call__(self, sender: object, args: object) -> None:
        host = self.host_ref()
        if host is not None:
            host.close()


def _close_at_exit(host_ref: weakref.ref[PluginHost]) -> None:
    host = host_ref()
    if host is not None:
        host.close()
