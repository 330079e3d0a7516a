"""appdomain._native._ext: switching the calling thread into another interpreter.

Uses raw _interpreters so these tests exercise the C extension alone.  Every
interpreter a test creates is destroyed by the `interps` fixture.  Synchronisation is
by events, barriers and joins, never by sleeping.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

n = pytest.importorskip("appdomain._native._ext")
import _interpreters  # noqa: E402

JOIN = (
    "import appdomain._native._ext as n\n"
    "n.register_dispatcher(lambda parts: b''.join(bytes(p) for p in parts))\n"
)
MAIN = int(_interpreters.get_main()[0])


def run(iid: int, code: str) -> None:
    err = _interpreters.exec(iid, textwrap.dedent(code))
    assert err is None, err


@pytest.fixture
def interps():
    """Factory: make(code=JOIN) -> id of a new interpreter that ran code."""
    made: list[int] = []

    def make(code: str = JOIN) -> int:
        iid = int(_interpreters.create())
        made.append(iid)
        run(iid, code)
        return iid

    yield make
    for iid in made:
        try:
            n.release_interp(iid)
            _interpreters.destroy(iid)
        except _interpreters.InterpreterNotFoundError:
            pass


@pytest.fixture
def main_dispatcher():
    """Register fn as the main interpreter's dispatcher for the test's duration."""

    def register(fn):
        n.register_dispatcher(fn)

    yield register
    n.unregister_dispatcher()
    n.release_interp(MAIN)
    n.register_dispatcher(lambda parts: b"")  # reopen main after release_interp
    n.unregister_dispatcher()
    # Give the main interpreter back to appdomain's call path if it had started there.
    import appdomain._core

    if appdomain._core.state.route is not None and appdomain._core.native_module():
        appdomain._core.native_module().register()


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# ---------------------------------------------------------------- basics


def test_round_trip(interps):
    b = interps()
    assert n.call(b, (b"ab", b"cd")) == b"abcd"
    assert n.call(b, ()) == b""
    assert n.call(b, (bytearray(b"x"), memoryview(b"yz"))) == b"xyz"
    assert n.call(b, (b"",) * 20) == b""  # more parts than the stack fast path


def test_parts_arrive_as_readonly_memoryviews(interps):
    b = interps(
        """
        import appdomain._native._ext as n
        def fn(parts):
            out = []
            for p in parts:
                assert type(p) is memoryview and p.readonly and p.format == "B"
                try:
                    p[0] = 1
                except TypeError:
                    out.append(b"ro")
            return b",".join(out)
        n.register_dispatcher(fn)
        """
    )
    assert n.call(b, (b"a", bytearray(b"b"))) == b"ro,ro"


def test_exception_in_fn_becomes_runtime_error(interps):
    b = interps(
        """
        import appdomain._native._ext as n
        def fn(parts):
            raise ValueError("boom " + bytes(parts[0]).decode())
        n.register_dispatcher(fn)
        """
    )
    with pytest.raises(RuntimeError, match=r"^ValueError: boom x$"):
        n.call(b, (b"x",))
    # The target is unharmed and the next call works.
    run(b, "import appdomain._native._ext as n; n.register_dispatcher(lambda p: b'ok')")
    assert n.call(b, ()) == b"ok"


def test_non_bytes_reply_is_an_error(interps):
    b = interps("import appdomain._native._ext as n; n.register_dispatcher(lambda p: 42)")
    with pytest.raises(RuntimeError, match="TypeError: dispatcher must return bytes, not int"):
        n.call(b, ())


def test_bad_arguments():
    with pytest.raises(TypeError):
        n.call(MAIN, [b"x"])
    with pytest.raises(TypeError):
        n.call(MAIN, ("text",))


def test_unknown_interpreter():
    with pytest.raises(LookupError, match="no interpreter with id 987654"):
        n.call(987654, (b"x",))
    n.release_interp(987654)  # nothing cached there: a no-op


def test_interpreter_without_dispatcher(interps):
    b = interps("pass")
    with pytest.raises(n.NotServed, match="has no dispatcher"):
        n.call(b, ())
    run(b, JOIN)
    run(b, "import appdomain._native._ext as n; n.unregister_dispatcher()")
    with pytest.raises(n.NotServed, match="has no dispatcher"):
        n.call(b, ())


def test_large_reply(interps):
    b = interps(
        """
        import appdomain._native._ext as n
        n.register_dispatcher(lambda parts: bytes(parts[0]) * 4)
        """
    )
    data = os.urandom(1 << 20)
    assert n.call(b, (data,)) == data * 4


# ---------------------------------------------------------- buffers in place


def test_large_buffer_is_read_in_place(interps, main_dispatcher):
    """The callee's view aliases the caller's memory: a change made by the caller
    (through a callback into main) during the call is visible to the callee."""
    big = bytearray(8 << 20)
    big[-1] = 9

    def poke(parts):
        big[0] = 7
        return b""

    main_dispatcher(poke)
    b = interps(
        f"""
        import appdomain._native._ext as n
        def fn(parts):
            p = parts[0]
            before = p[0]
            n.call({MAIN}, ())
            return bytes([before, p[0], p[-1]]) + str(len(p)).encode()
        n.register_dispatcher(fn)
        """
    )
    assert n.call(b, (big,)) == bytes([0, 7, 9]) + str(8 << 20).encode()


def test_views_are_revoked_after_return(interps):
    b = interps(
        """
        import appdomain._native._ext as n
        kept = []
        def fn(parts):
            if parts:
                kept.append(parts[0])          # keeping the view object is harmless
                return b"kept"
            try:
                kept[0][0]
            except ValueError:
                return b"released"
            return b"still readable"
        n.register_dispatcher(fn)
        """
    )
    assert n.call(b, (b"secret",)) == b"kept"
    assert n.call(b, ()) == b"released"


def test_kept_slice_fails_the_call_and_pins_the_buffer(interps):
    b = interps(
        """
        import appdomain._native._ext as n
        kept = []
        def fn(parts):
            if parts:
                kept.append(parts[0][1:])      # a slice outlives the call: refused
                return b"x"
            return bytes(kept[0])              # still safe to read: the buffer is pinned
        n.register_dispatcher(fn)
        """
    )
    arg = b"pinned!"
    with pytest.raises(RuntimeError, match="BufferError: the dispatcher kept a view"):
        n.call(b, (arg,))
    del arg
    assert n.call(b, ()) == b"inned!"


def test_reply_may_be_a_view_of_an_argument(interps):
    """Echoing an argument back (a slice of its view) is fine: the reply is copied
    before the views are revoked, and nothing outlives the call."""
    b = interps("import appdomain._native._ext as n; n.register_dispatcher(lambda p: p[0][1:])")
    assert n.call(b, (b"xecho",)) == b"echo"
    big = os.urandom(1 << 20)
    assert n.call(b, (big,)) == big[1:]


# -------------------------------------------------------------- re-entrancy


def test_reentrant_a_b_a(interps, main_dispatcher):
    seen = []
    main_dispatcher(
        lambda parts: (seen.append(threading.get_ident()), b"main:" + bytes(parts[0]))[1]
    )
    b = interps(
        f"""
        import appdomain._native._ext as n
        def fn(parts):
            return b"B(" + n.call({MAIN}, (bytes(parts[0]),)) + b")"
        n.register_dispatcher(fn)
        """
    )
    assert n.call(b, (b"x",)) == b"B(main:x)"
    assert seen == [threading.get_ident()]

    # The callback into main also works from a thread that is not main's main thread.
    out = []
    t = threading.Thread(target=lambda: out.append(n.call(b, (b"t",))))
    t.start()
    t.join()
    assert out == [b"B(main:t)"]
    assert seen[-1] == t.ident


def test_callback_reuses_the_callers_thread_state(interps, main_dispatcher):
    """A -> B -> A runs the callback on the caller's own (suspended) thread state, so
    thread-locals of the calling thread are visible in the callback."""
    local = threading.local()
    local.value = b"outer"
    main_dispatcher(lambda parts: getattr(local, "value", b"fresh"))
    b = interps(
        f"""
        import appdomain._native._ext as n
        n.register_dispatcher(lambda parts: n.call({MAIN}, ()))
        """
    )
    assert n.call(b, ()) == b"outer"


def test_deep_ping_pong_and_three_interpreters(interps, main_dispatcher):
    """main -> B -> main -> B ... and main -> B -> C -> main."""
    b_id_box = []

    def main_fn(parts):
        depth = int(bytes(parts[0]))
        if depth == 0:
            return b"bottom"
        return n.call(b_id_box[0], (str(depth - 1).encode(),))

    main_dispatcher(main_fn)
    b = interps(
        f"""
        import appdomain._native._ext as n
        n.register_dispatcher(lambda parts: b"b" + n.call({MAIN}, (bytes(parts[0]),)))
        """
    )
    b_id_box.append(b)
    assert n.call(b, (b"10",)) == b"b" * 11 + b"bottom"

    c = interps(
        f"""
        import appdomain._native._ext as n
        n.register_dispatcher(lambda parts: b"c" + n.call({MAIN}, (b"0",)))
        """
    )
    run(
        b,
        f"""
        import appdomain._native._ext as n
        n.register_dispatcher(lambda parts: b"b" + n.call({c}, ()))
        """,
    )
    assert n.call(b, ()) == b"bcbottom"


def test_unbounded_recursion_is_an_error_not_a_crash(interps, main_dispatcher):
    box = []
    main_dispatcher(lambda parts: n.call(box[0], ()))
    b = interps(
        f"""
        import appdomain._native._ext as n
        n.register_dispatcher(lambda parts: n.call({MAIN}, ()))
        """
    )
    box.append(b)
    with pytest.raises(RuntimeError, match="RecursionError"):
        n.call(b, ())
    assert n._stats()[b][2] == 0  # nothing left in flight


# ------------------------------------------------------------------ threads


@pytest.fixture(params=[True, False], ids=["gil-peek", "no-gil-peek"])
def gil_peek(request):
    """Run with the look at a held GIL on, and off (as on a CPython gilpeek.c does not know)."""
    assert n.set_gil_peek(request.param) is request.param
    yield request.param
    n.set_gil_peek(True)


def test_gil_peek_is_known_on_this_python():
    assert n.set_gil_peek(True) is (sys.version_info[:2] in ((3, 13), (3, 14)))


@pytest.mark.parametrize("nthreads", [4, 8])
def test_many_threads_inside_one_interpreter_at_once(interps, nthreads, gil_peek):
    """Each caller thread runs in the interpreter on its own thread state: all of
    them meet at a barrier inside the target, which needs them inside together."""
    b = interps(
        f"""
        import threading, appdomain._native._ext as n
        barrier = threading.Barrier({nthreads})
        def fn(parts):
            if parts and bytes(parts[0]) == b"meet":
                barrier.wait(timeout=30)
                return b"met"
            return b"".join(bytes(p) for p in parts)
        n.register_dispatcher(fn)
        """
    )
    results: list[bytes] = []
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            results.append(n.call(b, (b"meet",)))
            for i in range(300):
                tag = f"{k}:{i}".encode()
                assert n.call(b, (tag, b"!")) == tag + b"!"
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results == [b"met"] * nthreads


def test_threads_that_call_in_and_die_then_destroy(interps):
    b = interps()
    before = fd_count()
    threads = [threading.Thread(target=n.call, args=(b, (b"x",))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots, orphans, active, closing = n._stats()[b]
    assert active == 0 and not closing
    # Dead threads' states wait to be reaped: each call in reaps the orphans left so
    # far, so at least the last thread's state is still there, orphaned.
    assert slots >= 1 and orphans == slots

    # The next call into b reaps the orphans (they are deleted while attached to b).
    assert n.call(b, (b"y",)) == b"y"
    assert n._stats()[b][:2] == (1, 0)

    # More dead threads, then a plain destroy (no release_interp): the exit hook inside
    # b deletes every cached state before Py_EndInterpreter's "last thread" check.
    threads = [threading.Thread(target=n.call, args=(b, (b"x",))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _interpreters.destroy(b)
    assert b not in n._stats()
    with pytest.raises(LookupError):
        n.call(b, ())
    assert fd_count() == before


def test_release_interp_then_destroy_while_threads_hold_states(interps):
    b = interps()
    go_on = threading.Event()
    called = threading.Barrier(5)
    after: list[object] = []

    def worker() -> None:
        assert n.call(b, (b"1",)) == b"1"
        called.wait()
        go_on.wait()
        try:
            n.call(b, (b"2",))
        except Exception as e:
            after.append(type(e))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    called.wait()
    n.call(b, (b"main",))
    assert n._stats()[b][0] == 5  # 4 live threads + main hold a cached state each

    n.release_interp(b)
    assert n._stats()[b][:4] == (0, 0, 0, True)
    with pytest.raises(n.Closing, match="being destroyed"):
        n.call(b, ())
    _interpreters.destroy(b)

    go_on.set()
    for t in threads:
        t.join()
    assert after == [LookupError] * 4
    n.release_thread()  # nothing left for this thread: a no-op


def test_release_interp_waits_for_calls_in_flight(interps, main_dispatcher):
    inside = threading.Event()
    leave = threading.Event()

    def main_fn(parts):
        inside.set()
        leave.wait()
        return b"done"

    main_dispatcher(main_fn)
    b = interps(
        f"""
        import appdomain._native._ext as n
        n.register_dispatcher(lambda parts: n.call({MAIN}, ()))
        """
    )
    out = []
    t = threading.Thread(target=lambda: out.append(n.call(b, ())))
    t.start()
    inside.wait()
    # A call is in flight in b (parked in a callback into main): release cannot finish.
    with pytest.raises(TimeoutError, match="in flight"):
        n.release_interp(b, 0.05)
    with pytest.raises(n.Closing, match="being destroyed"):
        n.call(b, ())  # closing already refuses new calls
    leave.set()
    n.release_interp(b)  # waits for the call to finish
    t.join()
    assert out == [b"done"]
    _interpreters.destroy(b)


def test_release_interp_from_inside_is_refused(interps, main_dispatcher):
    box = []

    def main_fn(parts):
        try:
            n.release_interp(box[0])
        except RuntimeError as e:
            return str(e).encode()
        return b"released?"

    main_dispatcher(main_fn)
    b = interps(
        f"import appdomain._native._ext as n; n.register_dispatcher(lambda p: n.call({MAIN}, ()))"
    )
    box.append(b)
    assert b"from a call running inside it" in n.call(b, ())


def test_release_thread(interps):
    b, c = interps(), interps()
    n.call(b, ())
    n.call(c, ())
    assert n._stats()[b][0] == 1 and n._stats()[c][0] == 1
    n.release_thread()
    assert n._stats()[b][0] == 0 and n._stats()[c][0] == 0
    assert n.call(b, (b"again",)) == b"again"


# Load just the extension in a subinterpreter: importing the appdomain package costs
# ~70 ms per interpreter, which would dominate a 1000-cycle test.
LIGHT_JOIN = f"""
import importlib.util
spec = importlib.util.spec_from_file_location("appdomain._native._ext", {n.__file__!r})
n = importlib.util.module_from_spec(spec)
spec.loader.exec_module(n)
n.register_dispatcher(lambda parts: b''.join(bytes(p) for p in parts))
"""


def test_create_call_destroy_cycles_leave_nothing_behind():
    def cycle() -> None:
        iid = int(_interpreters.create())
        run(iid, LIGHT_JOIN)
        assert n.call(iid, (b"a", b"b")) == b"ab"
        if iid % 2:
            n.release_interp(iid)
        _interpreters.destroy(iid)

    for _ in range(20):  # warm up lazily created things
        cycle()
    fds, nthreads = fd_count(), threading.active_count()
    for _ in range(1000):
        cycle()
    assert fd_count() == fds
    assert threading.active_count() == nthreads
    assert all(iid == MAIN for iid in n._stats())


def test_main_dispatcher_on_many_threads(main_dispatcher, interps):
    """Several non-main threads call back into main at once, each on its own state."""
    main_dispatcher(lambda parts: bytes(parts[0]).upper())
    b = interps(
        f"import appdomain._native._ext as n; n.register_dispatcher(lambda p: n.call({MAIN}, p))"
    )
    errors = []

    def worker(k):
        try:
            for i in range(200):
                assert n.call(b, (f"w{k}-{i}".encode(),)) == f"W{k}-{i}".encode()
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


# --------------------------------------------------------------- process exit

EXIT_SCRIPTS = {
    "states_alive": """
        import threading, _interpreters, appdomain._native._ext as n
        ids = [int(_interpreters.create()) for _ in range(3)]
        for i in ids:
            _interpreters.exec(i, "import appdomain._native._ext as n; "
                                  "n.register_dispatcher(lambda p: b''.join(bytes(x) for x in p))")
            assert n.call(i, (b"a",)) == b"a"
        n.register_dispatcher(lambda p: b"main")
        _interpreters.exec(ids[0], "import appdomain._native._ext as n; "
                                   "assert n.call(0, ()) == b'main'")
        ts = [threading.Thread(target=n.call, args=(i, (b"t",))) for i in ids for _ in range(3)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        print("ok")
    """,
    "live_threads_hold_states": """
        import threading, _interpreters, appdomain._native._ext as n
        b = int(_interpreters.create())
        _interpreters.exec(b, "import appdomain._native._ext as n; "
                              "n.register_dispatcher(lambda p: b'')")
        ready = threading.Barrier(4)
        def worker():
            n.call(b, ())
            ready.wait()
            # exit while this daemon thread is alive and idle, holding a state in b
            threading.Event().wait()
        for _ in range(3):
            threading.Thread(target=worker, daemon=True).start()
        ready.wait()
        print("ok")
    """,
    "daemon_stuck_inside_a_call": """
        import threading, _interpreters, appdomain._native._ext as n
        b = int(_interpreters.create())
        _interpreters.exec(b, "import threading, appdomain._native._ext as n\\n"
                              "never = threading.Event()\\n"
                              "def fn(p):\\n"
                              "    n.call(0, ())\\n"
                              "    never.wait()\\n"
                              "    return b''\\n"
                              "n.register_dispatcher(fn)\\n")
        inside = threading.Barrier(3)
        n.register_dispatcher(lambda p: (inside.wait(), b"")[1])
        for _ in range(2):
            threading.Thread(target=n.call, args=(b, ()), daemon=True).start()
        inside.wait()
        print("ok")
    """,
    "released_then_exit": """
        import _interpreters, appdomain._native._ext as n
        b = int(_interpreters.create())
        _interpreters.exec(b, "import appdomain._native._ext as n; "
                              "n.register_dispatcher(lambda p: b'')")
        n.call(b, ())
        n.release_interp(b)
        print("ok")
    """,
}


@pytest.mark.parametrize("name", sorted(EXIT_SCRIPTS))
def test_process_exit_with_interpreters_and_states_alive(name):
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EXIT_SCRIPTS[name])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Fatal Python error" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


# ------------------------------------------------------------------- valgrind


# ---------------------------------------------------------------- invoke (lean proxy calls)

INVOKER = (
    "import appdomain._native._ext as n\n"
    "def invoker(oid, name, args):\n"
    "    if name == 'sizes':\n"
    "        return (True, tuple(len(a) if isinstance(a, bytes) else a for a in args), None)\n"
    "    if name == 'echo':\n"
    "        return (True, args[0], None)\n"
    "    if name == 'boom':\n"
    "        raise ValueError('boom')\n"
    "    return (oid, name, args)\n"
    "n.register_dispatcher(lambda parts: b'', invoker)\n"
)


def test_invoke_passes_oid_name_and_args(interps):
    b = interps(INVOKER)
    assert n.invoke(b, 7, "who", (1, "two", 3.0, None, True, b"x")) == (
        7,
        "who",
        (1, "two", 3.0, None, True, b"x"),
    )


def test_invoke_carries_large_bytes_arguments_at_their_places(interps):
    b = interps(INVOKER)
    big, bigger = b"a" * (1 << 20), b"b" * (3 << 20)
    assert n.invoke(b, 1, "sizes", (1, big, "s", bigger)) == (
        True,
        (1, 1 << 20, "s", 3 << 20),
        None,
    )


def test_invoke_leaves_the_callers_arguments_alone(interps):
    b = interps(INVOKER)
    big = bytes(range(256)) * 1024
    args = (big, 5)
    n.invoke(b, 1, "sizes", args)
    assert args == (big, 5) and args[0] is big


def test_invoke_returns_a_large_bytes_result_intact(interps):
    b = interps(INVOKER)
    big = bytes(range(256)) * 4096
    assert n.invoke(b, 1, "echo", (big,)) == (True, big, None)


KEEPER = (
    "import appdomain._native._ext as n\n"
    "kept = []\n"
    "def invoker(oid, name, args):\n"
    "    data = bytes([oid % 256]) * args[0]\n"
    "    if name == 'keep':\n"
    "        kept.append(data)\n"
    "    return (True, data, None)\n"
    "n.register_dispatcher(lambda parts: b'', invoker)\n"
)


def test_large_bytes_result_outlives_the_interpreter_that_made_it(interps):
    b = interps(KEEPER)
    results = [n.invoke(b, 7, "make", (1 << 20,))[1] for _ in range(3)]
    n.release_interp(b)
    _interpreters.destroy(b)
    assert all(r == b"\x07" * (1 << 20) for r in results)
    assert len({hash(r) for r in results}) == 1


def test_large_bytes_result_the_callee_keeps_stays_its_own(interps):
    b = interps(KEEPER)
    first = n.invoke(b, 1, "keep", (1 << 20,))[1]
    run(b, "kept[0] = None")  # the callee's copy dies; the caller's must not
    assert first == b"\x01" * (1 << 20)


def test_large_reply_blob_outlives_the_interpreter_that_made_it(interps):
    b = interps(
        """
        import appdomain._native._ext as n
        n.register_dispatcher(lambda parts: bytes(parts[0]) * 2)
        """
    )
    data = os.urandom(1 << 20)
    reply = n.call(b, (data,))
    n.release_interp(b)
    _interpreters.destroy(b)
    assert reply == data * 2


def test_invoke_declines_arguments_that_are_not_plain(interps):
    b = interps(INVOKER)
    assert n.invoke(b, 1, "who", ([1, 2],)) is NotImplemented
    assert n.invoke(b, 1, "who", (1 << 70,)) is NotImplemented


def test_invoke_declines_while_a_call_context_is_set(interps):
    import contextvars

    b = interps(INVOKER)
    var: contextvars.ContextVar[object] = contextvars.ContextVar("probe", default=None)
    n.set_context_var(var)
    try:
        var.set({"k": 1})
        assert n.invoke(b, 1, "who", (1,)) is NotImplemented
        var.set(None)
        assert n.invoke(b, 1, "who", (1,)) == (1, "who", (1,))
    finally:
        import appdomain._core._context

        n.set_context_var(appdomain._core._context._data)


def test_invoke_takes_plain_calls_again_once_the_call_context_is_emptied(interps):
    from appdomain import CallContext

    b = interps(INVOKER)
    CallContext.logical_set_data("user", "ada")
    CallContext.free_named_data_slot("user")
    assert n.invoke(b, 1, "who", (1,)) == (1, "who", (1,))


def test_invoke_reports_the_invokers_error(interps):
    b = interps(INVOKER)
    with pytest.raises(RuntimeError, match="ValueError: boom"):
        n.invoke(b, 1, "boom", ())


def test_invoke_without_an_invoker_says_so(interps):
    b = interps()
    with pytest.raises(n.NotServed, match="no dispatcher"):
        n.invoke(b, 1, "who", ())


# ---------------------------------------------------------------- bound methods


def test_bound_method_cannot_be_made_directly():
    with pytest.raises(TypeError):
        n.BoundMethod()


def test_method_member_names_a_bad_bound_type():
    class Spec:
        name, lean_ok = "add", True

    with pytest.raises(
        TypeError, match=r"'bound_type' must be a subclass of BoundMethod \(got <class 'int'>\)"
    ):
        n.method_member(Spec(), int)


def test_method_member_read_from_its_class_is_itself():
    class Spec:
        name, lean_ok = "add", False

    class Bound(n.BoundMethod):
        __slots__ = ()

    member = n.method_member(Spec(), Bound)
    owner = type("Owner", (), {"add": member})
    assert owner.add is member
    assert type(owner().add) is Bound


# ------------------------------------------------------------ who holds a GIL

# Run in an interpreter by a thread of this one: read one byte from the pipe with the GIL
# held (PyDLL calls keep it, unlike CDLL's), as C code that never releases it would.
READ_HOLDING_GIL = "import ctypes\nctypes.PyDLL(None).read(fd, ctypes.create_string_buffer(1), 1)\n"


def _hold_gil_in(iid: int):
    """Start a thread blocked in read() inside iid with its GIL held; return (thread, pipe end)."""
    r, w = os.pipe()
    thread = threading.Thread(target=_interpreters.exec, args=(iid, READ_HOLDING_GIL, {"fd": r}))
    thread.start()
    deadline = 10.0
    until = time.monotonic() + deadline
    while n.gil_holder(iid) is None:  # it takes the GIL on entering, then never lets go
        assert time.monotonic() < until, f"no thread took interpreter {iid}'s GIL in {deadline} s"
        time.sleep(0.001)  # polls a condition; no ordering rests on it
    return thread, r, w


def _release(thread: threading.Thread, r: int, w: int) -> None:
    os.write(w, b"x")
    thread.join()
    os.close(r)
    os.close(w)


def test_gil_held_is_false_for_an_idle_interpreter(interps):
    assert n.gil_held(interps()) is False


def test_gil_holder_is_none_for_an_idle_interpreter(interps):
    assert n.gil_holder(interps()) is None


def test_gil_holder_names_the_thread_stuck_in_c_with_the_gil(interps):
    iid = interps()
    thread, r, w = _hold_gil_in(iid)
    try:
        holder = n.gil_holder(iid)
        held = n.gil_held(iid)
    finally:
        _release(thread, r, w)
    assert holder == (thread.ident, thread.native_id), f"holder {holder}, reader {thread}"
    assert held is True


def test_gil_held_names_an_unknown_interpreter():
    with pytest.raises(LookupError, match="no interpreter 987654"):
        n.gil_held(987654)
