"""Checked by mypy (scripts/typecheck), never run: get_data and do_callback, typed."""

from __future__ import annotations

from typing import Any, assert_type

from appdomain import AppDomain


def count_words(text: str, *, lower: bool = False) -> int:
    return len((text.lower() if lower else text).split())


def check_get_data(domain: AppDomain) -> None:
    assert_type(domain.get_data("anything"), Any)
    assert_type(domain.get_data("count", 0), int)
    assert_type(domain.get_data("names", ["ada"]), list[str])
    domain.get_data(42)  # type: ignore[call-overload]


def check_do_callback(domain: AppDomain) -> None:
    assert_type(domain.do_callback(count_words, "a b"), int)
    assert_type(domain.do_callback(count_words, "a b", lower=True), int)
    domain.do_callback(count_words, 42)  # type: ignore[arg-type]
    domain.do_callback(count_words, "a", upper=True)  # type: ignore[call-arg]


def check_dotnet_names(domain: AppDomain) -> None:
    assert_type(domain.GetData("count", 0), int)
    assert_type(domain.DoCallBack(count_words, "a b"), int)
