"""Measure what the plugin host costs: monitoring on the call path, and hot reload's delay.

Run: python bench/bench_plugin_host.py [--edits N] [--poll SECONDS]

1. Monitoring off vs on, on the call path: a proxy call (lean, through the C switch when
   built), the same on the pure route, and a do_callback op.  Off and on alternate round by
   round in one run (the machine is shared and noisy): medians of each, and their ratio.
2. first_chance_exception: what a raise costs in a domain with a handler subscribed, and
   what code that raises nothing pays (nothing: sys.monitoring's RAISE event is not
   instrumented into the bytecode).
3. Hot reload: from the write of a plugin file to the first call served by the new code
   (the caller calls in a loop until the answer changes), over --edits edits, beside the
   floor measured in the same run: creating a bare domain.  Target: <= 100 ms.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_helpers

from appdomain import AppDomain, PluginHost, _core


def per_call_us(fn: Callable[[], object], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number * 1e6


def off_vs_on(label: str, fn: Callable[[], object], rounds: int = 15, number: int = 2000) -> None:
    off: list[float] = []
    on: list[float] = []
    for _ in range(rounds):
        for enabled, samples in ((False, off), (True, on)):
            AppDomain.monitoring_is_enabled = enabled
            fn()  # warm: the first call after the switch re-registers the C handler
            samples.append(per_call_us(fn, number))
    AppDomain.monitoring_is_enabled = False
    m_off, m_on = statistics.median(off), statistics.median(on)
    print(
        f"  {label:<34} off {m_off:7.2f} us   on {m_on:7.2f} us   "
        f"on/off {m_on / m_off:5.2f}x   (+{m_on - m_off:.2f} us)"
    )


def bench_monitoring() -> None:
    print("monitoring on the call path (median of alternating rounds, per call):")
    domain = AppDomain.create_domain("bench-monitoring")
    try:
        worker = domain.create_instance_and_unwrap(bench_helpers.Worker)
        native = _core.native_module() is not None
        # Proxy methods keep the route they were bound with (the C switch when built).
        off_vs_on("proxy call worker.add(1, 2)", lambda: worker.add(1, 2))
        off_vs_on("do_callback, native route", lambda: domain.do_callback(abs, -1))
        _core.use_native_route(False)
        try:
            off_vs_on("do_callback, pure (fast) route", lambda: domain.do_callback(abs, -1))
        finally:
            _core.use_native_route(native)
    finally:
        AppDomain.unload(domain)


def bench_first_chance() -> None:
    print("first_chance_exception, inside a domain (median of alternating rounds):")
    domain = AppDomain.create_domain("bench-first-chance")
    try:
        for label, func in (
            ("raise + catch a ValueError", bench_helpers.raise_and_catch),
            ("a loop iteration, no raise", bench_helpers.no_raise),
        ):
            off: list[float] = []
            on: list[float] = []
            for _ in range(9):
                for subscribed, samples in ((False, off), (True, on)):
                    domain.do_callback(bench_helpers.watch_first_chances, subscribed)
                    samples.append(domain.do_callback(func, 20_000))
                domain.do_callback(bench_helpers.watch_first_chances, False)
            m_off, m_on = statistics.median(off), statistics.median(on)
            print(
                f"  {label:<34} off {m_off:7.3f} us   on {m_on:7.3f} us   "
                f"on/off {m_on / m_off:5.2f}x"
            )
    finally:
        AppDomain.unload(domain)


PLUGIN = "def version():\n    return {n}\n"


def bench_reload(edits: int, poll: float) -> None:
    print(f"hot reload, file write -> first call on the new code ({edits} edits, poll {poll}s):")
    floor = []
    for _ in range(5):
        start = time.perf_counter()
        AppDomain.unload(AppDomain.create_domain("bench-floor"))
        floor.append((time.perf_counter() - start) * 1e3)
    folder = Path(tempfile.mkdtemp(prefix="bench-plugins-"))
    waited: list[float] = []
    spun: list[float] = []
    try:
        (folder / "plugin.py").write_text(PLUGIN.format(n=0))
        (folder / "other.py").write_text("def ping():\n    return 'pong'\n")
        with PluginHost(folder, name="bench", poll_interval=poll) as host:
            ready = threading.Event()
            host.reloaded += lambda sender, args: ready.set()
            n = 0
            for _ in range(edits):
                # (a) the caller waits for the host's reloaded event, then calls.
                n += 1
                ready.clear()
                start = time.perf_counter()
                (folder / "plugin.py").write_text(PLUGIN.format(n=n))
                ready.wait(60)
                answer = host.invoke("plugin", "version")
                waited.append((time.perf_counter() - start) * 1e3)
                assert answer == n, (answer, n)
                settle(host, n)
                # (b) the caller calls in a loop until the answer changes: it competes with
                # the watcher thread for the host domain's GIL all along.
                n += 1
                start = time.perf_counter()
                (folder / "plugin.py").write_text(PLUGIN.format(n=n))
                while host.invoke("plugin", "version") != n:
                    pass
                spun.append((time.perf_counter() - start) * 1e3)
                settle(host, n)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for label, delays in (("waits for 'reloaded'", waited), ("calls in a busy loop", spun)):
        print(
            f"  caller {label:<22} median {statistics.median(delays):6.1f} ms   "
            f"min {min(delays):6.1f}   max {max(delays):6.1f}   (target <= 100 ms)"
        )
    print(f"  floor: create + unload a bare domain, median {statistics.median(floor):6.1f} ms")


def settle(host: PluginHost, n: int) -> None:
    """Wait until the host serves generation n + 1 and has unloaded the one before, then a
    random part of a poll interval: an edit comes at any moment of the watcher's cycle."""
    while host.generation != n + 1 or host._retired:
        time.sleep(0.005)  # a benchmark's pacing between edits, not a measurement
    time.sleep(random.uniform(0, host.poll_interval))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=15)
    parser.add_argument("--poll", type=float, default=0.025)
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, native switch: {_core.native_module() is not None}")
    bench_monitoring()
    bench_first_chance()
    bench_reload(args.edits, args.poll)


if __name__ == "__main__":
    main()
