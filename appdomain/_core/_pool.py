"""Serve a domain's inbox on its dispatcher threads: the callee side of the dispatcher route.

Calls that cannot switch into a domain (it runs another thread's fast call, it is the main
interpreter, or the caller set a timeout) are queued on the domain's inbox and its waker is
pinged; a pool of threads living in the domain serves them (``_serve.serve``) and puts
each reply on the caller's queue.  One thread always listens: a thread about to serve a
request starts a spare first, since the request may block or call back into this domain.
"""

from __future__ import annotations

import threading

from .._errors import AppDomainUnloadedException, ThreadAbortException
from . import _compat
from ._serve import drain_releases, encode_error, enter_call, leave_call, serve
from ._wake import WakeSocket, wake
from ._wire import ONE_WAY

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._wire import Dispatched, Reply

__all__ = ["Pool", "fail_pending"]

# Idle dispatcher threads kept per domain; more are started on demand (nested and
# concurrent calls) and retire once idle again.
MAX_IDLE_WORKERS = 2


class Pool:
    """The threads of one domain that serve dispatched requests from its inbox."""

    def __init__(self, inbox_queue: int, waker: WakeSocket, *, daemon: bool) -> None:
        self.inbox_queue = inbox_queue
        self.waker = waker
        self.daemon = daemon
        self.lock = threading.Lock()
        self.idle = 0
        self.threads: set[threading.Thread] = set()
        self.stopping = False

    def start(self) -> None:
        """Start the first worker."""
        self._spawn()

    def _spawn(self) -> None:
        thread = threading.Thread(
            target=self._work, name="appdomain-dispatcher", daemon=self.daemon
        )
        with self.lock:
            self.threads.add(thread)
            self.idle += 1
        thread.start()

    def _work(self) -> None:
        me = threading.current_thread()
        try:
            # A spare starts because every other worker is busy, maybe with requests whose
            # wakes were dropped (a full waker holds ~10): look at the inbox before sleeping.
            pending = _compat.queue_count(self.inbox_queue) > 0
            while True:
                if not pending:
                    self.waker.wait()
                with self.lock:
                    self.idle -= 1
                    if self.stopping:
                        return
                    spare_needed = self.idle == 0
                try:
                    request = _compat.queue_get(self.inbox_queue)
                except _compat.QueueEmpty:
                    request = None
                    drain_releases(only_pending=True)
                if request is not None:
                    if spare_needed:
                        # Keep one thread listening while this one may block in
                        # user code or in a nested call back into this domain.
                        self._spawn()
                    _reply(request)
                    # After the reply, not before the call: a callback's caller (and its
                    # own caller's thread, switched in there) waits meanwhile.
                    drain_releases(only_pending=True)
                # Wakes are dropped when a waker's buffer is full, so look for more work
                # before sleeping again rather than trusting one wake per request.  (No
                # watching for the next request here: it would hold this domain's GIL and
                # keep out every thread that switches in meanwhile.)
                pending = _compat.queue_count(self.inbox_queue) > 0
                with self.lock:
                    if self.stopping or (not pending and self.idle >= MAX_IDLE_WORKERS):
                        return
                    self.idle += 1
        except ThreadAbortException:
            return
        finally:
            with self.lock:
                self.threads.discard(me)

    def stop(self) -> None:
        """Ask every idle worker to leave; busy ones leave when their call ends."""
        with self.lock:
            self.stopping = True
            count = len(self.threads)
        for _ in range(count):
            wake(self.waker.address)

    def restart(self) -> None:
        """Resume serving after a cancelled stop."""
        with self.lock:
            self.stopping = False
            # Workers that already saw the stop are leaving even if not gone yet; only
            # those still waiting (idle) will serve again.
            listening = self.idle
        if listening == 0:
            self._spawn()


def _reply(request: Dispatched) -> None:
    op, payload, seq, ctx, reply_queue, reply_address = request
    ident, nested = enter_call()  # unload aborts a busy worker, not the idle ones
    try:
        reply = serve(op, payload, seq, ctx, drain=False)  # _work drains after the reply
    finally:
        leave_call(ident, nested)
    if reply_queue == ONE_WAY:
        return  # nobody waits
    try:
        _compat.queue_put(reply_queue, reply)
    except _compat.QueueNotFoundError:
        return  # the caller's thread is gone; nobody waits for this reply
    wake(reply_address)


def fail_pending(inbox_queue: int, reason: str) -> None:
    """Answer every request still queued in a dying domain's inbox with an unload error."""
    while True:
        try:
            request: Dispatched = _compat.queue_get(inbox_queue)
        except (_compat.QueueEmpty, _compat.QueueNotFoundError):
            return
        seq, reply_queue, reply_address = request[2], request[4], request[5]
        if reply_queue == ONE_WAY:
            continue
        reply: Reply = (seq, False, encode_error(AppDomainUnloadedException(reason)), None)
        try:
            _compat.queue_put(reply_queue, reply)
        except _compat.QueueNotFoundError:
            continue
        wake(reply_address)
