"""The remoting tests of tests/test_remoting.py, on a domain hosted by a Ray actor.

The route fixture (native or pure) is this process's; a Ray actor is another process that
never sees it, so these run once.  One local Ray instance serves the whole test session
(RayHost starts it on first use).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import host_setup, unload_quietly
from test_remoting import *  # noqa: F403 - the same tests, with this module's fixtures

from appdomain import AppDomain

pytestmark: list[pytest.MarkDecorator] = []


@pytest.fixture
def worker() -> Iterator[AppDomain]:
    domain = AppDomain.create_domain("RayWorker", host_setup("ray"))
    yield domain
    unload_quietly(domain)
