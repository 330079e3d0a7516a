"""Round-trip every supported value type in one interpreter, exactly (type and value)."""

from __future__ import annotations

import array
import datetime as dt
import decimal
import functools
import math
import pathlib
import sys
import uuid
import zoneinfo
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_marshal_samples import (
    Account,
    AppError,
    Color,
    Custom,
    Level,
    Pair,
    Perm,
    Point,
    Segment,
    Slotted,
    scale,
)

from appdomain.marshal import Ref, dumps, from_shareable, loads, to_shareable
from appdomain.marshal._core import KEEP_MAX, VIEW_MIN

UTC = dt.UTC
VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**63 - 1,
    -(2**63),
    2**63,
    -(2**63) - 1,
    2**200,
    -(3**150),
    1.5,
    -0.0,
    math.inf,
    "",
    "héllo ✓",
    b"",
    b"\x00\xff",
    bytearray(b"abc"),
    complex(1, -2),
    (),
    (1, (2, (3,))),
    [],
    [1, "a", [b"x"]],
    {},
    {"a": 1, 2: "b", (1, 2): [3], None: None, 1.5: True},
    {1, 2, "x"},
    frozenset({(1, 2), "y"}),
    [bytearray(b"in list"), array.array("d", [1.0])],
    {"k": {"nested": (bytearray(b"x"), {1, 2})}},
    array.array("i", [1, -2, 3]),
    array.array("w", "wide"),
    array.array("B"),
    dt.datetime(2024, 5, 6, 7, 8, 9, 10),
    dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
    dt.datetime(2024, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=-3), "BRT")),
    dt.datetime(2024, 11, 3, 1, 30, tzinfo=zoneinfo.ZoneInfo("America/New_York"), fold=1),
    dt.date(1999, 12, 31),
    dt.time(23, 59, 59, 999999),
    dt.time(1, 2, tzinfo=dt.timezone(dt.timedelta(minutes=90))),
    dt.timedelta(days=-3, seconds=5, microseconds=7),
    UTC,
    decimal.Decimal("3.14159265358979323846264338327950288"),
    decimal.Decimal("-0"),
    decimal.Decimal("NaN") if False else decimal.Decimal("Infinity"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    pathlib.PurePosixPath("/etc/hosts"),
    pathlib.PureWindowsPath(r"C:\Windows\system32"),
    pathlib.Path("relative/file.txt"),
    Color.RED,
    Color.GREEN,
    Perm.R | Perm.W,
    Level.HIGH,
    Point(1, 2),
    Segment(Point(0, 0), Point(3, 4), ["a"]),
    Slotted(5, [1]),
    Pair(1, Point(2, 3)),
    Account("ann", 10),
    [Point(1, 1), {"p": Point(2, 2)}],
]


def same(a: Any, b: Any) -> bool:
    """Compare values and their exact types, recursively through builtin containers."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list | tuple) and not hasattr(a, "_fields"):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and a == 0:
        return math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_shareable_round_trip_is_exact(value: Any) -> None:
    assert same(from_shareable(to_shareable(value)), value)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_bytes_round_trip_is_exact(value: Any) -> None:
    assert same(loads(dumps(value)), value)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_untrusted_loads_of_imported_types_is_exact(value: Any) -> None:
    assert same(loads(dumps(value), trusted=False), value)


def test_bool_stays_bool_and_int_stays_int() -> None:
    out = from_shareable(to_shareable([True, 1, 0, False]))
    assert [type(x) for x in out] == [bool, int, int, bool]


def test_memoryview_keeps_format_shape_and_readonly() -> None:
    source = memoryview(array.array("h", range(6))).cast("B").cast("h", [2, 3])
    out = from_shareable(to_shareable(source))
    assert (out.format, out.shape, out.readonly, out.tolist()) == (
        "h",
        (2, 3),
        False,
        source.tolist(),
    )


def test_readonly_memoryview_stays_readonly() -> None:
    out = loads(dumps(memoryview(b"abc")))
    assert type(out) is memoryview and out.readonly and out.tobytes() == b"abc"


def test_large_bytearray_crosses_as_a_view_of_the_sender() -> None:
    data = bytearray(1 << 20)
    assert type(to_shareable(data)[1]) is memoryview


def test_large_bytearray_decodes_to_a_private_copy() -> None:
    data = bytearray(b"x" * (1 << 20))
    out = from_shareable(to_shareable(data))
    data[0] = 0
    assert out[0] == ord("x") and type(out) is bytearray


def test_last_large_bytes_sent_is_kept_until_the_next_is_sent() -> None:
    # So the receiver's copy reuses freed heap rather than faulting in fresh pages (KEEP_MAX).
    first = bytes(VIEW_MIN)
    to_shareable(first)
    held = sys.getrefcount(first)
    to_shareable(bytes(VIEW_MIN))
    assert sys.getrefcount(first) == held - 1


def test_bytes_above_keep_max_are_not_kept_after_sending() -> None:
    huge = bytes(KEEP_MAX + 1)
    before = sys.getrefcount(huge)
    to_shareable(huge)
    assert sys.getrefcount(huge) == before


def test_serializable_is_rebuilt_without_init() -> None:
    acct = Account("bob", 3)
    acct.inits = 7
    out = from_shareable(to_shareable(acct))
    assert out.inits == 7 and out == acct


def test_serializable_uses_getstate_and_setstate() -> None:
    assert from_shareable(to_shareable(Custom(21))).n == 21


def test_frozen_dataclass_stays_frozen_type() -> None:
    seg = loads(dumps(Segment(Point(1, 2), Point(3, 4))))
    assert type(seg) is Segment and seg.end == Point(3, 4)


def test_enum_member_comes_back_identical() -> None:
    assert from_shareable(to_shareable(Color.GREEN)) is Color.GREEN


def test_ref_box_round_trips() -> None:
    out = from_shareable(to_shareable(Ref([1, 2])))
    assert type(out) is Ref and out.value == [1, 2]


def test_exception_value_round_trips_with_attributes() -> None:
    out = from_shareable(to_shareable(AppError(4, "bad")))
    assert type(out) is AppError and (out.code, out.detail, out.args) == (
        4,
        "bad",
        ("code 4: bad",),
    )


def test_shared_substructure_is_not_a_cycle() -> None:
    inner = [bytearray(b"x")]
    assert from_shareable(to_shareable([inner, inner])) == [inner, inner]


def test_timezone_name_is_kept() -> None:
    tz = dt.timezone(dt.timedelta(hours=2), "EET")
    assert loads(dumps(dt.datetime(2020, 1, 1, tzinfo=tz))).tzname() == "EET"


# --- golden bytes: the dumps format is pinned (FORMAT.md) -------------------------------

GOLDEN = [
    (None, "ad013cc0"),
    (True, "ad013cc3"),
    (1, "ad013c01"),
    (-1, "ad013cff"),
    ("hi", "ad013ca26869"),
    (b"\x01", "ad013cc40101"),
    (1.5, "ad013ccb3ff8000000000000"),
    ((1, "a"), "ad013cd6029201a161"),
    ([1, 2], "ad013cc70303920102"),
    ({"a": 1}, "ad013cd60492a16101"),
    (2**64, "ad013cc70c0191c409000000000000000001"),
    (bytearray(b"ab"), "ad013cc7050791c4026162"),
    (dt.date(2024, 1, 2), "ad013cc7060c93cd07e80102"),
    (uuid.UUID(int=1), "ad013cc7131291c41000000000000000000000000000000001"),
    (Color.RED, "ad013cc7211494b4746573745f6d61727368616c5f73616d706c6573a5436f6c6f72a3524544c0"),
    (len, "ad013cc7161d93a76275696c74696ea86275696c74696e73a36c656e"),
    (list, "ad013cc7151d93a5636c617373a86275696c74696e73a46c697374"),
    (functools, "ad013cc7131d93a66d6f64756c65a966756e63746f6f6c73a0"),
    (
        scale,
        "ad013cc7251d93a866756e6374696f6eb4746573745f6d61727368616c5f73616d706c6573a57363616c65",
    ),
    (
        functools.partial(int, base=2),
        "ad013cc7261e94c7141d93a5636c617373a86275696c74696e73a3696e74d40290c7070492a46261736502c0",
    ),
]


@pytest.mark.parametrize(
    ("value", "hexdump"), GOLDEN, ids=[getattr(v, "__qualname__", repr(v)) for v, _ in GOLDEN]
)
def test_dumps_output_is_pinned(value: Any, hexdump: str) -> None:
    assert dumps(value).hex() == hexdump


# --- properties ----------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.complex_numbers(allow_nan=False)
    | st.decimals(allow_nan=False)
    | st.datetimes()
    | st.uuids()
)
hashables = st.recursive(
    scalars, lambda kids: st.tuples(kids, kids) | st.frozensets(kids, max_size=3), max_leaves=8
)
values = st.recursive(
    scalars | st.binary().map(bytearray),
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.lists(kids, max_size=4).map(tuple)
        | st.dictionaries(hashables, kids, max_size=4)
        | st.sets(hashables, max_size=4)
        | st.builds(Point, kids, kids)
        | st.builds(Pair, kids, kids)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(values)
def test_nested_values_round_trip_through_shareables(value: Any) -> None:
    assert same(from_shareable(to_shareable(value)), value)


@settings(max_examples=200, deadline=None)
@given(values)
def test_nested_values_round_trip_through_bytes(value: Any) -> None:
    assert same(loads(dumps(value), trusted=False), value)
