"""Feed random and mutated bytes to loads(trusted=False): only SerializationException."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_marshal_samples import Account, Color, Point

from appdomain._errors import SerializationException
from appdomain.marshal import dumps, loads

SEEDS = [
    dumps(v)
    for v in (
        None,
        [1, "a", b"b", (2, 3.5)],
        {"k": {1, 2}, (1, 2): frozenset({"x"})},
        [Point(1, 2), Color.RED, Account("a", 1)],
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        2**90,
        bytearray(b"xyz"),
    )
]


def try_loads(data: bytes) -> None:
    try:
        loads(data, trusted=False, max_size=1 << 16)
    except SerializationException:
        pass


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_serialization_exception(data: bytes) -> None:
    try_loads(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_body_after_valid_header_only_raises_serialization_exception(data: bytes) -> None:
    try_loads(SEEDS[0][:3] + data)


@settings(max_examples=1000, deadline=None)
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(0, 10_000),
)
def test_mutated_valid_bytes_only_raise_serialization_exception(
    seed: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(seed)
    for pos, byte in flips:
        data[pos % len(data)] = byte
    try_loads(bytes(data[: max(cut, 3)]))


def test_oversized_input_is_refused() -> None:
    with pytest.raises(SerializationException, match="over max_size"):
        loads(dumps(b"x" * 100), max_size=50)


def test_deep_nesting_is_refused() -> None:
    nested: Any = 0
    for _ in range(60):
        nested = [nested]
    with pytest.raises(SerializationException, match="more than 20 levels deep"):
        loads(dumps(nested), max_depth=20)


def test_untrusted_loads_does_not_import_modules() -> None:
    data = dumps(Point(1, 2)).replace(b"test_marshal_samples", b"test_marshal_sampleZ")
    with pytest.raises(SerializationException, match="not imported"):
        loads(data, trusted=False)


def test_untrusted_loads_refuses_non_dataclass_claims() -> None:
    data = dumps(Point(1, 2)).replace(b"Point", b"Color")
    with pytest.raises(SerializationException, match="is not a dataclass type"):
        loads(data, trusted=False)


def test_in_process_marshal_node_is_refused_in_bytes() -> None:
    with pytest.raises(SerializationException):
        loads(bytes.fromhex("ad013cd51b00"), trusted=False)


def test_non_bytes_input_is_refused() -> None:
    with pytest.raises(SerializationException, match="'data' must be bytes"):
        loads(123)  # type: ignore[arg-type]
