"""Benchmark domains on other hosts beside their peers, measured in the same run (no asserts).

    python bench/bench_hosts.py            # process host vs multiprocessing.managers and RPyC
    python bench/bench_hosts.py --ray      # and Ray: RayHost vs a bare actor; a fan-out

Targets: a process host's small call no slower than multiprocessing.managers'; a RayHost
call <= 1.5x a bare Ray actor call; a fan-out over 2 Ray hosts >= 1.7x one host on 2 cores.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.managers import BaseManager
from pathlib import Path

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
            samples: dict[str, list[float]] = {name: [] for name in peers}
            for _ in range(bench_helpers.ROUNDS):
                for name, peer in peers.items():
                    call = peer.calls[label]
                    if call is not None:
                        samples[name].append(per_call(call, count, rounds=1))
            figures = {n: statistics.median(v) if v else None for n, v in samples.items()}
            ours = figures.pop("appdomain")
            assert ours is not None
            row(f"process host: {label}", ours, figures)
    finally:
        for peer in peers.values():
            peer.close()


# -- Ray ---------------------------------------------------------------------------------------


class BareWorker:
    """The peer: a plain Ray actor (defined here, so Ray ships it by value to its workers)."""

    def add(self, a: int, b: int) -> int:
        return a + b


def measure_ray() -> None:
    import ray

    from appdomain import RayHost

    begun = time.perf_counter()
    domain = AppDomain.create_domain("RayBench", AppDomainSetup(host=RayHost()))
    worker: bench_helpers.Worker = domain.create_instance_and_unwrap("bench_helpers", "Worker")
    worker.add(1, 2)
    first = time.perf_counter() - begun
    bare = ray.remote(BareWorker).options(num_cpus=0).remote()
    ray.get(bare.add.remote(1, 2))
    bare_call = per_call(lambda: ray.get(bare.add.remote(1, 2)), 100)
    ours = per_call(lambda: worker.add(1, 2), 100)
    row("create + first call (incl. ray.init)", first, {}, "ms")
    row("add(i, 2)", ours, {"bare Ray actor": bare_call}, "ms")

    # A fan-out: the same pure-Python work split over one host or over two.
    work, chunks = 1_500_000, 8
    second = AppDomain.create_domain("RayBench2", AppDomainSetup(host=RayHost()))
    other: bench_helpers.Worker = second.create_instance_and_unwrap("bench_helpers", "Worker")
    other.burn(10)

    def run(workers: list[bench_helpers.Worker]) -> float:
        begun = time.perf_counter()
        futures = [
            workers[i % len(workers)].burn.begin_invoke(work // chunks)  # type: ignore[attr-defined]
            for i in range(chunks)
        ]
        for future in futures:
            future.result()
        return time.perf_counter() - begun

    one = statistics.median(run([worker]) for _ in range(3))
    two = statistics.median(run([worker, other]) for _ in range(3))
    print(
        f"{'fan-out over 2 Ray hosts':<34} 1 host {one * 1e3:7.1f} ms  2 hosts {two * 1e3:7.1f} ms"
        f"  speed-up {one / two:4.2f}x (target >= 1.7x on {os.cpu_count()} cores)",
        flush=True,
    )
    AppDomain.unload(second)
    AppDomain.unload(domain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ray", action="store_true", help="also measure RayHost")
    options = parser.parse_args()
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} cores; medians of batches that "
        "alternate between the peers",
        flush=True,
    )
    measure_process_host()
    if options.ray:
        measure_ray()


if __name__ == "__main__":
    main()
