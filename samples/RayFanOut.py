"""Fan a job out over domains on Ray hosts, with a progress bar fed by callbacks.

Each of ``--workers`` domains runs on a Ray actor (a local Ray instance unless
``--address`` names a cluster).  The driver splits a job (counting the primes below
``--limit``) into chunks, hands each domain its share with ``begin_invoke``, and passes every
call a ``Progress`` object of its own: a ``MarshalByRefObject``, so it crosses by reference
and each worker's ``progress.advance(...)`` calls back into the driver, which draws the bar.
Needs Ray: ``pip install appdomain[ray]``.
"""

from __future__ import annotations

import argparse
import sys
import threading

from appdomain import AppDomain, AppDomainSetup, MarshalByRefObject, RayHost


class Progress(MarshalByRefObject):
    """Lives in the driver; the workers report to it, and it draws the bar."""

    total: int
    done: int
    lock: threading.Lock

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.lock = threading.Lock()

    def advance(self, count: int) -> None:
        with self.lock:
            self.done += count
            filled = 30 * self.done // self.total
            bar = "#" * filled + "." * (30 - filled)
            end = "\n" if self.done >= self.total else ""
            print(f"\r[{bar}] {self.done}/{self.total} numbers", end=end, flush=True)


class PrimeCounter(MarshalByRefObject):
    """Runs in a domain on a Ray actor: counts primes in a range, reporting as it goes."""

    def count(self, start: int, stop: int, progress: Progress) -> int:
        found = 0
        step = max(1, (stop - start) // 4)
        for low in range(start, stop, step):
            high = min(stop, low + step)
            found += sum(1 for n in range(low, high) if _is_prime(n))
            progress.advance(high - low)
        return found


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="domains on Ray hosts (2)")
    parser.add_argument("--limit", type=int, default=60_000, help="count primes below (60000)")
    parser.add_argument("--address", default=None, help="a Ray cluster (default: local Ray)")
    options = parser.parse_args(argv)
    if options.workers < 1:
        parser.error(f"--workers must be >= 1 (got {options.workers})")
    host = RayHost(address=options.address)
    domains = [
        AppDomain.create_domain(f"Worker{i}", AppDomainSetup(host=host))
        for i in range(options.workers)
    ]
    try:
        counters: list[PrimeCounter] = [d.create_instance_and_unwrap(PrimeCounter) for d in domains]
        print(f"{len(domains)} domains on Ray actors: processes {[d.process_id for d in domains]}")
        progress = Progress(options.limit)
        chunk = -(-options.limit // len(counters))
        futures = [
            counter.count.begin_invoke(i * chunk, min(options.limit, (i + 1) * chunk), progress)  # type: ignore[attr-defined]
            for i, counter in enumerate(counters)
        ]
        primes = sum(future.result() for future in futures)
        print(f"{primes} primes below {options.limit}")
    finally:
        for domain in domains:
            AppDomain.unload(domain)
    return 0


if __name__ == "__main__":
    sys.exit(main())
