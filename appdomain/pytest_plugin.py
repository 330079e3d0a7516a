"""Give pytest users fresh AppDomains: the ``appdomain`` and ``appdomain_factory`` fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ._domain import AppDomain, AppDomainSetup
from ._errors import AppDomainUnloadedException, CannotUnloadAppDomainException

__all__ = ["appdomain", "appdomain_factory"]


def _unload_all(domains: list[AppDomain]) -> list[str]:
    problems = []
    for domain in domains:
        try:
            AppDomain.unload(domain)
        except AppDomainUnloadedException:
            pass  # the test unloaded it itself
        except CannotUnloadAppDomainException as exc:
            problems.append(str(exc))
    return problems


@pytest.fixture
def appdomain_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., AppDomain]]:
    """Return create(name=None, setup=None) -> AppDomain; every domain is unloaded after the test."""
    created: list[AppDomain] = []

    def create(name: str | None = None, setup: AppDomainSetup | None = None) -> AppDomain:
        domain = AppDomain.create_domain(name or f"{request.node.name}-{len(created) + 1}", setup)
        created.append(domain)
        return domain

    yield create
    problems = _unload_all(created)
    if problems:
        pytest.fail("appdomain: " + "; ".join(problems), pytrace=False)


@pytest.fixture
def appdomain(appdomain_factory: Callable[..., Any]) -> AppDomain:
    """A fresh domain named after the test, unloaded after it."""
    domain: AppDomain = appdomain_factory()
    return domain
