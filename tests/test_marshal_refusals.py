"""Refuse values that cannot cross, naming their path; honour the two registration hooks."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest
from test_marshal_samples import Handle, NotMarked, Point, SubHandle, rebuild_handle, reduce_handle

from appdomain._errors import SerializationException
from appdomain.marshal import (
    Out,
    decode_call,
    dumps,
    encode_call,
    encode_reply,
    from_shareable,
    loads,
    plan_for,
    register_reference_type,
    serializable,
    set_module_alias,
    to_shareable,
)


def target(a: int, b: str, c: list[Any], buf: Out[bytearray] | None = None) -> None:
    pass


def test_refusal_names_argument_and_path() -> None:
    lock = threading.Lock()
    with pytest.raises(SerializationException) as info:
        encode_call((1, "x", [0, 1, {"k": lock}]), {}, plan_for(target))
    assert str(info.value).startswith("argument 'c'[2]['k']: <unlocked _thread.lock object at 0x")
    assert str(info.value).endswith(
        "cannot cross domains (not a primitive, buffer, container, dataclass, enum or "
        "@serializable type; make it a MarshalByRefObject to pass it by reference)"
    )


def test_refusal_without_plan_names_position() -> None:
    with pytest.raises(SerializationException, match=r"^argument 1\[0\]: <function"):
        encode_call((1, [lambda: 0]), {})


def test_refusal_names_keyword_argument() -> None:
    with pytest.raises(SerializationException, match=r"^argument 'cb': "):
        encode_call((), {"cb": lambda: 0})


def test_refusal_names_dataclass_field() -> None:
    with pytest.raises(SerializationException, match=r"^value\.y: <object object"):
        to_shareable(Point(1, object()))  # type: ignore[arg-type]


def test_refusal_names_dict_key() -> None:
    with pytest.raises(SerializationException, match=r"^value<key <object object"):
        to_shareable({object(): 1})


def test_refusal_of_unmarked_class() -> None:
    with pytest.raises(SerializationException, match=r"NotMarked object at .* cannot cross"):
        dumps(NotMarked())


def test_refusal_of_result() -> None:
    with pytest.raises(SerializationException, match=r"^return value\[0\]: <generator"):
        encode_reply([(i for i in [])], (), {}, None)


def test_refusal_of_function_local_class() -> None:
    @serializable
    class Local:
        pass

    with pytest.raises(SerializationException, match="defined inside a function"):
        to_shareable(Local())


def test_refusal_of_serializable_subclass_not_marked() -> None:
    @serializable
    class Base:
        pass

    class Child(Base):
        pass

    with pytest.raises(SerializationException, match="cannot cross domains"):
        to_shareable(Child())


def test_self_referencing_list_is_refused() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(
        SerializationException, match=r"^value\[1\]: \[1, \[\.\.\.\]\] refers to itself"
    ):
        to_shareable(loop)


def test_self_referencing_dict_is_refused_by_dumps() -> None:
    d: dict[str, Any] = {}
    d["me"] = d
    with pytest.raises(SerializationException, match="refers to itself"):
        dumps(d)


def test_deep_nesting_is_refused_not_recursion_error() -> None:
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep, bytearray()]
    with pytest.raises(SerializationException, match="nested more than"):
        to_shareable(deep)


def test_reference_type_crosses_by_reduce_and_rebuild() -> None:
    register_reference_type(Handle, reduce_handle, rebuild_handle)
    h = Handle(101)
    assert to_shareable(h)[3] == (101,)
    assert from_shareable(to_shareable([h]))[0] is h


def test_reference_type_covers_subclasses_and_beats_other_rules() -> None:
    register_reference_type(Handle, reduce_handle, rebuild_handle)
    args, _ = decode_call(encode_call((SubHandle(102),), {}))
    assert args[0] is Handle.registry[102]


def test_reference_type_round_trips_through_bytes() -> None:
    register_reference_type(Handle, reduce_handle, rebuild_handle)
    assert loads(dumps(Handle(103))) is Handle.registry[103]


def test_module_alias_renames_outgoing_and_resolves_incoming() -> None:
    module = type(sys)("__fake_worker_main__")
    sys.modules[module.__name__] = module
    exec("from dataclasses import dataclass\n@dataclass\nclass Job:\n    n: int\n", module.__dict__)
    try:
        set_module_alias("__fake_worker_main__", "__fake_wire_main__")
        wire = to_shareable(module.Job(3))
        assert wire[1] == "__fake_wire_main__"
        assert type(from_shareable(wire)) is module.Job
    finally:
        del sys.modules[module.__name__]


def test_register_reference_type_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="'reduce' must be callable"):
        register_reference_type(Handle, None, rebuild_handle)  # type: ignore[arg-type]
