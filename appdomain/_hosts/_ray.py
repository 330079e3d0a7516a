"""Run a domain on a Ray actor: RayHost, for work that needs more than one machine.

Each domain is one threaded Ray actor running appdomain's runtime as a host (``_child``),
joined to this process by a link whose frames travel as actor calls.  A call from a thread
of this process's main interpreter is one actor call, ``call``, whose result is the reply
(a bare actor call's cost, the common case).  A callback the request makes into this
process ends that actor call instead: its result is the callback, which the calling thread
serves itself, as on a process host's lane, and answers with a second actor call,
``answer``, whose result is again the reply or the next callback.  The rest of the link's
traffic (calls from this process's other interpreters and their callbacks, one-way calls,
releases) goes as frames: this side hands them over with ``deliver`` and takes the actor's
with a long-polling ``collect`` that returns as soon as the actor has something to say.  So
the driver needs no server of its own and works wherever it can reach the cluster.  Ray is
optional (``pip install appdomain[ray]``); without an address a local Ray instance starts
the first time it is needed, as the embedded default.
"""

from __future__ import annotations

import itertools
import os
import queue
import sys
import threading
import time

from .._core._foreign import PROCESS_KEY
from .._domains import _runtime
from .._errors import AppDomainError, AppDomainUnloadedException
from . import _frames, _links
from ._frames import FrameError
from ._link import Link
from ._linked import LinkedDomain

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from .._core._wire import Shareable
    from .._domains._setup import AppDomainSetup

__all__ = ["RayHost"]

# How long one collect waits in the actor for frames before it returns empty-handed: it
# bounds how late this side notices a stop, not how late a frame arrives.
POLL_SECONDS = 1.0
# How long starting an actor may take before the host gives up (a cluster without room).
START_SECONDS = 120.0
# The actor's concurrency group for deliver and collect: a thread pool of their own, so that
# calls holding all max_concurrency threads (each waiting on a callback, say) cannot keep
# out the deliver that brings the callback's reply.  One collect waits at a time; deliver
# calls are short.
LINK_GROUP = "appdomain-link"
LINK_THREADS = 4

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
        actor_class = ray.remote(concurrency_groups={LINK_GROUP: LINK_THREADS})(_HostActor)
        actor_class = actor_class.options(
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
        self.ray = ray
        self._actor = actor
        self._deliver = actor.deliver.options(concurrency_group=LINK_GROUP)
        self._collect = actor.collect.options(concurrency_group=LINK_GROUP)
        self._sent = itertools.count()
        self._send_lock = threading.Lock()
        self._buffer: list[bytes] = []
        self._closed = False

    def send_bytes(self, frame: bytes, /) -> None:
        if self._closed:
            raise OSError("the link to the Ray actor is closed")
        with self._send_lock:  # numbered in the order sent: the actor puts them back in order
            self._deliver.remote(next(self._sent), frame)

    def recv_bytes(self, timeout: float | None = None) -> bytes:
        ray = self.ray
        waited = 0.0
        while not self._buffer:
            if self._closed:
                raise EOFError("the link to the Ray actor is closed")
            try:
                self._buffer = list(ray.get(self._collect.remote(POLL_SECONDS)))
            except Exception as exc:  # RayActorError, ActorDiedError, a lost node...
                raise EOFError(_death_words(exc)) from None
            waited += POLL_SECONDS
            if timeout is not None and waited >= timeout and not self._buffer:
                raise EOFError(f"the actor said nothing for {timeout:g} s")
        return self._buffer.pop(0)

    def close(self) -> None:
        self._closed = True


class _RayLink(Link):
    """The driver's link to an actor: its main interpreter's threads call by ``call``."""

    def __init__(self, ray: Any, actor: Any, conn: _DriverEnd, key: str, label: str) -> None:
        super().__init__(conn, key, label, check_local=_links.check_local)
        self._direct = _DirectLane(self, ray, actor)

    def lane(self) -> _DirectLane | None:  # type: ignore[override]  # Lane's call, by actor
        return self._direct if self.cause is None else None


class _DirectLane:
    """What a Link asks of a lane, made of actor calls: a request's reply is the call's result.

    One object serves every thread: a call's state is its own actor calls.  A callback the
    request makes into this process comes back as that call's result instead of the reply;
    this thread serves it, as a lane's would, and answers with a second actor call
    (``answer``), whose result is again the reply or the next callback.
    """

    broken = False

    def __init__(self, link: Link, ray: Any, actor: Any) -> None:
        self.link = link
        self._ray = ray
        self._call = actor.call
        self._answer = actor.answer

    def call(
        self,
        key: str,
        origin: tuple[int, int, str, int],
        op: str,
        payload: Shareable,
        ctx: Shareable,
        timeout: float | None,
    ) -> tuple[int, bool, Shareable, Shareable]:
        """Send a request as an actor call and return its reply, serving its callbacks."""
        link = self.link
        frames = link.batch(_frames.CALL, (0, key, origin, op, payload, ctx), payload)
        deadline = None if timeout is None else time.monotonic() + timeout
        turn, answer = self._get(self._call.remote(frames), deadline)
        while True:
            try:
                kind, body = _take_turn(link, answer)
            except (FrameError, TypeError, ValueError) as exc:
                raise self._gone(f"sent a broken frame ({exc}); the link was closed") from None
            if kind == _frames.REPLY:
                return (0, body[1], body[2], body[3])
            call_id, key, origin, op, payload, ctx = body
            ok, value, ctx_back = link._run(key, origin, op, payload, ctx)
            # with the references the callback dropped, before its reply
            frames = link.batch(_frames.REPLY, (call_id, ok, value, ctx_back), value)
            turn, answer = self._get(self._answer.remote(turn, frames), deadline)

    def _get(self, ref: Any, deadline: float | None) -> tuple[int, list[bytes]]:
        ray = self._ray
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            turn, answer = ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise TimeoutError(f"domain {self.link.label} did not reply in time") from None
        except Exception as exc:  # RayActorError, ActorDiedError, a lost node...
            raise self._gone(f"ended: {_death_words(exc)}") from None
        return turn, answer

    def _gone(self, cause: str) -> AppDomainUnloadedException:
        """End the link with cause (unless it ended already) and say why it ended."""
        link = self.link
        link.close(cause)
        # Another thread (the reader, seeing the same death) may be closing it: once it is
        # closed, what the dead host held has been given back and the cause is final.
        link.closed.wait(5.0)
        return AppDomainUnloadedException(f"domain {link.label} {link.cause}")


def _take_turn(link: Link, frames: list[bytes]) -> tuple[int, tuple[Any, ...]]:
    """Take the releases that lead a turn's frames; return the frame that ends it.

    A turn is what one end sends the other in one actor call or its result: the releases
    it queued first, then a CALL (a request, or a callback) or the REPLY to one.
    """
    for index, data in enumerate(frames):
        kind, body = _decode(data)
        if kind == _frames.RELEASE:
            link.released(body)
        elif index == len(frames) - 1 and kind in (_frames.REPLY, _frames.CALL):
            return kind, body
        else:
            raise FrameError(f"a direct call's turn holds a frame of kind {kind} there")
    raise FrameError("a direct call's turn ends with no REPLY or CALL")


class _Turn:
    """One direct call served in the actor: the frames between its thread and the driver.

    The thread running the request hands the Ray thread what ends each turn (a callback into
    the driver, or the reply), which the Ray thread returns as its method's result; the
    driver's answer to a callback comes back by the next ``answer`` call.
    """

    broken = False

    def __init__(self, link: Link) -> None:
        self.link = link
        self.done = False
        self.out: queue.SimpleQueue[list[bytes]] = queue.SimpleQueue()
        # The driver's answers to callbacks; None when the link ended.
        self.back: queue.SimpleQueue[list[bytes] | None] = queue.SimpleQueue()

    def call(
        self,
        key: str,
        origin: tuple[int, int, str, int],
        op: str,
        payload: Shareable,
        ctx: Shareable,
        timeout: float | None,
    ) -> tuple[int, bool, Shareable, Shareable]:
        """Call back into the driver (the lane of the request's thread): end this turn, wait."""
        link = self.link
        self.out.put(link.batch(_frames.CALL, (1, key, origin, op, payload, ctx), payload))
        try:
            answer = self.back.get(timeout=timeout)
        except queue.Empty:
            self.broken = True  # a late answer would be taken as the next one's
            raise TimeoutError(f"domain {link.label} did not reply in time") from None
        if answer is None:
            raise AppDomainUnloadedException(f"domain {link.label} {link.cause or 'ended'}")
        try:
            kind, body = _take_turn(link, answer)
            if kind != _frames.REPLY:
                raise FrameError("a callback's answer must be its REPLY")
        except (FrameError, TypeError, ValueError) as exc:
            link.close(f"sent a broken frame ({exc}); the link was closed")
            raise AppDomainUnloadedException(f"domain {link.label} {link.cause}") from None
        return (0, body[1], body[2], body[3])

    def run(self, body: tuple[Any, ...]) -> None:
        """Run the request on this (worker) thread, its callbacks going by this turn."""
        link = self.link
        frames: list[bytes] = []
        link._local.lane = self  # this thread's calls to the driver: callbacks of the turn
        try:
            call_id, key, origin, op, payload, ctx = body
            ok, value, ctx_back = link._run(key, origin, op, payload, ctx)
            # with the references it dropped, before its reply
            frames = link.batch(_frames.REPLY, (call_id, ok, value, ctx_back), value)
        finally:
            link._local.lane = None
            self.done = True
            self.out.put(frames)  # without a REPLY if that failed: the driver ends the link


class _Turns:
    """The actor's direct calls: started by ``call``, resumed by ``answer``, on a pool."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._open: dict[int, _Turn] = {}
        # A thread per request running at once (kept for the next): a request waiting on a
        # callback holds its thread, not one of Ray's.
        self._jobs: queue.SimpleQueue[tuple[_Turn, tuple[Any, ...]]] = queue.SimpleQueue()
        self._idle = 0
        link.on_close(self._closed)

    def start(self, frames: list[bytes]) -> tuple[int, list[bytes]]:
        link = self._link
        try:
            kind, body = _take_turn(link, frames)
            if kind != _frames.CALL:
                raise FrameError("a direct call must end with its CALL")
        except FrameError as exc:
            link.close(f"sent a broken frame ({exc}); the link was closed")
            raise
        turn = _Turn(link)
        with self._lock:
            turn_id = next(self._ids)
            self._open[turn_id] = turn
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        self._jobs.put((turn, body))
        if spawn:
            threading.Thread(target=self._work, name="appdomain-ray-call", daemon=True).start()
        return self._wait(turn_id, turn)

    def resume(self, turn_id: int, frames: list[bytes]) -> tuple[int, list[bytes]]:
        with self._lock:
            turn = self._open.get(turn_id)
        if turn is None:
            raise FrameError(f"no direct call {turn_id} waits for an answer")
        turn.back.put(frames)
        return self._wait(turn_id, turn)

    def _wait(self, turn_id: int, turn: _Turn) -> tuple[int, list[bytes]]:
        frames = turn.out.get()  # the request's own thread always puts: its end, or a callback
        if turn.done:
            with self._lock:
                self._open.pop(turn_id, None)
        return turn_id, frames

    def _work(self) -> None:
        while True:
            turn, body = self._jobs.get()
            turn.run(body)
            with self._lock:
                self._idle += 1

    def _closed(self, cause: str) -> None:
        with self._lock:
            turns, self._open = list(self._open.values()), {}
        for turn in turns:  # a request waiting on a callback's answer hears the end
            turn.back.put(None)


def _decode(data: bytes) -> tuple[int, tuple[Any, ...]]:
    """Decode a frame whose body's shape its kind fixes (checked by _frames)."""
    return _frames.decode(data)


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
        self._turns = _Turns(self._link)

    def deliver(self, seq: int, frame: bytes) -> None:
        self._end.deliver(seq, frame)

    def call(self, frames: list[bytes]) -> tuple[int, list[bytes]]:
        return self._turns.start(frames)

    def answer(self, turn: int, frames: list[bytes]) -> tuple[int, list[bytes]]:
        return self._turns.resume(turn, frames)

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
        super().__init__(host, name, _RayLink(conn.ray, actor, conn, key, label), hello)
        # However the link ends (a broken frame, say), the actor must not outlive it: an idle
        # actor nobody can reach would hold its process and its share of the cluster.
        self.link.on_close(lambda cause: _kill(conn.ray, actor))

    def end(self, deadline: float) -> None:
        """Kill the actor (its unload has run, or its time is up)."""
        _kill(_import_ray(), self.actor)
