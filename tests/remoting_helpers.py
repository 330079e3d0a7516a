"""Classes the remoting tests create inside other domains (importable there by module name)."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

from appdomain import AppDomain, CallContext, Channel, Lease, MarshalByRefObject, Out, Ref, one_way


def domain_id() -> int:
    return AppDomain.current_domain.id


class Calculator(MarshalByRefObject):
    """A remote object with methods, fields, properties and protocols."""

    kind = "calculator"

    def __init__(self, start: int = 0) -> None:
        self.total = start
        self._items: dict[str, int] = {}
        self.log: list[str] = []
        self.lock = threading.Lock()

    def add(self, a: int, b: int) -> int:
        return a + b

    def digest(self, first: bytes, label: str, second: bytes) -> tuple[str, int, str, int]:
        """Name what arrived: lengths and a checksum of each buffer."""
        import zlib

        return (label, len(first) + len(second), f"{zlib.crc32(first):08x}", zlib.crc32(second))

    def repeat(self, chunk: bytes, times: int) -> bytes:
        return chunk * times

    def accumulate(self, value: int) -> int:
        with self.lock:
            self.total += value
            return self.total

    def read(self, buffer: Out[bytearray], offset: int, count: int) -> int:
        for i in range(count):
            buffer[offset + i] = ord("a") + i
        return count

    def bump(self, box: Ref[int]) -> None:
        box.value += 1

    @property
    def doubled(self) -> int:
        return self.total * 2

    def where(self) -> int:
        return AppDomain.current_domain.id

    def fail(self, message: str) -> None:
        raise KeyError(message)

    def fail_chained(self) -> None:
        try:
            raise ValueError("inner")
        except ValueError as inner:
            raise RuntimeError("outer") from inner

    def fail_unimportable(self) -> None:
        class LocalError(Exception):
            pass

        raise LocalError("only here")

    def myself(self) -> Calculator:
        return self

    def call_back(self, client: Client, value: int) -> tuple[int, int]:
        return client.twice(value)

    def identity(self, obj: object) -> object:
        return obj

    def is_proxy(self, obj: object) -> bool:
        import appdomain

        return appdomain.is_transparent_proxy(obj)

    def context_value(self, name: str) -> object:
        value = CallContext.logical_get_data(name)
        CallContext.logical_set_data(name, f"{value}-seen")
        return value

    @one_way
    def signal(self, channel: Channel, text: str) -> str:
        channel.send(text)
        return "not returned"

    @one_way
    def tell(self, client: Client, text: str) -> str:
        client.note(text)
        return "not returned"

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, key: str) -> int:
        return self._items[key]

    def __setitem__(self, key: str, value: int) -> None:
        self._items[key] = value

    def __delitem__(self, key: str) -> None:
        del self._items[key]

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(range(1000))

    def __call__(self, x: int) -> int:
        return x * 10

    def __enter__(self) -> Calculator:
        self.log.append("enter")
        return self

    def __exit__(self, *exc: object) -> None:
        self.log.append("exit")


class Client(MarshalByRefObject):
    """Lives in the caller's domain; the remote side calls back into it."""

    def __init__(self) -> None:
        self.notes: queue.SimpleQueue[str] = queue.SimpleQueue()

    def twice(self, value: int) -> tuple[int, int]:
        return (value * 2, AppDomain.current_domain.id)

    def note(self, text: str) -> None:
        self.notes.put(text)


class Relay(MarshalByRefObject):
    """Calls another remote object (A -> B -> A chains, third-domain proxies)."""

    def use(self, calc: Calculator, a: int, b: int) -> tuple[int, int]:
        return (calc.add(a, b), calc.where())

    def ping_pong(self, client: PingPong, depth: int) -> int:
        return client.pong(self, depth)


class PingPong(MarshalByRefObject):
    def pong(self, relay: Relay, depth: int) -> int:
        if depth == 0:
            return AppDomain.current_domain.id
        return relay.ping_pong(self, depth - 1)


class ShortLived(MarshalByRefObject):
    """Opts into a lease that has already run out when the first call comes."""

    def initialize_lifetime_service(self) -> Lease:
        return Lease(initial_lease_time=0.0)

    def hello(self) -> str:
        return "hello"


class Leased(MarshalByRefObject):
    """Opts into a lease that outlives any test (its exports are _table's, not the C switch's)."""

    def initialize_lifetime_service(self) -> Lease:
        return Lease(initial_lease_time=3600.0)

    def hello(self) -> str:
        return "hello"


class Keeper(MarshalByRefObject):
    """Holds proxies handed to it, drops them, hands them on."""

    def __init__(self) -> None:
        self.kept: Client | None = None

    def keep(self, client: Client) -> None:
        self.kept = client

    def touch(self, client: Client) -> None:
        """Receive a reference and let it go at once."""

    def drop(self) -> None:
        self.kept = None

    def kept_twice(self, value: int) -> tuple[int, int]:
        assert self.kept is not None
        return self.kept.twice(value)

    def echo(self, client: Client) -> Client:
        return client

    def hand_on(self, other: Keeper, client: Client) -> None:
        other.keep(client)

    def call_back(self, client: Client, value: int) -> tuple[int, int]:
        return client.twice(value)

    def same(self, first: Client, second: Client) -> bool:
        return first is second

    def keep_and_fail(self, client: Client) -> None:
        self.kept = client
        raise ValueError("kept, then failed")

    def make(self) -> Client:
        return Client()

    def make_leased(self) -> Leased:
        return Leased()

    def mine(self) -> Client:
        """Return the same object of this domain every time."""
        if not hasattr(self, "own"):
            self.own = Client()
        return self.own

    def take_from(self, maker: Maker, value: int) -> tuple[int, int]:
        """Keep an object the caller's maker returns (a call back into the caller)."""
        self.kept = maker.make()
        return self.kept.twice(value)

    def proxies_here(self) -> int:
        from appdomain._remoting import live_proxies

        return live_proxies()


class Maker(MarshalByRefObject):
    """Makes a new object of its domain per call."""

    def make(self) -> Client:
        return Client()


class Rendezvous(MarshalByRefObject):
    """Calls to meet() return only once `parties` of them wait at once (or time out)."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties)

    def meet(self, timeout: float) -> int:
        return self.barrier.wait(timeout)


class Gauge(MarshalByRefObject):
    """Counts the hold() calls inside it at once; they all return on release()."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.active = 0
        self.peak = 0
        self.released = False

    def hold(self, timeout: float) -> None:
        with self.cond:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.released, timeout)
            self.active -= 1

    def wait_active(self, count: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.active >= count, timeout)

    def release(self) -> None:
        with self.cond:
            self.released = True
            self.cond.notify_all()


@dataclass
class Point:
    x: int
    y: int


class NotCrossable:
    """Neither MarshalByRefObject nor serializable."""


def live_objects() -> int:
    from appdomain._remoting import live_count

    return live_count()


def use_made(keeper: Keeper, count: int) -> list[tuple[int, int]]:
    """Inside a domain: have keeper make count objects, and call each once."""
    return [keeper.make().twice(i) for i in range(count)]
