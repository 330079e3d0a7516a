"""Carry calls between this process's domains and another process's, over one connection.

A link runs in the main interpreter of each end.  Domains here reach a domain there through
a *foreign route* (``_core._foreign``): its inbox and release queues are the link's, so the
call path hands a request to the link as it would to a dispatcher.  The link's pump thread
sends what those queues hold; its reader thread takes what comes back: replies go to the
waiting caller's mailbox, requests to worker threads that run them here.  Both ends serve
requests while their callers wait, which is what makes callbacks and re-entrant chains
(A -> B -> A) work.  A request for a process this end has no link to goes on through the
link it came by, the parent's: the tree of processes relays it.

When the link ends (the other process exited, was killed, or sent garbage) every call in
flight and every later one gets AppDomainUnloadedException naming the cause.
"""

from __future__ import annotations

import itertools
import threading

from .. import _core
from .._core import CURRENT_INTERP, Route, WakeSocket, _compat, _context, wake
from .._core._foreign import FOREIGN_BASE, GONE, PROCESS_KEY, known_route, remember
from .._core._serve import serve
from .._core._serve import state as _serve_state
from .._core._wire import ONE_WAY
from .._errors import AppDomainUnloadedException
from .._remoting._release import release as release_at_owner
from . import _frames
from ._frames import FrameError
from ._lane import Lane

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    from .._core._wire import Dispatched, Shareable

    type RouteTuple = tuple[int, int, str, int]
    # How a frame is sent: kind, body (the link's _send, or a lane's).
    type Sender = Callable[[int, tuple[Shareable, ...]], None]

    class Connection(Protocol):
        """What a link sends frames over (multiprocessing.connection.Connection has it)."""

        def send_bytes(self, buf: bytes, /) -> None: ...
        def recv_bytes(self) -> bytes: ...
        def close(self) -> None: ...


__all__ = ["Link"]

_foreign_ids = itertools.count(FOREIGN_BASE)
# A reference of this process carries its key as a string, whose marshal bytes are these.
_KEY_BYTES = PROCESS_KEY.encode()
_SEARCH_BYTES = 4096
# foreign interpreter id -> the link that carries its calls (this interpreter's routes)
_by_route: dict[int, Link] = {}
_ids_lock = threading.Lock()


class _Foreign:
    """One foreign route of a link: the domain it reaches, and the queues callers use."""

    __slots__ = ("key", "origin", "route")

    def __init__(self, route: Route, key: str, origin: RouteTuple) -> None:
        self.route = route
        self.key = key
        self.origin = origin


class Link:
    """One connection to another process's appdomain runtime, and the routes through it."""

    peer_key: str
    label: str
    cause: str | None
    closed: threading.Event

    def __init__(
        self,
        conn: Connection,
        peer_key: str,
        label: str,
        *,
        check_local: Callable[[RouteTuple], Route],
        death_cause: Callable[[], str] | None = None,
    ) -> None:
        self.peer_key = peer_key
        self.label = label
        self.cause: str | None = None
        # Set by an unload before it ends the host: whoever closes the link then (a thread
        # that sees the host die first, or the unload itself) gives this cause.
        self.ending: str | None = None
        self.closed = threading.Event()
        self._conn = conn
        self._check_local = check_local
        self._death_cause = death_cause
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._calls = itertools.count(1)
        # call id -> the caller's (reply queue, wake address, sequence number), or the
        # _Waiter of a caller in this interpreter that sent the call itself
        self._pending: dict[int, tuple[int, str, int] | _Waiter] = {}
        self._routes: dict[int, _Foreign] = {}
        # The same, as a tuple for readers that take no lock (replaced whole, never changed).
        self._entries: tuple[_Foreign, ...] = ()
        # (our interp id, object id) -> [references the other end holds, the owner's route]:
        # what its death gives back (a process that crashed sends no releases).
        self._exported: dict[tuple[int, int], list[Any]] = {}
        self._waker = WakeSocket()
        # Leader/followers: one thread reads; one that reads a request hands reading over
        # to an idle follower (or a new thread) and serves the request itself.
        self._idle = 0
        self._turns = threading.Semaphore(0)
        self._threads = itertools.count(1)
        # Lanes: each thread's own connection to the other end, (address, authkey) to open
        # one, when the other end offers them (a process host does; a Ray actor does not).
        self.lanes: tuple[str, bytes] | None = None
        self._local = threading.local()
        self._lane_list: list[Lane] = []
        self._on_close: list[Callable[[str], None]] = []
        daemon = True  # the main interpreter's threads; its exit closes the links first
        self._reader = threading.Thread(
            target=self._lead, name=f"appdomain-link-reader-{label}", daemon=daemon
        )
        self._pump = threading.Thread(
            target=self._send_queued, name=f"appdomain-link-pump-{label}", daemon=daemon
        )

    def start(self) -> None:
        """Start sending and taking frames (once whoever answers requests knows the link)."""
        self._reader.start()
        self._pump.start()

    def __repr__(self) -> str:
        state = "open" if self.cause is None else f"closed: {self.cause}"
        return f"<Link to {self.label} ({state})>"

    # -- routes ---------------------------------------------------------------------------

    def route_for(self, key: str, origin: RouteTuple) -> Route:
        """Return the foreign route here to the domain at origin in process key."""
        with self._lock:
            for entry in self._routes.values():
                if entry.key == key and entry.origin[0] == origin[0]:
                    return entry.route
            if self.cause is not None:
                raise AppDomainUnloadedException(f"domain {self.label} {self.cause}")
            with _ids_lock:
                foreign_id = next(_foreign_ids)
            inbox = _compat.queue_create()
            releases = _compat.queue_create()
            route = Route(foreign_id, inbox, self._waker.address, releases)
            self._routes[foreign_id] = _Foreign(route, key, origin)
            self._entries = (*self._entries, self._routes[foreign_id])
            _by_route[foreign_id] = self
        remember(route, key, origin)
        return route

    def on_close(self, callback: Callable[[str], None]) -> None:
        """Call callback(cause) once the link ends (at once if it has)."""
        with self._lock:
            if self.cause is None:
                self._on_close.append(callback)
                return
            cause = self.cause
        callback(cause)

    # -- sending --------------------------------------------------------------------------

    def _send(self, kind: int, body: tuple[Shareable, ...]) -> None:
        self._send_frame(_frames.encode(kind, body))

    def _send_frame(self, frame: bytes) -> None:
        try:
            with self._send_lock:
                self._conn.send_bytes(frame)
        except (OSError, ValueError) as exc:  # the pipe broke, or is closed
            self.close(self._ended(f"could not be written to ({exc})"))

    def _send_queued(self) -> None:
        """Send what domains here queued for the other end, until the link closes."""
        waker = self._waker
        while self.cause is None:
            waker.wait(None)
            waker.drain()
            entries = self._entries
            # Releases first: one queued before a request must reach the owner before it
            # (a count read by that request sees it).
            for entry in entries:
                self._send_releases(entry)
            for entry in entries:
                self._send_requests(entry)

    def _flush_releases(self, send: Sender | None = None) -> None:
        """Send the releases queued here now, ahead of what send (default: the link) sends next.

        A reply or a request must not overtake the releases queued before it: the count it
        reads would be wrong.
        """
        for entry in self._entries:
            if _compat.queue_count(entry.route.release_queue):
                self._send_releases(entry, send)

    def _send_requests(self, entry: _Foreign) -> None:
        inbox = entry.route.inbox_queue
        while self.cause is None:
            try:
                request: Dispatched = _compat.queue_get(inbox)
            except _compat.QueueError:
                return
            op, payload, seq, ctx, reply_queue, reply_address = request
            if reply_queue == ONE_WAY:
                post = (entry.key, entry.origin, op, payload, ctx)
                self._send_frame(self.outgoing(_frames.POST, post, payload))
                continue
            call_id = next(self._calls)
            with self._lock:
                if self.cause is not None:
                    _fail(reply_queue, reply_address, seq, self._error())
                    return
                self._pending[call_id] = (reply_queue, reply_address, seq)
            call = (call_id, entry.key, entry.origin, op, payload, ctx)
            self._send_frame(self.outgoing(_frames.CALL, call, payload))

    def _send_releases(self, entry: _Foreign, send: Sender | None = None) -> None:
        send = send or self._send
        while self.cause is None:
            try:
                item = _compat.queue_get(entry.route.release_queue)
            except _compat.QueueError:
                return
            oid, count = item
            send(_frames.RELEASE, (entry.key, entry.origin, oid, count))

    def call(
        self, route: Route, op: str, payload: Shareable, ctx: Shareable, timeout: float | None
    ) -> tuple[int, bool, Shareable, Shareable]:
        """Send a request from this interpreter's thread itself and wait for its reply.

        The path of callers in the main interpreter, which holds the link: no pump between.
        """
        entry = self._routes.get(route.interp_id)
        if entry is None or self.cause is not None:
            raise AppDomainUnloadedException(f"domain {self.label} {self.cause or 'is gone'}")
        lane = self.lane()
        if lane is not None:
            return lane.call(entry.key, entry.origin, op, payload, ctx, timeout)
        self._flush_releases()  # releases queued before this call reach the owner before it
        call_id = next(self._calls)
        frame = self.outgoing(
            _frames.CALL, (call_id, entry.key, entry.origin, op, payload, ctx), payload
        )
        waiter = _Waiter()
        with self._lock:
            if self.cause is not None:
                raise AppDomainUnloadedException(f"domain {self.label} {self.cause}")
            self._pending[call_id] = waiter
        self._send_frame(frame)
        if not waiter.lock.acquire(timeout=-1 if timeout is None else timeout):
            with self._lock:
                self._pending.pop(call_id, None)
            if waiter.reply is None:
                raise TimeoutError(f"domain {self.label} did not reply in time")
        assert waiter.reply is not None
        return waiter.reply

    def lane(self) -> Lane | None:
        """Return the calling thread's lane to the other end (made on first use), if any."""
        lane: Lane | None = getattr(self._local, "lane", None)
        if lane is not None and not lane.broken:
            return lane
        if self.lanes is None or self.cause is not None:
            return None
        lane = Lane.connect(self, *self.lanes)
        self._local.lane = lane
        with self._lock:
            self._lane_list.append(lane)
        return lane

    def serve_lane(self, lane: Lane) -> None:
        """Serve a lane the other end opened, on this thread, until it closes."""
        self._local.lane = lane  # this thread's calls to the other end go back on it
        with self._lock:
            self._lane_list.append(lane)
        lane.serve()

    def bye(self, reason: str) -> None:
        """Tell the other end this one is going, so it ends the link with reason."""
        self._send(_frames.BYE, (reason,))

    # -- receiving ------------------------------------------------------------------------

    def _lead(self) -> None:
        """Read frames from the other end, serving requests, until the link ends."""
        while self.cause is None:
            try:
                data = self._conn.recv_bytes()
            except (EOFError, OSError) as exc:
                detail = str(exc)  # a pipe's end says nothing; a Ray actor's death does
                self.close(self._ended(f"ended: {detail}" if detail else "ended"))
                return
            try:
                kind, body = _frames.decode(data)
                if kind == _frames.CALL or kind == _frames.POST:
                    # A request may block (a callback across this link): someone else
                    # reads meanwhile, and this thread serves it with no hand-off.
                    self._hand_over()
                    if kind == _frames.CALL:
                        self._serve_call(body)
                    else:
                        self._serve_post(body)
                    if not self._wait_turn():
                        return
                    continue
                self._take(kind, body)
            except FrameError as exc:
                self.close(f"sent a broken frame ({exc}); the link was closed")
                return

    def _hand_over(self) -> None:
        """Let an idle follower read from now on (a new thread if none is idle)."""
        with self._lock:
            idle = self._idle > 0
            if idle:
                self._idle -= 1
        if idle:
            self._turns.release()
            return
        thread = threading.Thread(
            target=self._lead,
            name=f"appdomain-link-{self.label}-{next(self._threads)}",
            daemon=True,
        )
        thread.start()

    def _wait_turn(self) -> bool:
        """Wait, idle, until it is this thread's turn to read; False once the link ends."""
        with self._lock:
            if self.cause is not None:
                return False
            self._idle += 1
        self._turns.acquire()
        return self.cause is None

    def _take(self, kind: int, body: tuple[Any, ...]) -> None:
        if kind == _frames.REPLY:
            call_id, ok, value, ctx = body
            with self._lock:
                waiter = self._pending.pop(call_id, None)
            if isinstance(waiter, _Waiter):
                waiter.deliver((0, ok, value, ctx))
            elif waiter is not None:
                reply_queue, reply_address, seq = waiter
                try:
                    _compat.queue_put(reply_queue, (seq, ok, value, ctx))
                except _compat.QueueError:
                    return  # the caller's domain is gone
                wake(reply_address)
        elif kind == _frames.RELEASE:
            self.released(body)
        elif kind == _frames.BYE:
            self.close(str(body[0]))
        else:
            raise FrameError(f"{_frames.decode.__name__}: unexpected frame kind {kind} here")

    def released(self, body: tuple[Any, ...]) -> None:
        """Take a RELEASE frame: the other end dropped references to an object here."""
        key, origin, oid, count = body
        route = self._target(key, _frames.route_field("RELEASE", origin))
        if key == PROCESS_KEY:
            with self._lock:
                held = self._exported.get((route.interp_id, oid))
                if held is not None:
                    held[0] -= count
                    if held[0] <= 0:
                        del self._exported[(route.interp_id, oid)]
        release_at_owner(route, oid, count)

    def _target(self, key: str, origin: object) -> Route:
        if key == PROCESS_KEY:
            main = _serve_state.route
            if main is not None and origin == main:  # this process's default domain
                return main
            return self._check_local(_frames.route_field("CALL", origin))
        # another process's: relayed through its link
        return known_route(key, _frames.route_field("CALL", origin))

    def _serve_call(self, body: tuple[Any, ...]) -> None:
        call_id, key, origin, op, payload, ctx = body
        ok, value, ctx_back = self._run(key, origin, op, payload, ctx)
        self._flush_releases()  # the references this call dropped: counted before its reply
        self._send_frame(self.outgoing(_frames.REPLY, (call_id, ok, value, ctx_back), value))

    def _serve_post(self, body: tuple[Any, ...]) -> None:
        key, origin, op, payload, ctx = body
        self._run(key, origin, op, payload, ctx)

    def _run(
        self, key: str, origin: object, op: str, payload: Shareable, ctx: Shareable
    ) -> tuple[bool, Shareable, Shareable]:
        """Run one request from the other end here (or pass it on); never raises."""
        try:
            route = self._target(key, origin)
            if route.interp_id == CURRENT_INTERP:
                ident, nested = _core.enter_call()
                try:  # serve() installs the call context itself
                    _seq, ok, value, ctx_back = serve(op, payload, 0, ctx)
                finally:
                    _core.leave_call(ident, nested)
                return ok, value, ctx_back
        except BaseException as exc:  # the caller gets every error
            return False, _core.encode_failure(exc), None
        token = _context.install(ctx)
        try:
            result = _core.call(route, op, payload)
            return True, result, _context.collect()
        except BaseException as exc:
            return False, _core.encode_failure(exc), None
        finally:
            _context.uninstall(token)

    def batch(self, kind: int, body: tuple[Shareable, ...], value: Shareable) -> list[bytes]:
        """Return the releases queued here as frames, then the frame of kind (see outgoing).

        For frames that travel together (a Ray actor call): the releases go first, so the
        counts the request or reply reads are right.
        """
        frames: list[bytes] = []
        self._flush_releases(lambda kind, body: frames.append(_frames.encode(kind, body)))
        frames.append(self.outgoing(kind, body, value))
        return frames

    def outgoing(self, kind: int, body: tuple[Shareable, ...], value: Shareable) -> bytes:
        """Return the frame of kind with body, counting the references value (in it) exports."""
        frame = _frames.encode(kind, body)
        # A small frame without this process's key carries no reference of it: skip the
        # walk.  A large one is mostly a few large values: walking it beats searching it.
        if len(frame) > _SEARCH_BYTES or _KEY_BYTES in frame:
            self._count_exports(value)
        return frame

    def _count_exports(self, value: Shareable) -> None:
        """Count the references to this process's objects that value carries to the other end.

        A reference crosses as (process key, *route, object id, module, qualname) inside
        the shareable tree (remoting's reduce); a process key is never plain data.
        """
        stack = [value]
        found: list[tuple[Any, ...]] = []
        while stack:
            item = stack.pop()
            if type(item) is not tuple:
                continue
            if len(item) == 8 and item[0] == PROCESS_KEY and type(item[5]) is int:
                found.append(item)
                continue
            stack.extend(item)
        if found:
            with self._lock:
                for ref in found:
                    held = self._exported.get((ref[1], ref[5]))
                    if held is None:
                        self._exported[(ref[1], ref[5])] = [1, Route(*ref[1:5])]
                    else:
                        held[0] += 1

    # -- the end ----------------------------------------------------------------------------

    def _ended(self, what: str) -> str:
        if self._death_cause is not None:
            return self._death_cause()
        return what

    def _error(self) -> Shareable:
        return _core.encode_error(AppDomainUnloadedException(f"domain {self.label} {self.cause}"))

    def close(self, cause: str) -> None:
        """End the link: fail what waits on it, and say why to every later caller."""
        with self._lock:
            if self.cause is not None:
                return
            self.cause = cause = self.ending or cause
            pending = list(self._pending.values())
            self._pending.clear()
            entries = list(self._routes.values())
            callbacks = list(self._on_close)
            self._on_close.clear()
            exported = list(self._exported.items())
            self._exported.clear()
        for callback in callbacks:  # first: a domain that died counts as unloaded from now
            try:
                callback(cause)
            except Exception:  # a failing callback must not keep the others from running
                pass
        for (_interp, oid), (count, owner) in exported:
            if count > 0:  # held by a process that is gone: nobody else will give them back
                release_at_owner(owner, oid, count)
        # Then the threads waiting on lanes hear it: by now what they see is settled.
        self.closed.set()
        error = self._error()
        for waiter in pending:
            if isinstance(waiter, _Waiter):
                waiter.deliver((0, False, error, None))
            else:
                _fail(*waiter, error)
        for entry in entries:
            _bury(entry.route, f"{self.label} {cause}", error)
        wake(self._waker.address)  # the pump sees the cause and ends
        try:
            self._conn.close()
        except OSError:
            pass
        with self._lock:
            lanes, self._lane_list = self._lane_list, []
        for lane in lanes:  # a thread waiting on one sees it end
            lane.close()
        with self._lock:
            idle, self._idle = self._idle, 0
        for _ in range(idle):  # the followers see the cause and end
            self._turns.release()

    def join(self, timeout: float) -> None:
        """Wait up to timeout seconds for the link's threads to end (after close)."""
        for thread in (self._pump, self._reader):
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout)


class _Waiter:
    """Where the reader leaves the reply to a call sent by its caller's thread itself."""

    __slots__ = ("lock", "reply")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.reply: tuple[int, bool, Shareable, Shareable] | None = None

    def deliver(self, reply: tuple[int, bool, Shareable, Shareable]) -> None:
        self.reply = reply
        self.lock.release()


def _fail(reply_queue: int, reply_address: str, seq: int, error: Shareable) -> None:
    try:
        _compat.queue_put(reply_queue, (seq, False, error, None))
    except _compat.QueueError:
        return
    wake(reply_address)


def _bury(route: Route, cause: str, error: Shareable) -> None:
    """Answer what waits on a dead foreign route, and leave its cause for later callers."""
    while True:
        try:
            request: Dispatched = _compat.queue_get(route.inbox_queue)
        except _compat.QueueError:
            break
        _op, _payload, seq, _ctx, reply_queue, reply_address = request
        if reply_queue != ONE_WAY:
            _fail(reply_queue, reply_address, seq, error)
    _compat.queue_destroy(route.inbox_queue)
    while True:  # releases for a dead process count for nothing
        try:
            _compat.queue_get(route.release_queue)
        except _compat.QueueError:
            break
    try:
        _compat.queue_put(route.release_queue, (GONE, cause))
    except _compat.QueueError:
        pass


def direct_call(
    route: Route, op: str, payload: Shareable, ctx: Shareable, timeout: float | None
) -> tuple[int, bool, Shareable, Shareable]:
    """Send a call from this (main) interpreter's thread over the link that route names."""
    link = _by_route.get(route.interp_id)
    if link is None:
        raise AppDomainUnloadedException(f"domain {route.interp_id + 1} has been unloaded")
    return link.call(route, op, payload, ctx, timeout)
