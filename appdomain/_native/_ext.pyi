"""Types of the C switch, appdomain._native._ext (built from module.c and its siblings)."""

from collections.abc import Buffer, Callable, Iterator
from contextvars import ContextVar
from typing import Any, final

# (done, value, ctx): done is True when value is the method's plain result, False when it
# is an encoded reply or error that the generic layers decode, 2 when value is a reference.
type _LeanReply = tuple[bool | int, object, object]
type _Invoker = Callable[[int, str, tuple[object, ...]], _LeanReply]
# (proxies, make, settle, home, fast): how references among an invoke's arguments become
# objects; fast, (classes, RemoteRef, Route, entry type, gone, ref name, key slot, cell
# name, cell slot, kept full references, returned types) or None, lets the switch make
# proxies of known types itself.
type _RefHooks = tuple[
    dict[Any, Any],
    Callable[[Any], object],
    Callable[[Any], object],
    Callable[[int], object],
    tuple[object, ...] | None,
]
type _Dispatcher = Callable[[tuple[memoryview, ...]], bytes]

def register_dispatcher(
    fn: _Dispatcher, invoker: _Invoker | None = None, refs: _RefHooks | None = None, /
) -> None:
    """Make fn the target of call() for this interpreter, and invoker that of invoke()."""

def unregister_dispatcher() -> None:
    """Remove this interpreter's dispatcher."""

def call(interp_id: int, parts: tuple[bytes | memoryview | bytearray, ...], /) -> bytes:
    """Run interp_id's dispatcher on this thread with read-only views of parts.

    Raises LookupError when no such interpreter exists, NotServed when it has no
    dispatcher, Closing when it is being destroyed.
    """

def invoke(interp_id: int, oid: int, name: str, args: tuple[object, ...], /) -> object:
    """Run interp_id's invoker on this thread; NotImplemented when args need the generic route."""

def release_interp(interp_id: int, timeout: float | None = None, /) -> None:
    """Refuse new calls into the interpreter, wait for those in flight, drop its states."""

def release_thread() -> None:
    """Delete the calling thread's idle cached thread states."""

def set_context_var(var: ContextVar[dict[str, object] | None], /) -> None:
    """Name the ContextVar whose value (other than None) makes invoke() decline."""

def marshal_problem(
    data: Buffer, start: int, containers: bool, nodes: bool = False, /
) -> tuple[str, int, bool] | None:
    """Walk marshal bytes from start as a link's frame check does.

    None when marshal.loads may read them, else (reason, position, whether in a MARSHAL node).
    """

def decode_frame(
    data: Buffer,
    magic: int,
    version: int,
    shapes: dict[int, tuple[int, tuple[tuple[int, type], ...]]],
    /,
) -> tuple[int, tuple[Any, ...]] | None:
    """Return (kind, body) of a valid link frame; None for any other (decode it to say why)."""

def set_lean_counting(on: bool, /) -> None:
    """Count the proxy calls this interpreter sends by the lean route (monitoring), or not."""

def lean_calls() -> int:
    """Return how many lean proxy calls this interpreter sent while counting."""

def set_method_hooks(
    slow_call: Callable[..., object],
    lean_outcome: Callable[..., object],
    /,
) -> None:
    """Name the functions bound methods hand a call to (generic route, lean finish)."""

def set_reference_hooks(
    ref_type: type,
    ref_out: Callable[[Any, int], tuple[object, ...] | None],
    ref_done: Callable[[list[tuple[object, ...]]], object],
    lend: tuple[
        dict[type, tuple[object, ...]],
        dict[int, int],
        dict[int, Any],
        dict[int, int],
        Iterator[int],
    ],
    /,
) -> None:
    """Let invoke() carry instances of ref_type: lent, or as ref_out(obj, interp_id)'s tuples."""

def set_proxy_hooks(
    proxies: dict[Any, Any],
    fast: tuple[object, ...],
    release: Callable[[Any, int, int], object],
    arm: Callable[[Any], object],
    /,
) -> None:
    """Name what this interpreter's proxies live by (their dict, fast, release, arm)."""

def lean_ref(
    obj: object, info: tuple[object, ...], ctx: object, oid: int | None, /
) -> _LeanReply | None:
    """The lean reply naming obj (its type in full once per caller, then by token)."""

def proxy_gone(entry: object, /) -> None:
    """A proxy died: forget its entry and release the references its cell holds."""

def set_table_hooks(
    entries: dict[int, Any], entry_type: type, lock: TableLock, leaseless: set[type], /
) -> None:
    """Name this interpreter's object table, for export() and apply_releases()."""

def export(obj: object, /) -> int | None:
    """One more remote reference to obj (a type without a lease): its id; else None."""

def apply_releases() -> list[int] | None:
    """Apply the releases queued here; those left for Python when the lock is busy."""

def releases_pending() -> int:
    """How many releases are queued for this interpreter."""

def method_member(spec: object, bound_type: type[BoundMethod], /) -> MethodMember:
    """Make the proxy-type member for spec: reading it from a proxy binds a bound_type."""

def set_site_import(on: bool, /) -> bool | None:
    """Turn site on or off for interpreters created from now on; the previous setting."""

def set_gil_peek(on: bool, /) -> bool:
    """Turn the look at a held GIL on or off (process-wide); return whether it is now on."""

def gil_held(interp_id: int, /) -> bool | None:
    """Tell whether a thread holds the interpreter's GIL; None where that is not known."""

def gil_holder(interp_id: int, /) -> tuple[int, int] | None:
    """(thread ident, native thread id) of the GIL's holder; None if free or not known."""

def _on_exit() -> None: ...
def _stats() -> dict[int, tuple[int, int, int, bool]]:
    """For tests: {interp_id: (cached slots, orphans, calls in flight, closing)}."""

class NotServed(RuntimeError):
    """The target interpreter takes no native calls: no dispatcher is registered there."""

class Closing(RuntimeError):
    """The target interpreter is being destroyed: it takes no new calls."""

@final
@final
class TableLock:
    """A lock that C code takes without a Python call (the object table's)."""

    def acquire(self, blocking: bool = True, /) -> bool: ...
    def release(self) -> None: ...
    def locked(self) -> bool: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, *args: object) -> None: ...

class MethodMember:
    """A proxy type's member for one remote method (a non-data descriptor)."""

    def __get__(self, proxy: object, owner: type | None = None, /) -> Any: ...

class BoundMethod:
    """A remote method bound to its proxy; calling it takes the lean route when it can."""

    def __init__(self, proxy: object, spec: Any, /) -> None: ...
    @property
    def proxy(self) -> object:
        """The proxy this method is bound to."""
    @property
    def spec(self) -> Any:
        """The method's spec."""
    def __call__(self, *args: object, **kwargs: object) -> Any: ...
