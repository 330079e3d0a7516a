"""Fuzz appdomain.marshal.loads(trusted=False) with mutated and generated inputs.

Run: .venv/bin/python bench/fuzz_marshal.py [--count N] [--seed S] [--pure] [--only I]

Half the inputs are mutations of valid dumps() output of varied values (bit flips, byte
and 32-bit overwrites, inserts, deletes, cuts, splices); half are built from the format's
structure (ext values of every tag, shaped like real nodes or not, ext payloads inside ext
payloads, deep nesting through every tag, lengths and counts declared far past the data).
Input i depends only on (seed, i): ``--only I`` re-runs one input, e.g. after a crash (the
progress lines say how far a run got). Prints outcomes by kind (ok, SerializationException,
and BUG for any other exception) and the slowest single input. Exit status 1 on a BUG.
Not part of the test run.
"""

from __future__ import annotations

import argparse
import array
import dataclasses
import datetime as dt
import decimal
import enum
import pathlib
import random
import struct
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import msgpack
import msgpack.fallback

from appdomain._errors import SerializationException
from appdomain.marshal import Ref, dumps, loads, serializable
from appdomain.marshal import _tags as tg
from appdomain.marshal._bytes import HEADER

SLOW_SECONDS = 0.1


# -- sample types (found by loads in this __main__ module) ---------------------------------


class Color(enum.Enum):
    RED = 1
    GREEN = "g"


class Perm(enum.Flag):
    R = 4
    W = 2
    X = 1


@dataclasses.dataclass
class Point:
    x: Any
    y: Any


class Pair(NamedTuple):
    left: Any
    right: Any


@serializable
class Account:
    def __init__(self, owner: str, balance: int) -> None:
        self.owner = owner
        self.balance = balance


class AppError(Exception):
    pass


def _error_with_cause() -> AppError:
    try:
        raise KeyError("inner")
    except KeyError as inner:
        err = AppError("outer", 5)
        err.__cause__ = inner
        err.code = 7  # type: ignore[attr-defined]
        return err


def _deep(levels: int) -> Any:
    value: Any = "leaf"
    for i in range(levels):
        value = [value] if i % 2 else {"k": value}
    return value


SEED_VALUES: list[Any] = [
    None,
    True,
    -(2**63),
    2**64,
    -(2**200),
    1.5,
    float("inf"),
    "text é \udcff",
    b"\x00\xff",
    [1, "a", b"b", (2, 3.5), None],
    {"k": {1, 2}, (1, 2): frozenset({"x"}), 3: [4.0]},
    bytearray(b"xyz"),
    array.array("d", [1.0, -2.5]),
    array.array("H", [1, 2]),
    memoryview(array.array("i", [1, 2, 3, 4])).cast("B").cast("i", [2, 2]),
    complex(1, -2),
    dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=2), "X")),
    dt.date(2024, 2, 29),
    dt.time(1, 2, 3, 4, tzinfo=dt.UTC, fold=1),
    dt.timedelta(days=-1, seconds=5),
    decimal.Decimal("-1.10E+5"),
    uuid.UUID(int=2**100),
    pathlib.PurePosixPath("/a/b"),
    pathlib.PureWindowsPath("c:/x"),
    Color.GREEN,
    Perm.R | Perm.X,
    Point(1, [Point(2, None)]),
    Pair("a", (b"b",)),
    Account("eve", 2**70),
    _error_with_cause(),
    Ref([1, 2]),
    _deep(40),
    [[[[[[[[[[0]]]]]]]]]],
]


# -- building raw inputs ------------------------------------------------------------------


def packb(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True, unicode_errors="surrogatepass")
    return packed


def ext_header(code: int, size: int) -> bytes:
    """Return a msgpack ext 8/16/32 header for a payload of ``size`` bytes."""
    if size < 1 << 8:
        return struct.pack(">BBb", 0xC7, size, code)
    if size < 1 << 16:
        return struct.pack(">BHb", 0xC8, size, code)
    return struct.pack(">BIb", 0xC9, size, code)


def node(code: int, *items: Any) -> msgpack.ExtType:
    """Return an ext value holding ``items`` (a node as dumps() writes it)."""
    return msgpack.ExtType(code, packb(list(items)))


# Headers claiming 2**32 - 1 bytes, items or pairs.
HUGE = [b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff"]
HUGE += [b"\xdf\xff\xff\xff\xff", b"\xc9\xff\xff\xff\xff\x03", b"\xdc\xff\xff", b"\xc5\xff\xff"]
# Bytes that start msgpack containers, exts, huge lengths or nothing at all (0xc1).
INTERESTING = [0x00, 0x7F, 0x80, 0x90, 0x91, 0x9F, 0xC1, 0xC4, 0xC7, 0xC9, 0xD4, 0xD8, 0xDC]
INTERESTING += [0xDD, 0xDE, 0xDF, 0xFF, *range(1, 29)]  # and the ext codes
# msgpack.ExtType takes codes 0..127 only; code -1 comes as a msgpack Timestamp.
CODES = [*range(1, 27), 27, 28, 0, 29, 99, 127]
NESTING = [c for c in tg.NAMES if c not in (tg.MARSHAL, tg.BYTES_VIEW)]


def scalar(rng: random.Random) -> Any:
    choices: list[Callable[[], Any]] = [
        lambda: None,
        lambda: rng.random() < 0.5,
        lambda: rng.choice([0, 1, -1, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, 10**18]),
        lambda: rng.randrange(-1000, 1000),
        lambda: rng.choice([0.0, -0.0, 1.5, float("nan"), float("inf"), 1e308]),
        lambda: rng.choice(["", "x", "Point", "__main__", "builtins", "UTC", "<", ">", "B"]),
        lambda: rng.choice(["1e999999", "NaN", "a.b", "<locals>", "__class__", "\udcff"]),
        lambda: bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 16, 40]))),
        lambda: msgpack.Timestamp(rng.randrange(2**34), 0),
    ]
    return rng.choice(choices)()


def shaped_items(code: int, rng: random.Random, depth: int) -> list[Any]:
    """Return children shaped like dumps() writes them for ``code`` (values random)."""

    def v() -> Any:  # a child, one level down
        return value(rng, depth + 1)

    mod = rng.choice(["__main__", "builtins", "re", "enum", "nosuch", "appdomain._errors"])
    shapes: dict[int, Callable[[], list[Any]]] = {
        tg.BIGINT: lambda: [scalar(rng)],
        tg.DICT: lambda: [v() for _ in range(rng.randrange(0, 7))],
        tg.BYTEARRAY: lambda: [rng.choice([b"ab", 2**31, "s"])],
        tg.MEMORYVIEW: lambda: [
            rng.choice(["B", "i", "d", "x", "BB"]),
            rng.choice(["<", ">", "?"]),
            node(tg.TUPLE, *[rng.choice([0, 1, 2, 4, -1, 2**40]) for _ in range(rng.randrange(3))]),
            rng.random() < 0.5,
            rng.choice([b"\x00" * 16, b"", 2**31]),
        ],
        tg.ARRAY: lambda: [rng.choice("bBuhHiIlLqQfdwx"), rng.choice("<>"), b"\x01" * 8],
        tg.COMPLEX: lambda: [scalar(rng), scalar(rng)],
        tg.DATETIME: lambda: [2024, 1, 2, 3, 4, 5, 6, rng.choice([0, 1, 2]), v()],
        tg.DATE: lambda: [rng.choice([2024, 0, 10**6]), 2, 29],
        tg.TIME: lambda: [1, 2, 3, 4, 0, v()],
        tg.TIMEDELTA: lambda: [rng.choice([1, 10**9, -(10**10)]), 0, 0],
        tg.TIMEZONE: lambda: [0, rng.choice([3600, 86400]), 0, rng.choice([None, "X", 5])],
        tg.ZONEINFO: lambda: [rng.choice(["UTC", "Europe/Paris", "../x", "", "/etc/passwd", 5])],
        tg.DECIMAL: lambda: [rng.choice(["1.5", "NaN", "-0", "1e999999999", "x", 5])],
        tg.UUID: lambda: [rng.choice([b"\x01" * 16, b"\x01", 2**31])],
        tg.PATH: lambda: [rng.choice(["PurePosixPath", "WindowsPath", "Path", "X"]), "a/b"],
        tg.ENUM: lambda: [mod, rng.choice(["Color", "Perm", "RegexFlag"]), scalar(rng), v()],
        tg.DATACLASS: lambda: [mod, "Point", "x", v(), rng.choice(["y", "z", 5]), v()],
        tg.OBJECT: lambda: [mod, "Account", v()],
        tg.EXCEPTION: lambda: [
            *[mod, rng.choice(["AppError", "ValueError"]), "m", v(), v(), "tb"],
            *[v(), v(), rng.random() < 0.5],
        ],
        tg.REFERENCE: lambda: [rng.choice(["k", "appdomain.nosuch:X", 5]), True, v()],
        tg.NAMEDTUPLE: lambda: [mod, "Pair", v(), v()],
    }
    make = shapes.get(code)
    if make is None:
        return [v() for _ in range(rng.randrange(0, 5))]
    items = make()
    if rng.random() < 0.2 and items:  # wrong arity
        del items[rng.randrange(len(items))]
    if rng.random() < 0.1:
        items.append(v())
    return items


def value(rng: random.Random, depth: int = 0) -> Any:
    """Return a random msgpack value made of ext values (mostly) and scalars."""
    roll = rng.random()
    if depth > 6 or roll < 0.35:
        return scalar(rng)
    if roll < 0.40:
        return [value(rng, depth + 1) for _ in range(rng.randrange(3))]  # a msgpack array
    if roll < 0.42:
        return {"k": value(rng, depth + 1)}  # a msgpack map
    code = rng.choice(NESTING) if rng.random() < 0.9 else rng.choice(CODES)
    if rng.random() < 0.05:  # a payload that is not an array, or not msgpack at all
        return msgpack.ExtType(code, rng.choice([b"", b"\xc1", packb(5), b"\x91", b"\x92\x00"]))
    return node(code, *shaped_items(code, rng, depth))


def deep_chain(rng: random.Random) -> bytes:
    """Return ext values of one tag nested around each other, near or past the budget."""
    code = rng.choice(NESTING)
    depth = rng.choice([1, 50, 199, 200, 201, 250, 1000, 5000])
    before = [scalar(rng) for _ in range(rng.randrange(3))]
    head = bytes([0x90 | (len(before) + 1)]) + b"".join(packb(x) for x in before)
    leaf = rng.choice([b"\x00", b"\x91" * rng.choice([1, 100, 300]) + b"\x00", HUGE[0]])
    headers: list[bytes] = []
    size = len(leaf)
    for _ in range(depth):
        size += len(head)
        headers.append(ext_header(code, size))
        size += len(headers[-1])
    return HEADER + b"".join(h + head for h in reversed(headers)) + leaf


def huge_declaration(rng: random.Random) -> bytes:
    """Return an ext value whose payload declares a length far past its bytes."""
    payload = b"\x92" + packb(scalar(rng)) + rng.choice(HUGE) + b"\x00" * rng.randrange(9)
    out = ext_header(rng.choice(NESTING), len(payload)) + payload
    for _ in range(rng.randrange(3)):  # inside further ext values
        inner = b"\x91" + out
        out = ext_header(rng.choice(NESTING), len(inner)) + inner
    return HEADER + out


def generated(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.1:
        return deep_chain(rng)
    if roll < 0.2:
        return huge_declaration(rng)
    return HEADER + packb(value(rng))


def raw_ext(code: int, data: bytes) -> msgpack.ExtType:
    return msgpack.ExtType(code, data)


def unpack_raw(data: bytes) -> Any:
    """Unpack one level of dumps() output, keeping ext values as they are."""
    return msgpack.unpackb(data, ext_hook=raw_ext, unicode_errors="surrogatepass")


def mutated_inside(rng: random.Random, seed: bytes) -> bytes:
    """Mutate one ext payload somewhere inside ``seed``, then fix the lengths around it.

    Flipping bytes of the whole input mostly breaks the outer lengths (msgpack then refuses
    it early); this reaches the decoders of inner nodes.
    """
    top = unpack_raw(seed[3:])
    if not isinstance(top, msgpack.ExtType):
        return seed
    path: list[tuple[msgpack.ExtType, list[Any], int]] = []  # (node, its children, index)
    current = top
    while rng.random() < 0.7:
        children = list(unpack_raw(current.data))
        inner = [i for i, c in enumerate(children) if isinstance(c, msgpack.ExtType)]
        if not inner:
            break
        index = rng.choice(inner)
        path.append((current, children, index))
        current = children[index]
    changed = raw_ext(current.code, bytes(mutated_bytes(rng, current.data, [current.data])))
    for parent, children, index in reversed(path):
        children[index] = changed
        changed = raw_ext(parent.code, packb(children))
    return HEADER + packb(changed)


def mutated(rng: random.Random, seeds: list[bytes]) -> bytes:
    seed = rng.choice(seeds)
    if rng.random() < 0.5:
        return mutated_inside(rng, seed)
    data = mutated_bytes(rng, seed, seeds)
    if rng.random() < 0.5:
        data[:3] = HEADER  # mostly get past the header check
    return bytes(data)


def mutated_bytes(rng: random.Random, seed: bytes, seeds: list[bytes]) -> bytearray:
    """Return ``seed`` with 1 to 4 byte-level mutations (never shorter than 1 byte)."""
    data = bytearray(seed)
    for _ in range(rng.randrange(1, 5)):
        pos = rng.randrange(len(data))
        kind = rng.randrange(8)
        if kind == 0:
            data[pos] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[pos] = rng.choice(INTERESTING)
        elif kind == 2:
            data[pos : pos + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff"])
        elif kind == 3:
            data[pos:pos] = rng.choice(HUGE) if rng.random() < 0.3 else bytes([rng.randrange(256)])
        elif kind == 4:
            del data[pos : pos + rng.randrange(1, 9)]
        elif kind == 5:
            del data[pos + 1 :]
        elif kind == 6:
            other = rng.choice(seeds)
            start = rng.randrange(len(other))
            data[pos:pos] = other[start : start + rng.randrange(1, 40)]
        else:
            start = rng.randrange(len(data))
            data[pos:pos] = data[start : start + rng.randrange(1, 40)]
        if not data:
            data = bytearray(seed)
    return data


def make_input(seed: int, i: int, seeds: list[bytes]) -> bytes:
    rng = random.Random((seed << 32) | i)
    return mutated(rng, seeds) if i % 2 == 0 else generated(rng)


# -- running ------------------------------------------------------------------------------


def run(count: int, seed: int, start: int, progress: int) -> int:
    seeds = [dumps(v) for v in SEED_VALUES]
    outcomes: dict[str, int] = {}
    bugs: dict[str, tuple[int, bytes, str]] = {}
    slowest = (0.0, -1, b"")
    began = time.perf_counter()
    for i in range(start, start + count):
        data = make_input(seed, i, seeds)
        t0 = time.perf_counter()
        try:
            loads(data, trusted=False)
            kind = "ok"
        except SerializationException:
            kind = "SerializationException"
        except Exception as exc:
            kind = f"BUG {type(exc).__name__}"
            bugs.setdefault(kind, (i, data, f"{exc}"[:200]))
        elapsed = time.perf_counter() - t0
        outcomes[kind] = outcomes.get(kind, 0) + 1
        if elapsed > slowest[0]:
            slowest = (elapsed, i, data)
        if progress and (i - start + 1) % progress == 0:
            rate = (i - start + 1) / (time.perf_counter() - began)
            print(f"  {i - start + 1:>9} inputs, {rate:,.0f}/s, up to input {i}", file=sys.stderr)
    total = time.perf_counter() - began
    print(
        f"fuzz_marshal: {count} inputs (seed {seed}, inputs {start}..{start + count - 1}) in "
        f"{total:.1f} s ({count / total:,.0f}/s), msgpack {msgpack.unpackb.__module__}"
    )
    for kind, n in sorted(outcomes.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:32} {n:>9}")
    for kind, (i, data, text) in bugs.items():
        print(f"  first {kind}: input {i} ({len(data)} bytes) {data[:48].hex()}: {text}")
    secs, i, data = slowest
    flag = "  SLOW" if secs > SLOW_SECONDS else ""
    print(f"  slowest: {secs * 1e3:.2f} ms, input {i} ({len(data)} bytes) {data[:32].hex()}{flag}")
    return 1 if bugs else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="inputs to run")
    parser.add_argument("--seed", type=int, default=0, help="seed (inputs depend on it)")
    parser.add_argument("--start", type=int, default=0, help="index of the first input")
    parser.add_argument("--only", type=int, help="run just input ONLY (as --start ONLY --count 1)")
    parser.add_argument("--pure", action="store_true", help="unpack with msgpack's fallback")
    parser.add_argument("--progress", type=int, default=100_000, help="print every N inputs")
    args = parser.parse_args()
    if args.pure:
        msgpack.unpackb = msgpack.fallback.unpackb
    warnings.simplefilter("ignore")  # e.g. array typecode 'u' is deprecated
    if args.only is not None:
        args.start, args.count = args.only, 1
    sys.exit(run(args.count, args.seed, args.start, args.progress))


if __name__ == "__main__":
    main()
