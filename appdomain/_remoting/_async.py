"""Run begin_invoke/invoke_async calls on this domain's pool of worker threads."""

from __future__ import annotations

import threading

from .. import _core

TYPE_CHECKING = False
if TYPE_CHECKING:
    import concurrent.futures
    from collections.abc import Callable

__all__ = ["DEFAULT_ASYNC_WORKERS", "async_workers", "set_async_workers", "submit"]

# A proxy call that waits (on I/O, a lock, a sleep in the callee) holds one worker thread for
# its whole length, so the pool size is how many asynchronous calls overlap.  Python's own
# default, min(32, cpus + 4), lets only six overlap on two cores, which is not what asyncio
# users expect of gather() over I/O-bound calls; 32 idle threads cost little.
DEFAULT_ASYNC_WORKERS = 32

# asyncio and concurrent.futures load lazily: importing them costs a new domain ~20 ms.
_executor: concurrent.futures.ThreadPoolExecutor | None = None
_workers = DEFAULT_ASYNC_WORKERS
_lock = threading.Lock()


def async_workers() -> int:
    """Return how many asynchronous calls this domain runs at once."""
    return _workers


def set_async_workers(workers: int) -> None:
    """Set how many begin_invoke/invoke_async calls this domain runs at once (default 32).

    Calls started before keep their threads and finish; later ones use the new pool.  Each
    domain has its own pool: this sets the pool of the domain that calls it.
    """
    global _executor, _workers
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError(
            f"'workers' must be int (got {workers!r} that is a {type(workers).__name__})"
        )
    if workers < 1:
        raise ValueError(f"'workers' must be at least 1 (got {workers})")
    with _lock:
        # The pool in use was made with the previous setting: replace it only on a change.
        old = _executor if workers != _workers else None
        _workers = workers
        if old is not None:
            _executor = None
    if old is not None:
        old.shutdown(wait=False)  # its queued calls still run, on its own threads


def submit[**P, T](
    fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> concurrent.futures.Future[T]:
    """Start fn(*args, **kwargs) on a worker thread and return its Future."""
    return _pool().submit(fn, *args, **kwargs)


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    import concurrent.futures

    with _lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                _workers, thread_name_prefix="appdomain-async"
            )
            if _shutdown not in _core.unload_hooks:
                # Idle workers block in a lock an abort cannot reach: stop them first.
                _core.unload_hooks.append(_shutdown)
        return _executor


def _shutdown() -> None:
    global _executor
    with _lock:
        executor, _executor = _executor, None
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)
