"""Objects the benchmarks create inside domains (importable there by module name)."""

from __future__ import annotations

from appdomain import MarshalByRefObject


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
