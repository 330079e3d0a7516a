"""Importing appdomain.marshal in a new domain stays cheap: heavy modules load on demand.

Each test runs in a fresh subinterpreter where the ``appdomain`` package object exists but
its ``__init__`` has not run (it imports the rest of appdomain), so what is measured is
exactly what ``appdomain.marshal`` itself imports.
"""

from __future__ import annotations

import _interpreters
import datetime as dt
import decimal
import pathlib
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import appdomain.marshal
from appdomain.marshal import dumps, to_shareable, wire_to_bytes

# Modules a new domain must not pay for just by importing appdomain.marshal.
LAZY = (
    "asyncio",
    "dataclasses",
    "datetime",
    "decimal",
    "inspect",
    "msgpack",
    "pathlib",
    "traceback",
    "typing",
    "uuid",
    "zoneinfo",
)

# Stand the appdomain package up without running its __init__, then import marshal.
BARE_IMPORT = f"""
import importlib.util, sys
spec = importlib.util.find_spec("appdomain")
sys.modules["appdomain"] = importlib.util.module_from_spec(spec)
before = set(sys.modules)
import appdomain.marshal
added = set(sys.modules) - before
LAZY = {LAZY!r}
"""


@pytest.fixture
def bare() -> Iterator[int]:
    """Yield a fresh subinterpreter that has imported only appdomain.marshal."""
    iid = _interpreters.create()
    try:
        run(iid, BARE_IMPORT)
        yield iid
    finally:
        _interpreters.destroy(iid)


def run(iid: int, code: str, shared: dict[str, Any] | None = None) -> None:
    err = _interpreters.exec(iid, code, shared or {})
    assert err is None, err.formatted


def test_msgpack_is_imported_by_the_main_interpreter() -> None:
    # It must be loaded here before any subinterpreter imports it (CPython 3.13.0).
    assert appdomain.marshal._bytes.msgpack is sys.modules["msgpack"]


def test_import_in_a_new_domain_leaves_heavy_modules_unloaded(bare: int) -> None:
    run(
        bare,
        """
assert "appdomain.marshal._types" in added and "appdomain.marshal._exc" in added, added
loaded = sorted(name for name in LAZY if name in added)
assert not loaded, f"importing appdomain.marshal imported {loaded}"
from appdomain.marshal import dumps, loads  # loads _bytes, still not msgpack
assert appdomain.marshal._bytes.msgpack is None and "msgpack" not in sys.modules
assert loads(dumps([1, "x"])) == [1, "x"]
assert appdomain.marshal._bytes.msgpack is sys.modules["msgpack"]
assert "typing" not in sys.modules, "dumps/loads imported typing"
""",
    )


def test_plan_for_a_function_imports_neither_inspect_nor_typing(bare: int) -> None:
    run(
        bare,
        """
from appdomain.marshal import Out, Ref, plan_for
assert "CallPlan" in dir(appdomain.marshal)

def read(buffer: Out[bytearray], count: int, total: Ref[int]) -> int: ...

before = set(sys.modules)  # Out[...] above made typing's Annotated: typing is there
plan = plan_for(read)
heavy = set(sys.modules) - before - {"appdomain.marshal._callplan", "weakref", "_weakrefset"}
assert not heavy, heavy
assert "inspect" not in sys.modules and "dataclasses" not in sys.modules
from appdomain.marshal import CallPlan
assert type(plan) is CallPlan
assert CallPlan is appdomain.marshal._plan.CallPlan
assert plan.out_names == {"buffer"} and plan.out_positions == {0} and plan.has_out
assert plan_for(read) is plan
""",
    )


VALUES: list[Any] = [
    decimal.Decimal("-1.50"),
    uuid.UUID(int=12345),
    dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=-3), "X")),
    dt.date(2024, 2, 29),
    dt.time(23, 59, 1, fold=1),
    dt.timedelta(days=-1, seconds=5),
    dt.UTC,
    pathlib.PurePosixPath("/etc/hosts"),
    pathlib.PureWindowsPath(r"C:\Windows"),
    pathlib.Path("relative/file.txt"),
]
# Rebuilt inside the subinterpreter (after the test imports what the values need).
SOURCES = [
    'decimal.Decimal("-1.50")',
    "uuid.UUID(int=12345)",
    'dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=-3), "X"))',
    "dt.date(2024, 2, 29)",
    "dt.time(23, 59, 1, fold=1)",
    "dt.timedelta(days=-1, seconds=5)",
    "dt.UTC",
    'pathlib.PurePosixPath("/etc/hosts")',
    r'pathlib.PureWindowsPath(r"C:\Windows")',
    'pathlib.Path("relative/file.txt")',
]


@pytest.mark.parametrize(("value", "source"), list(zip(VALUES, SOURCES, strict=True)), ids=SOURCES)
def test_lazy_types_decode_then_encode_in_a_new_domain(bare: int, value: Any, source: str) -> None:
    """Decoding imports the module on sight of the tag; encoding then finds the type."""
    run(
        bare,
        """
from appdomain.marshal import from_shareable, to_shareable, wire_from_bytes, dumps, loads
wire = wire_from_bytes(wire_bytes)
got = from_shareable(wire)
import datetime as dt, decimal, pathlib, uuid
value = eval(source)
assert type(got) is type(value) and got == value, (got, value)
assert to_shareable(value) == wire, (to_shareable(value), wire)
assert loads(packed) == value and dumps(value) == packed
assert appdomain.marshal._bytes.msgpack is sys.modules["msgpack"]
""",
        {
            "wire_bytes": wire_to_bytes(to_shareable(value)),
            "packed": dumps(value),
            "source": source,
        },
    )


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("_decimal", '_decimal.Decimal("2.5")'),
        ("_datetime", "_datetime.date(2020, 1, 1)"),
    ],
)
def test_encoding_a_type_whose_public_module_is_not_imported(
    bare: int, module: str, source: str
) -> None:
    """A C type imported straight from its accelerator module is still recognised."""
    run(
        bare,
        f"""
import {module}
value = {source}
public = type(value).__module__
assert public not in sys.modules, public
from appdomain.marshal import from_shareable, to_shareable
wire = to_shareable(value)
assert type(wire) is tuple, wire
assert from_shareable(wire) == value
""",
    )


def test_exception_and_user_types_in_a_new_domain(bare: int) -> None:
    run(
        bare,
        """
import sys
from appdomain.marshal import decode_exception, encode_exception, from_shareable, to_shareable
try:
    raise KeyError("k")
except KeyError as exc:
    wire = encode_exception(exc)
assert "Server stack trace" in decode_exception(wire).__notes__[0]

import enum, dataclasses
class Color(enum.Enum):
    RED = 1
class Perm(enum.Flag):
    R = 1
    W = 2
@dataclasses.dataclass
class Point:
    x: int
    y: int
sys.modules["__main__"].Color = Color
sys.modules["__main__"].Perm = Perm
sys.modules["__main__"].Point = Point
for value in (Color.RED, Perm.R | Perm.W, Point(1, 2)):
    assert from_shareable(to_shareable(value)) == value, value
""",
    )
