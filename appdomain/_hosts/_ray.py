"""Run a domain on a Ray actor: RayHost, for work that needs more than one machine.

Each domain is one threaded Ray actor running appdomain's runtime as a host (``_child``),
joined to this process by a link whose frames travel as actor calls: this side hands
frames over with ``deliver`` and takes the actor's with a long-polling ``collect`` that
returns as soon as the actor has something to say.  Callbacks into this process come back
on those collects, so the driver needs no server of its own and works wherever it can
reach the cluster.  Ray is optional (``pip install appdomain[ray]``); without an address a
local Ray instance starts the first time it is needed, as the embedded default.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading

from .._core._foreign import PROCESS_KEY
from .._domains import _runtime
from .._errors import AppDomainError
from . import _frames, _links
from ._frames import FrameError
from ._link import Link
from ._linked import LinkedDomain

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from .._domains._setup import AppDomainSetup

__all__ = ["RayHost"]

# How long one collect waits in the actor for frames before it returns empty-handed: it
# bounds how late this side notices a stop, not how late a frame arrives.
POLL_SECONDS = 1.0
# How long starting an actor may take before the host gives up (a cluster without room).
START_SECONDS = 120.0

_init_lock = threading.Lock()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise AppDomainError(
            "RayHost needs Ray, which is not installed: install appdomain's extra with "
            "'pip install appdomain[ray]' (or 'pip install ray')"
        ) from None
    return ray


class RayHost:
    """Run the domain on a Ray actor: of a local Ray instance, or of the cluster at address."""

    __slots__ = ("address", "connect_timeout", "max_concurrency", "num_cpus", "resources")
    address: str | None
    num_cpus: float
    resources: dict[str, float]
    max_concurrency: int
    connect_timeout: float

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: float = 0,
        resources: dict[str, float] | None = None,
        max_concurrency: int = 64,
        connect_timeout: float = 60.0,
    ) -> None:
        if address is not None and not isinstance(address, str):
            raise TypeError(
                f"'address' must be str or None (got {address!r} that is a "
                f"{type(address).__name__})"
            )
        if isinstance(num_cpus, bool) or not isinstance(num_cpus, (int, float)) or num_cpus < 0:
            raise TypeError(f"'num_cpus' must be a number >= 0 (got {num_cpus!r})")
        if resources is not None and not (
            isinstance(resources, dict)
            and all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                for k, v in resources.items()
            )
        ):
            raise TypeError(f"'resources' must be a dict of str to number (got {resources!r})")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise TypeError(f"'max_concurrency' must be int (got {max_concurrency!r})")
        if max_concurrency < 4:
            # deliver, collect, and the calls and callbacks in between run at once.
            raise ValueError(f"'max_concurrency' must be >= 4 (got {max_concurrency})")
        if (
            isinstance(connect_timeout, bool)
            or not isinstance(connect_timeout, (int, float))
            or not connect_timeout > 0
        ):
            raise TypeError(f"'connect_timeout' must be a number > 0 (got {connect_timeout!r})")
        _import_ray()  # say now, not at the first domain, that Ray is missing
        self.address = address
        self.num_cpus = num_cpus
        self.resources = dict(resources or {})
        self.max_concurrency = max_concurrency
        self.connect_timeout = float(connect_timeout)

    def __repr__(self) -> str:
        return (
            f"RayHost(address={self.address!r}, num_cpus={self.num_cpus!r}, "
            f"resources={self.resources!r}, max_concurrency={self.max_concurrency!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RayHost):
            return NotImplemented
        return (self.address, self.num_cpus, self.resources, self.max_concurrency) == (
            other.address,
            other.num_cpus,
            other.resources,
            other.max_concurrency,
        )

    __hash__: ClassVar[None] = None  # type: ignore[assignment]  # compared by value

    def start_domain(self, name: str, setup: AppDomainSetup, sys_path: list[str]) -> RayDomain:
        """Start an actor running a domain named name; return it once it serves."""
        ray = _import_ray()
        _connect(ray, self.address, self.connect_timeout)
        actor_class = ray.remote(_HostActor).options(
            num_cpus=self.num_cpus,
            resources=self.resources or None,
            max_concurrency=self.max_concurrency,
            name=None,
        )
        actor = actor_class.remote(
            PROCESS_KEY, name, setup.sys_path(sys_path), _runtime.main_script()
        )
        conn = _DriverEnd(ray, actor)
        try:
            data = conn.recv_bytes(START_SECONDS)
            kind, body = _frames.decode(data)
            if kind != _frames.HELLO:
                raise FrameError(f"a Ray host's first frame must be HELLO (got kind {kind})")
        except EOFError as exc:
            _kill(ray, actor)
            raise AppDomainError(
                f"the Ray host of domain {name!r} failed to start: {exc}"
            ) from None
        except BaseException:
            _kill(ray, actor)
            raise
        key, pid, node, route, _lanes = body  # a lane is a local socket: none to an actor
        assert isinstance(key, str) and isinstance(pid, int) and isinstance(node, str)
        hello = (key, pid, node, _frames.route_field("HELLO", route))
        return RayDomain(self, name, conn, actor, hello)


def _connect(ray: Any, address: str | None, timeout: float) -> None:
    """Join the cluster at address, or start a local Ray instance, once per process."""
    with _init_lock:
        if ray.is_initialized():
            return
        # Ray puts the driver's working directory first on its workers' sys.path.  Run from
        # a checkout of appdomain, that directory holds the source folder appdomain/, which
        # lacks appdomain.marshal (marshal/ maps to it only when installed): the actors
        # would import that and fail.  The folder this appdomain was imported from is
        # right for them, and the domains get this process's sys.path anyway.
        where = "a local Ray instance" if address is None else f"the Ray cluster at {address!r}"
        outcome: list[BaseException | None] = []
        done = threading.Event()

        def init() -> None:
            try:
                if address is None:
                    ray.init(include_dashboard=False, log_to_driver=True, configure_logging=False)
                else:
                    ray.init(address=address, configure_logging=False)
            except BaseException as exc:  # reported by the waiting thread
                outcome.append(exc)
                done.set()
                return
            outcome.append(None)
            done.set()
            # Ray's local processes die with the thread that started them (the kernel's
            # parent-death signal follows the thread): this one stays for the process's life.
            threading.Event().wait()

        here = os.getcwd()
        os.chdir(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        try:
            # Ray retries an unreachable cluster for minutes: wait a bounded time for it,
            # on a thread of its own that outlives this call (see init).
            starter = threading.Thread(target=init, name="appdomain-ray-init", daemon=True)
            starter.start()
            done.wait(timeout)
        finally:
            os.chdir(here)
        if not outcome:
            raise AppDomainError(f"could not start or reach {where} within {timeout:g} s")
        error = outcome[0]
        if error is not None:
            raise AppDomainError(f"could not start or reach {where}: {error}") from error


def _kill(ray: Any, actor: Any) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # gone already
        pass


class _DriverEnd:
    """This side's end of a link to an actor: frames out as deliver calls, in by collect."""

    def __init__(self, ray: Any, actor: Any) -> None:
        self._ray = ray
        self._actor = actor
        self._sent = itertools.count()
        self._send_lock = threading.Lock()
        self._buffer: list[bytes] = []
        self._closed = False

    def send_bytes(self, frame: bytes, /) -> None:
        if self._closed:
            raise OSError("the link to the Ray actor is closed")
        with self._send_lock:  # numbered in the order sent: the actor puts them back in order
            self._actor.deliver.remote(next(self._sent), frame)

    def recv_bytes(self, timeout: float | None = None) -> bytes:
        ray = self._ray
        waited = 0.0
        while not self._buffer:
            if self._closed:
                raise EOFError("the link to the Ray actor is closed")
            try:
                self._buffer = list(ray.get(self._actor.collect.remote(POLL_SECONDS)))
            except Exception as exc:  # RayActorError, ActorDiedError, a lost node...
                raise EOFError(_death_words(exc)) from None
            waited += POLL_SECONDS
            if timeout is not None and waited >= timeout and not self._buffer:
                raise EOFError(f"the actor said nothing for {timeout:g} s")
        return self._buffer.pop(0)

    def close(self) -> None:
        self._closed = True


def _death_words(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = next((line for line in text if line.strip()), type(exc).__name__)
    return f"its Ray actor died ({type(exc).__name__}: {first.strip()[:300]})"


class _ActorEnd:
    """The actor's end of the link: frames in from deliver, out to collect."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._inbox: dict[int, bytes] = {}
        self._next_in = 0
        self._outbox: list[bytes] = []
        self._closed = False

    def deliver(self, seq: int, frame: bytes) -> None:
        with self._cond:
            self._inbox[seq] = frame
            self._cond.notify_all()

    def collect(self, timeout: float) -> list[bytes]:
        with self._cond:
            self._cond.wait_for(lambda: self._outbox or self._closed, timeout)
            frames, self._outbox = self._outbox, []
            return frames

    def send_bytes(self, frame: bytes, /) -> None:
        with self._cond:
            if self._closed:
                raise OSError("the link to the creator is closed")
            self._outbox.append(frame)
            self._cond.notify_all()

    def recv_bytes(self) -> bytes:
        with self._cond:
            self._cond.wait_for(lambda: self._next_in in self._inbox or self._closed)
            if self._next_in not in self._inbox:
                raise EOFError("the link to the creator is closed")
            frame = self._inbox.pop(self._next_in)
            self._next_in += 1
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class _HostActor:
    """The Ray actor hosting one domain (made a Ray actor class on first use)."""

    def __init__(
        self, creator_key: str, name: str, sys_path: list[str], main: tuple[str, str]
    ) -> None:
        sys.path[:] = sys_path + [p for p in sys.path if p not in sys_path]
        # The actor's own __main__ is Ray's worker: what the creator names "__main__" is
        # its main script, loaded on first use as in the creator's subinterpreters.
        _runtime.alias_creator_main(*main)
        from . import _child

        self._end = _ActorEnd()
        self._link = _child.serve_creator(self._end, creator_key, name)

    def deliver(self, seq: int, frame: bytes) -> None:
        self._end.deliver(seq, frame)

    def collect(self, timeout: float) -> list[bytes]:
        return self._end.collect(timeout)

    def pid(self) -> int:
        return os.getpid()


class RayDomain(LinkedDomain):
    """A domain running on a Ray actor: its route here, the actor, its end."""

    host: RayHost
    actor: Any

    def __init__(
        self,
        host: RayHost,
        name: str,
        conn: _DriverEnd,
        actor: Any,
        hello: tuple[str, int, str, tuple[int, int, str, int]],
    ) -> None:
        self.actor = actor
        key, pid, node, _origin = hello
        label = f"{name!r} (Ray actor, process {pid} on {node})"
        super().__init__(host, name, Link(conn, key, label, check_local=_links.check_local), hello)

    def end(self, deadline: float) -> None:
        """Kill the actor (its unload has run, or its time is up)."""
        _kill(_import_ray(), self.actor)
