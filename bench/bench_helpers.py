"""Objects the benchmarks create inside domains (importable there by module name)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from appdomain import MarshalByRefObject

ROUNDS = 7  # batches per measurement; the median batch is reported


def per_call(func: Callable[[], object], count: int, rounds: int = ROUNDS) -> float:
    """Median over rounds batches of seconds per func() call (run in the creating process)."""
    samples = []
    for _ in range(rounds):
        begun = time.perf_counter()
        for _ in range(count):
            func()
        samples.append((time.perf_counter() - begun) / count)
    return statistics.median(samples)


class Worker(MarshalByRefObject):
    def add(self, a: int, b: int) -> int:
        return a + b

    def size(self, data: bytes) -> int:
        return len(data)

    def blob(self, n: int) -> bytes:
        return b"x" * n

    def call_back(self, client: Client, value: int) -> int:
        return client.echo(value)

    def take(self, obj: object) -> None:
        """Receive a by-reference argument and drop it."""

    def give(self) -> Client:
        """Return a fresh by-reference object of this domain."""
        return Client()

    def keep(self, client: Client) -> None:
        self.kept = client

    def hit_kept(self, value: int) -> int:
        return self.kept.echo(value)

    def call_back_many(self, client: Client, count: int) -> int:
        total = 0
        for i in range(count):
            total += client.echo(i)
        return total

    def burn(self, n: int) -> int:
        total = 0
        for i in range(n):
            total += i * i % 7
        return total


class Client(MarshalByRefObject):
    def echo(self, value: int) -> int:
        return value


# -- first_chance_exception (bench_plugin_host) ---------------------------------------------

first_chances = 0


def _count_first_chance(sender: object, args: object) -> None:
    global first_chances
    first_chances += 1


def watch_first_chances(on: bool) -> None:
    from appdomain import AppDomain

    here = AppDomain.current_domain
    if on:
        here.first_chance_exception += _count_first_chance
    else:
        here.first_chance_exception -= _count_first_chance


def raise_and_catch(count: int) -> float:
    """Raise and catch count exceptions here; return the microseconds each took."""
    import time

    start = time.perf_counter()
    for _ in range(count):
        try:
            raise ValueError("x")
        except ValueError:
            pass
    return (time.perf_counter() - start) / count * 1e6


def no_raise(count: int) -> float:
    """Run count loop iterations that raise nothing; return the microseconds each took."""
    import time

    start = time.perf_counter()
    total = 0
    for i in range(count):
        total += i
    return (time.perf_counter() - start) / count * 1e6
