"""Benchmark appdomain._native._ext against the pure _interpreters.exec path.

    python bench/bench_native.py [--rounds N]

Prints medians over rounds; asserts nothing about time.  Targets (issue 7): <= 2 us per
call into a domain, <= 3 us per callback into main, <= 30 us per 1 MiB argument.
"""

from __future__ import annotations

import _interpreters
import argparse
import statistics
import sys
import threading
import time

import appdomain._native._ext as n

MAIN = int(_interpreters.get_main()[0])

DOMAIN_CODE = f"""
import time
import appdomain._native._ext as n

BIG = bytes(1 << 20)

def fn(parts):
    op = bytes(parts[0][:1])
    if op == b"e":                       # echo the rest
        return b"".join(bytes(p) for p in parts[1:])
    if op == b"l":                       # length of part 1 (read in place, no copy)
        return len(parts[1]).to_bytes(8, "little")
    if op == b"r":                       # a 1 MiB reply (copied once into the caller)
        return BIG
    if op == b"c":                       # k callbacks into main; report ns per callback
        k = int(bytes(parts[1]))
        arg = (b"ping", b"pong")
        t = time.perf_counter_ns()
        for _ in range(k):
            n.call({MAIN}, arg)
        return str((time.perf_counter_ns() - t) / k).encode()
    return b""

n.register_dispatcher(fn)
"""


def per_call_us(fn, k: int, rounds: int) -> float:
    """Median over rounds of the time per call of fn(), in microseconds."""
    samples = []
    for _ in range(rounds):
        t = time.perf_counter_ns()
        for _ in range(k):
            fn()
        samples.append((time.perf_counter_ns() - t) / k / 1000)
    return statistics.median(samples)


def in_thread(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    rounds = args.rounds

    iid = int(_interpreters.create("isolated"))
    err = _interpreters.exec(iid, DOMAIN_CODE)
    assert err is None, err
    n.register_dispatcher(lambda parts: b"")
    small = (b"e", b"hello")
    mib = bytes(1 << 20)
    call = n.call

    print(f"Python {sys.version.split()[0]}  (medians of {rounds} rounds)")

    def bench_call():
        return per_call_us(lambda: call(iid, small), 20000, rounds)

    print(f"call into a domain, 2 small parts     main thread   {bench_call():8.2f} us")
    print(f"call into a domain, 2 small parts     other thread  {in_thread(bench_call):8.2f} us")

    def bench_callback():
        samples = [float(call(iid, (b"c", b"20000"))) / 1000 for _ in range(rounds)]
        return statistics.median(samples)

    print(f"callback domain -> main (2 parts)     main thread   {bench_callback():8.2f} us")
    print(
        f"callback domain -> main (2 parts)     other thread  {in_thread(bench_callback):8.2f} us"
    )

    def bench_mib():
        return per_call_us(lambda: call(iid, (b"l", mib)), 2000, rounds)

    print(f"1 MiB argument (read in place)        main thread   {bench_mib():8.2f} us")

    def bench_mib_reply():
        return per_call_us(lambda: call(iid, (b"r",)), 500, rounds)

    print(f"1 MiB reply (one copy into caller)    main thread   {bench_mib_reply():8.2f} us")

    # Throughput: 1 thread vs 4 threads calling the same domain (one GIL in the domain).
    k = 20000

    def worker(barrier):
        barrier.wait()
        for _ in range(k):
            call(iid, small)

    def throughput(nthreads: int) -> float:
        rates = []
        for _ in range(max(3, rounds // 3)):
            barrier = threading.Barrier(nthreads + 1)
            ts = [threading.Thread(target=worker, args=(barrier,)) for _ in range(nthreads)]
            for t in ts:
                t.start()
            barrier.wait()
            t0 = time.perf_counter()
            for t in ts:
                t.join()
            rates.append(nthreads * k / (time.perf_counter() - t0))
        return statistics.median(rates)

    one, four = throughput(1), throughput(4)
    print(f"1 thread calling one domain           {one:12,.0f} calls/s")
    print(f"4 threads calling one domain          {four:12,.0f} calls/s  ({four / one:.2f}x)")

    # Reference: the pure path, _interpreters.exec(id, func) per call.
    def noop():
        pass

    def bench_exec():
        return per_call_us(lambda: _interpreters.exec(iid, noop), 2000, rounds)

    print(f"reference _interpreters.exec(id, fn)  main thread   {bench_exec():8.2f} us")
    print(f"reference _interpreters.exec(id, fn)  other thread  {in_thread(bench_exec):8.2f} us")

    n.release_interp(iid)
    _interpreters.destroy(iid)
    n.unregister_dispatcher()


if __name__ == "__main__":
    main()
