"""Hold loads() to its limits on every nesting path: depth, declared lengths, allocations.

Issue 20: 250 nested LIST ext values (~1.2 KB) crashed loads(trusted=False) with SIGSEGV,
each level nesting a whole msgpack unpacker on the C stack.
"""

from __future__ import annotations

import _interpreters
import os
import struct
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import msgpack.fallback
import pytest

from appdomain._core import _compat
from appdomain._errors import SerializationException
from appdomain.marshal import Ref, dumps, loads
from appdomain.marshal import _tags as tg
from appdomain.marshal._bytes import HEADER
from appdomain.marshal._reader import EXT_CODES

# Where each tag that holds values puts a child value: (items before, items after) it,
# so that a nesting is shaped like real dumps() output of that tag.
NESTING: dict[int, tuple[list[Any], list[Any]]] = {
    tg.TUPLE: ([], []),
    tg.LIST: ([], []),
    tg.DICT: (["key"], []),
    tg.SET: ([], []),
    tg.FROZENSET: ([], []),
    tg.MEMORYVIEW: (["B", "<"], [False, b""]),
    tg.DATETIME: ([2024, 1, 2, 3, 4, 5, 6, 0], []),
    tg.TIME: ([3, 4, 5, 6, 0], []),
    tg.ENUM: (["test_marshal_samples", "Perm", None], []),
    tg.DATACLASS: (["test_marshal_samples", "Point", "x"], ["y", 2]),
    tg.OBJECT: (["test_marshal_samples", "Account"], []),
    tg.EXCEPTION: (["builtins", "ValueError", "m", None, None, "tb"], [None, False]),
    tg.REFERENCE: (["test_marshal_samples:Handle", True], []),
    tg.REFBOX: ([], []),
    tg.NAMEDTUPLE: (["test_marshal_samples", "Pair"], [None]),
}
NESTING_TAGS = sorted(NESTING)
OVER_BUDGET = [250, 100_000]
DEPTH_REFUSAL = r"data nests ext values more than 200 levels deep \(limit max_depth=200\)"
# Worker threads may get small C stacks; the old reader crashed in 8 MiB ones.
SMALL_STACK = 512 * 1024
MIB = 1 << 20


def ext_header(code: int, size: int) -> bytes:
    """Return a msgpack ext header (ext 8/16/32) for a payload of ``size`` bytes."""
    if size < 1 << 8:
        return struct.pack(">BBb", 0xC7, size, code)
    if size < 1 << 16:
        return struct.pack(">BHb", 0xC8, size, code)
    return struct.pack(">BIb", 0xC9, size, code)


def ext(code: int, *items: Any) -> msgpack.ExtType:
    """Return one ext value holding ``items`` (a node as dumps() writes it)."""
    return msgpack.ExtType(code, msgpack.packb(list(items)))


def body(value: Any) -> bytes:
    """Return dumps()-style bytes for a raw msgpack value."""
    packed: bytes = msgpack.packb(value)
    return HEADER + packed


def nested(code: int, depth: int, leaf: bytes = b"\x00") -> bytes:
    """Return dumps()-style bytes: ``depth`` ext values of tag ``code``, each holding the next.

    Built from headers, not by packing level after level (that copies depth**2 bytes).
    """
    before, after = NESTING.get(code, ([], []))
    head = bytes([0x90 | (len(before) + len(after) + 1)])
    head += b"".join(msgpack.packb(v) for v in before)
    tail = b"".join(msgpack.packb(v) for v in after)
    headers: list[bytes] = []
    size = len(leaf)
    for _ in range(depth):
        size += len(head) + len(tail)
        headers.append(ext_header(code, size))
        size += len(headers[-1])
    return HEADER + b"".join(h + head for h in reversed(headers)) + leaf + tail * depth


def lists_around(value: Any, levels: int) -> Any:
    """Return ``value`` inside ``levels`` nested lists."""
    for _ in range(levels):
        value = [value]
    return value


def in_thread(fn: Callable[[], object], stack: int = SMALL_STACK) -> BaseException | None:
    """Run ``fn`` in a new thread with a ``stack``-byte C stack; return what it raised."""
    caught: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            caught.append(exc)

    previous = threading.stack_size(stack)
    try:
        thread = threading.Thread(target=run)
        thread.start()
    finally:
        threading.stack_size(previous)
    thread.join()
    return caught[0] if caught else None


def peak_memory(data: bytes) -> int:
    """Return the peak bytes allocated while loads(trusted=False) refuses ``data``."""
    tracemalloc.start()
    try:
        with pytest.raises(SerializationException):
            loads(data, trusted=False)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(params=["c", "python"])
def msgpack_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test on msgpack's C unpacker, then on its pure-Python fallback."""
    if request.param == "python":
        monkeypatch.setattr(msgpack, "unpackb", msgpack.fallback.unpackb)
    return str(request.param)


# --- depth: one budget over every nesting path ----------------------------------------


@pytest.mark.parametrize("depth", OVER_BUDGET)
@pytest.mark.parametrize("code", NESTING_TAGS, ids=tg.NAMES.get)
def test_nested_ext_over_budget_is_refused(msgpack_impl: str, code: int, depth: int) -> None:
    with pytest.raises(SerializationException, match=DEPTH_REFUSAL):
        loads(nested(code, depth), trusted=False)


@pytest.mark.parametrize("depth", OVER_BUDGET)
@pytest.mark.parametrize("code", NESTING_TAGS, ids=tg.NAMES.get)
def test_nested_ext_over_budget_is_refused_in_a_thread(code: int, depth: int) -> None:
    data = nested(code, depth)
    error = in_thread(lambda: loads(data, trusted=False))
    assert type(error) is SerializationException and "more than 200 levels" in str(error)


@pytest.mark.parametrize("depth", OVER_BUDGET)
def test_trusted_nested_ext_over_budget_is_refused(depth: int) -> None:
    with pytest.raises(SerializationException, match=DEPTH_REFUSAL):
        loads(nested(tg.LIST, depth), trusted=True)


@pytest.mark.parametrize("code", sorted(EXT_CODES), ids=tg.NAMES.get)
def test_every_ext_code_counts_toward_the_budget(code: int) -> None:
    with pytest.raises(SerializationException, match=DEPTH_REFUSAL):
        loads(nested(code, 250), trusted=False)


@pytest.mark.parametrize("code", NESTING_TAGS, ids=tg.NAMES.get)
def test_nested_ext_at_budget_decodes_or_is_refused_in_a_thread(code: int) -> None:
    data = nested(code, 200)

    def load() -> None:
        try:
            loads(data, trusted=False)
        except SerializationException:
            pass  # e.g. a DATETIME whose tzinfo is a DATETIME: refused, not crashed

    assert in_thread(load) is None


def test_lists_nested_to_the_budget_round_trip_in_a_thread() -> None:
    value = lists_around(0, 200)
    data = dumps(value)
    out: list[Any] = []
    assert in_thread(lambda: out.append(loads(data, trusted=False))) is None
    assert out == [value]


def test_max_depth_admits_exactly_its_levels() -> None:
    assert loads(nested(tg.LIST, 50), max_depth=50) == loads(nested(tg.LIST, 50))


def test_max_depth_refuses_one_level_more() -> None:
    with pytest.raises(SerializationException, match=r"more than 49 levels .*max_depth=49\)"):
        loads(nested(tg.LIST, 50), max_depth=49)


def test_msgpack_arrays_inside_ext_values_share_the_budget(msgpack_impl: str) -> None:
    data = nested(tg.LIST, 150, leaf=b"\x91" * 100 + b"\x00")
    with pytest.raises(SerializationException, match="arrays/maps and ext values more than 200"):
        loads(data, trusted=False)


def test_msgpack_array_within_budget_is_refused_as_no_value(msgpack_impl: str) -> None:
    with pytest.raises(SerializationException, match="value of ext LIST is a msgpack array"):
        loads(nested(tg.LIST, 5, leaf=b"\x91\x00"), trusted=False)


def test_msgpack_map_is_refused_as_no_value(msgpack_impl: str) -> None:
    with pytest.raises(SerializationException, match="is a msgpack map"):
        loads(body(ext(tg.LIST, {"k": 1})), trusted=False)


def test_top_level_msgpack_arrays_over_budget_are_refused(msgpack_impl: str) -> None:
    with pytest.raises(SerializationException, match="arrays/maps and ext values more than 200"):
        loads(HEADER + b"\x91" * 300 + b"\x00", trusted=False)


def test_msgpack_arrays_past_msgpacks_own_stack_are_refused(msgpack_impl: str) -> None:
    with pytest.raises(SerializationException, match="deeper than msgpack can unpack"):
        loads(HEADER + b"\x91" * 100_000 + b"\x00", trusted=False)


def test_dumps_refuses_leaf_nodes_past_loads_budget() -> None:
    with pytest.raises(SerializationException, match="more than 200 levels deep as nodes"):
        dumps(lists_around(2**100, 200))


def test_leaf_nodes_within_the_budget_round_trip() -> None:
    value = lists_around(2**100, 199)
    assert loads(dumps(value), trusted=False) == value


def refs_nested(levels: int) -> Ref[Any]:
    box: Ref[Any] = Ref(0)
    for _ in range(levels - 1):
        box = Ref(box)
    return box


def test_dumps_refuses_refs_nested_past_the_budget() -> None:
    with pytest.raises(SerializationException, match="nested more than 200 levels deep"):
        dumps(refs_nested(5000))


def test_refs_nested_to_the_budget_round_trip() -> None:
    value = loads(dumps(refs_nested(200)), trusted=False)
    for _ in range(199):
        value = value.value
    assert value.value == 0


def test_ref_holding_itself_is_refused() -> None:
    box: Ref[Any] = Ref(None)
    box.value = box
    with pytest.raises(SerializationException, match="refers to itself"):
        dumps(box)


# --- declared lengths and counts ---------------------------------------------------------

# Headers claiming 2**32 - 1 bytes, items or pairs, followed by almost nothing.
HUGE = {
    "str": b"\xdb\xff\xff\xff\xff",
    "bin": b"\xc6\xff\xff\xff\xff",
    "array": b"\xdd\xff\xff\xff\xff",
    "map": b"\xdf\xff\xff\xff\xff",
    "ext": b"\xc9\xff\xff\xff\xff\x03",
}


def huge_inside_ext(kind: str) -> bytes:
    """Put a huge-length header inside a LIST ext value's payload (after a real item)."""
    payload = b"\x92\x01" + HUGE[kind] + b"\x00" * 8
    return HEADER + ext_header(tg.LIST, len(payload)) + payload


@pytest.mark.parametrize("kind", sorted(HUGE))
def test_huge_declared_length_at_top_level_is_refused(msgpack_impl: str, kind: str) -> None:
    with pytest.raises(SerializationException, match=r"limit"):
        loads(HEADER + HUGE[kind] + b"\x00" * 8, trusted=False)


@pytest.mark.parametrize("kind", sorted(HUGE))
def test_huge_declared_length_inside_an_ext_value_is_refused(msgpack_impl: str, kind: str) -> None:
    with pytest.raises(SerializationException, match=r"limit"):
        loads(huge_inside_ext(kind), trusted=False)


@pytest.mark.parametrize("kind", sorted(HUGE))
def test_huge_declared_length_allocates_little(msgpack_impl: str, kind: str) -> None:
    assert peak_memory(huge_inside_ext(kind)) < MIB


def test_huge_declared_array_names_count_and_limit() -> None:
    with pytest.raises(
        SerializationException,
        match=r"msgpack array of 4294967295 items in 13 bytes \(limit max_array_len=13\)",
    ):
        loads(HEADER + HUGE["array"] + b"\x00" * 8, trusted=False)


def test_ext_payload_longer_than_its_parent_is_refused(msgpack_impl: str) -> None:
    inner = ext_header(tg.LIST, 1000) + b"\x90"
    payload = b"\x91" + inner
    with pytest.raises(SerializationException, match="limit"):
        loads(HEADER + ext_header(tg.LIST, len(payload)) + payload, trusted=False)


# Buffer nodes holding an int where bytes belong: bytearray(n)/bytes(n) would allocate n.
INT_BUFFERS = {
    "BYTEARRAY": ext(tg.BYTEARRAY, 2**31),
    "UUID": ext(tg.UUID, 2**31),
    "ARRAY": ext(tg.ARRAY, "b", "<", 2**31),
    "MEMORYVIEW": ext(tg.MEMORYVIEW, "B", "<", ext(tg.TUPLE), False, 2**31),
}


@pytest.mark.parametrize("name", sorted(INT_BUFFERS))
def test_int_in_place_of_a_buffer_is_refused(name: str) -> None:
    with pytest.raises(SerializationException, match=r"expected bytes .*\(got int\)"):
        loads(body(INT_BUFFERS[name]), trusted=False)


@pytest.mark.parametrize("name", sorted(INT_BUFFERS))
def test_int_in_place_of_a_buffer_allocates_little(name: str) -> None:
    assert peak_memory(body(INT_BUFFERS[name])) < MIB


# --- malformed ext values ----------------------------------------------------------------


def test_unknown_ext_code_is_refused(msgpack_impl: str) -> None:
    with pytest.raises(SerializationException, match="unknown ext code 99"):
        loads(body(msgpack.ExtType(99, b"\x90")), trusted=False)


def test_in_process_ext_code_is_refused_even_trusted() -> None:
    with pytest.raises(SerializationException, match=f"unknown ext code {tg.MARSHAL}"):
        loads(body(ext(tg.MARSHAL, b"\x00")), trusted=True)


def test_ext_payload_that_is_no_array_is_refused(msgpack_impl: str) -> None:
    with pytest.raises(SerializationException, match="ext LIST does not hold a list of values"):
        loads(body(msgpack.ExtType(tg.LIST, msgpack.packb("text"))), trusted=False)


def test_msgpack_timestamp_is_refused(msgpack_impl: str) -> None:
    with pytest.raises(SerializationException, match="is a Timestamp"):
        loads(body(msgpack.ExtType(tg.LIST, b"\x91\xd6\xff\x00\x00\x00\x01")), trusted=False)


def test_bytes_after_an_ext_payloads_array_are_refused(msgpack_impl: str) -> None:
    with pytest.raises(SerializationException, match="1 bytes after a msgpack value"):
        loads(body(msgpack.ExtType(tg.LIST, b"\x91\x00\x00")), trusted=False)


# --- in a subinterpreter (msgpack's pure-Python fallback) ----------------------------------

TESTS = os.path.dirname(os.path.abspath(__file__))
SETUP = f"""
import sys
sys.path.insert(0, {TESTS!r})
import threading
import msgpack
from appdomain._core import _compat
from appdomain._errors import SerializationException
from appdomain.marshal import loads

def outcome(data):
    try:
        loads(data, trusted=False)
    except SerializationException as exc:
        return str(exc)
    return "accepted"

def outcome_in_thread(data):
    out = []
    thread = threading.Thread(target=lambda: out.append(outcome(data)))
    thread.start()
    thread.join()
    return out[0]
"""


@pytest.fixture(scope="module")
def interp() -> Iterator[tuple[int, int]]:
    """Yield (interpreter id, queue id) of one subinterpreter set up for loads()."""
    iid = _interpreters.create()
    qid = _compat.queue_create()
    try:
        run(iid, SETUP)
        yield iid, qid
    finally:
        _interpreters.destroy(iid)
        _compat.queue_destroy(qid)


def run(iid: int, code: str, shared: dict[str, Any] | None = None) -> None:
    err = _interpreters.exec(iid, code, shared or {})
    assert err is None, err.formatted


def ask(interp: tuple[int, int], expression: str, data: bytes = b"") -> Any:
    """Evaluate ``expression`` in the subinterpreter (with ``data`` bound) and return it."""
    iid, qid = interp
    run(iid, f"_compat.queue_put(qid, {expression})", {"data": data, "qid": qid})
    return _compat.queue_get(qid)


def test_subinterpreter_unpacks_with_pure_python_msgpack(interp: tuple[int, int]) -> None:
    assert ask(interp, "msgpack.unpackb.__module__") == "msgpack.fallback"


# Every nesting tag past the budget, and the reproducer's 100,000 levels (the pure-Python
# unpacker copies each payload once per level, so one such case is enough here).
SUBINTERPRETER_CASES = [(code, 250) for code in NESTING_TAGS] + [(tg.LIST, 100_000)]
SUBINTERPRETER_IDS = [f"{tg.NAMES[code]}-{depth}" for code, depth in SUBINTERPRETER_CASES]


@pytest.mark.parametrize(("code", "depth"), SUBINTERPRETER_CASES, ids=SUBINTERPRETER_IDS)
def test_nested_ext_over_budget_is_refused_in_a_subinterpreter(
    interp: tuple[int, int], code: int, depth: int
) -> None:
    message = ask(interp, "outcome(data)", nested(code, depth))
    assert message == "data nests ext values more than 200 levels deep (limit max_depth=200)"


@pytest.mark.parametrize("depth", OVER_BUDGET)
def test_nested_ext_over_budget_is_refused_in_a_subinterpreter_thread(
    interp: tuple[int, int], depth: int
) -> None:
    message = ask(interp, "outcome_in_thread(data)", nested(tg.LIST, depth))
    assert message == "data nests ext values more than 200 levels deep (limit max_depth=200)"
