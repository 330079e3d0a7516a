"""Benchmark domains on other hosts beside their peers, measured in the same run (no asserts).

    python bench/bench_hosts.py            # process host vs multiprocessing.managers and RPyC
    python bench/bench_hosts.py --ray      # and Ray: RayHost vs a bare actor; a fan-out
    python bench/bench_hosts.py --ray-only # Ray alone

Targets: a process host's small call no slower than multiprocessing.managers'; a RayHost
call <= 1.5x a bare Ray actor call; a fan-out over 2 Ray hosts >= 1.7x one host on 2 cores.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))  # bench_helpers: the objects the hosts run

import bench_helpers  # noqa: E402
from bench_helpers import per_call  # noqa: E402

from appdomain import AppDomain, AppDomainSetup, ProcessHost  # noqa: E402

MIB = b"x" * (1 << 20)


def row(label: str, ours: float, peers: dict[str, float | None], unit: str = "us") -> None:
    scale = 1e6 if unit == "us" else 1e3
    cells = [f"{label:<34} appdomain {ours * scale:9.1f} {unit}"]
    for name, value in peers.items():
        if value is None:
            cells.append(f"{name} {'n/a':>9}")
        else:
            cells.append(f"{name} {value * scale:9.1f} {unit} ({ours / value:4.2f}x)")
    print("  ".join(cells), flush=True)


def interleaved(measures: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median of each measure, taken in turn round after round (the load hits all alike)."""
    samples: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            samples[name].append(measure())
    return {name: statistics.median(values) for name, values in samples.items()}


# -- the process host ------------------------------------------------------------------------

# label -> calls per batch; every peer's batches of a row alternate, so a shared machine's
# changing load falls on all of them alike.
ROWS = {"add(i, 2)": 300, "callback (call_back(cb, 3))": 100, "1 MiB argument": 30}


class Peer:
    """One way to reach a Worker in another process: its start-up time and its calls."""

    def __init__(
        self, first: float, calls: dict[str, Callable[[], object] | None], close: Callable[[], None]
    ) -> None:
        self.first = first
        self.calls = calls
        self.close = close


def _calls(worker: bench_helpers.Worker, callbacks: bool) -> dict[str, Callable[[], object] | None]:
    client = bench_helpers.Client()
    return {
        "add(i, 2)": lambda: worker.add(1, 2),
        "callback (call_back(cb, 3))": (lambda: worker.call_back(client, 3)) if callbacks else None,
        "1 MiB argument": lambda: worker.size(MIB),
    }


def start_process_host() -> Peer:
    begun = time.perf_counter()
    domain = AppDomain.create_domain("Bench", AppDomainSetup(host=ProcessHost()))
    worker: bench_helpers.Worker = domain.create_instance_and_unwrap("bench_helpers", "Worker")
    worker.add(1, 2)
    return Peer(time.perf_counter() - begun, _calls(worker, True), lambda: AppDomain.unload(domain))


class _Manager(BaseManager):
    pass


_Manager.register("Worker", bench_helpers.Worker)


def start_manager() -> Peer:
    begun = time.perf_counter()
    manager = _Manager(ctx=multiprocessing.get_context("spawn"))
    manager.start()
    worker = manager.Worker()  # type: ignore[attr-defined]
    worker.add(1, 2)
    # a manager's proxies call one way only: no callbacks
    return Peer(time.perf_counter() - begun, _calls(worker, False), manager.shutdown)


RPYC_SERVER = """
import sys
sys.path.insert(0, {bench!r})
import rpyc
from rpyc.utils.server import ThreadedServer
import bench_helpers

class Service(rpyc.Service):
    def exposed_worker(self):
        return bench_helpers.Worker()

server = ThreadedServer(Service, hostname="127.0.0.1", port=0,
                        protocol_config={{"allow_all_attrs": True, "allow_public_attrs": True}})
print(server.port, flush=True)
server.start()
"""


def start_rpyc() -> Peer | None:
    try:
        import rpyc
    except ImportError:
        return None
    begun = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-c", RPYC_SERVER.format(bench=str(ROOT))],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,  # not a checkout's root, whose appdomain/ folder lacks appdomain.marshal
    )
    assert server.stdout is not None
    port = int(server.stdout.readline())
    config = {"allow_all_attrs": True, "allow_public_attrs": True}
    deadline = time.monotonic() + 30
    while True:  # the server prints its port before it listens
        try:
            conn = rpyc.connect("127.0.0.1", port, config=config)
            break
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                server.kill()
                raise
            time.sleep(0.01)
    worker = conn.root.worker()
    worker.add(1, 2)

    def close() -> None:
        conn.close()
        server.kill()
        server.wait()

    return Peer(time.perf_counter() - begun, _calls(worker, True), close)


def measure_process_host() -> None:
    """Print each row: the process host beside managers and RPyC, batches interleaved."""
    peers = {"appdomain": start_process_host()}
    try:
        peers["managers"] = start_manager()
        rpyc_peer = start_rpyc()
        if rpyc_peer is not None:
            peers["RPyC"] = rpyc_peer
        row(
            "process host: create + first call",
            peers["appdomain"].first,
            {name: peer.first for name, peer in peers.items() if name != "appdomain"},
            "ms",
        )
        for label, count in ROWS.items():
            measures = {
                name: functools.partial(per_call, call, count, rounds=1)
                for name, peer in peers.items()
                if (call := peer.calls[label]) is not None
            }
            figures = interleaved(measures, bench_helpers.ROUNDS)
            ours = figures.pop("appdomain")
            others = {name: figures.get(name) for name in peers if name != "appdomain"}
            row(f"process host: {label}", ours, others)
    finally:
        for peer in peers.values():
            peer.close()


# -- Ray ---------------------------------------------------------------------------------------


class BareWorker:
    """The peer: a plain Ray actor (defined here, so Ray ships it by value to its workers)."""

    def add(self, a: int, b: int) -> int:
        return a + b

    def burn(self, n: int) -> int:  # bench_helpers.Worker.burn's loop
        total = 0
        for i in range(n):
            total += i * i % 7
        return total


# The fan-out's job: pure-Python work in chunks of ~0.1 s each here, large enough that the
# calls' own cost is small beside it (a bare 2-actor fan-out then scales close to 2x).
FAN_WORK, FAN_CHUNKS = 12_000_000, 8
ROUNDS = 7


def measure_ray() -> None:
    import ray

    from appdomain import RayHost

    begun = time.perf_counter()
    domain = AppDomain.create_domain("RayBench", AppDomainSetup(host=RayHost()))
    worker: bench_helpers.Worker = domain.create_instance_and_unwrap("bench_helpers", "Worker")
    worker.add(1, 2)
    first = time.perf_counter() - begun
    bare_class = ray.remote(BareWorker).options(num_cpus=0)
    bare = bare_class.remote()
    ray.get(bare.add.remote(1, 2))
    client = bench_helpers.Client()
    small = interleaved(
        {
            "ours": lambda: per_call(lambda: worker.add(1, 2), 100, 1),
            "bare": lambda: per_call(lambda: ray.get(bare.add.remote(1, 2)), 100, 1),
            "callback": lambda: per_call(lambda: worker.call_back(client, 3), 30, 1),
        },
        ROUNDS,
    )
    row("create + first call (incl. ray.init)", first, {}, "ms")
    row("add(i, 2)", small["ours"], {"bare Ray actor": small["bare"]}, "ms")
    row("callback (call_back(cb, 3))", small["callback"], {}, "ms")

    # A fan-out: the same work split over one host or two, and over one bare actor or two.
    second = AppDomain.create_domain("RayBench2", AppDomainSetup(host=RayHost()))
    other: bench_helpers.Worker = second.create_instance_and_unwrap("bench_helpers", "Worker")
    other.burn(10)
    bare_other = bare_class.remote()
    ray.get(bare_other.burn.remote(10))
    chunk = FAN_WORK // FAN_CHUNKS
    # The driver's CPU time per fan-out: what its own threads take from the actors' cores
    # (a thread that busy-waits would show here).
    driver_cpu: dict[int, list[float]] = {1: [], 2: []}

    def ours(workers: list[bench_helpers.Worker]) -> float:
        begun, cpu = time.perf_counter(), time.process_time()
        futures = [
            workers[i % len(workers)].burn.begin_invoke(chunk)  # type: ignore[attr-defined]
            for i in range(FAN_CHUNKS)
        ]
        for future in futures:
            future.result()
        driver_cpu[len(workers)].append(time.process_time() - cpu)
        return time.perf_counter() - begun

    def peer(actors: list[Any]) -> float:
        begun = time.perf_counter()
        ray.get([actors[i % len(actors)].burn.remote(chunk) for i in range(FAN_CHUNKS)])
        return time.perf_counter() - begun

    fan = interleaved(
        {
            "ours 1": lambda: ours([worker]),
            "ours 2": lambda: ours([worker, other]),
            "bare 1": lambda: peer([bare]),
            "bare 2": lambda: peer([bare, bare_other]),
        },
        ROUNDS,
    )
    for who, one, two in (
        ("appdomain", fan["ours 1"], fan["ours 2"]),
        ("bare Ray actors", fan["bare 1"], fan["bare 2"]),
    ):
        print(
            f"{'fan-out over 2 Ray hosts':<34} {who:<15} 1: {one * 1e3:7.1f} ms"
            f"  2: {two * 1e3:7.1f} ms  speed-up {one / two:4.2f}x",
            flush=True,
        )
    print(
        f"{'':<34} target >= 1.7x on {os.cpu_count()} cores, beside the bare actors' speed-up"
        f" in this run; driver CPU per fan-out {statistics.median(driver_cpu[1]) * 1e3:.1f} ms"
        f" (1 host), {statistics.median(driver_cpu[2]) * 1e3:.1f} ms (2 hosts)",
        flush=True,
    )
    ray.kill(bare)
    ray.kill(bare_other)
    AppDomain.unload(second)
    AppDomain.unload(domain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ray", action="store_true", help="also measure RayHost")
    parser.add_argument("--ray-only", action="store_true", help="measure RayHost only")
    options = parser.parse_args()
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} cores; medians of batches that "
        "alternate between the peers",
        flush=True,
    )
    if options.ray_only:
        measure_ray()
        return
    measure_process_host()
    if options.ray:
        measure_ray()


if __name__ == "__main__":
    main()
