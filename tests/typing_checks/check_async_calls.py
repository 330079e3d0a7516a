"""Checked by mypy (scripts/typecheck), never run: begin_invoke and invoke_async, typed."""

from __future__ import annotations

import concurrent.futures
from typing import Any, assert_type

from appdomain import AppDomain, MarshalByRefObject, RemoteMethod


class Calculator(MarshalByRefObject):
    def add(self, a: int, b: int) -> int:
        return a + b


def check_begin_invoke(domain: AppDomain) -> None:
    add = RemoteMethod.of(domain.create_instance_and_unwrap(Calculator).add)
    assert_type(add(1, 2), int)
    assert_type(add.begin_invoke(1, 2), concurrent.futures.Future[int])
    assert_type(add.begin_invoke(1, 2).result(), int)
    assert_type(add.BeginInvoke(1, 2), concurrent.futures.Future[int])
    assert_type(add.name, str)
    add.begin_invoke(1, "2")  # type: ignore[arg-type]
    add.begin_invoke(1)  # type: ignore[call-arg]


async def check_invoke_async(domain: AppDomain) -> None:
    add = RemoteMethod.of(domain.create_instance_and_unwrap(Calculator).add)
    assert_type(await add.invoke_async(1, 2), int)
    await add.invoke_async("1", 2)  # type: ignore[arg-type]


def check_untyped_proxy(domain: AppDomain) -> None:
    calc = domain.create_instance_and_unwrap("calcs", "Calculator")
    assert_type(calc.add.begin_invoke(1, 2), Any)
