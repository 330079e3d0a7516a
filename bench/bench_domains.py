"""Benchmark domains, the call path and channels; print medians (no asserts).

    python bench/bench_domains.py                 # native switch when built
    APPDOMAIN_PURE=1 python bench/bench_domains.py  # pure-Python call path

Targets (median): create <= 12 ms, create + first instance + first call <= 20 ms,
unload <= 10 ms, same-thread call <= 15 us,
dispatcher call / callback into the default domain <= 60 us, channel round trip <= 60 us.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # domain_helpers: functions the domains run

import domain_helpers as helpers  # noqa: E402
from bench_helpers import ROUNDS, per_call  # noqa: E402

from appdomain import AppDomain, Channel, _core  # noqa: E402

# -- run inside domains (importable from this script through the __main__ alias) ------------


def time_callbacks(recorder: Any, count: int) -> float:
    """Inside a domain: call a default-domain object count times; return seconds per call."""
    begun = time.perf_counter()
    for i in range(count):
        recorder.record(i)
    return (time.perf_counter() - begun) / count


def time_round_trips(requests: Channel, replies: Channel, count: int) -> float:
    """Inside a domain: ping an echo server in another domain; return seconds per round trip."""
    requests.send(-1)
    replies.recv()
    begun = time.perf_counter()
    for i in range(count):
        requests.send(i)
        replies.recv()
    return (time.perf_counter() - begun) / count


class Sink(helpers.Recorder):
    """A Recorder that keeps nothing (so long runs do not grow a list)."""

    def record(self, value: Any) -> int:
        return 1


# -- measurements ------------------------------------------------------------------------


def bench_create_unload(cycles: int = 40) -> tuple[float, float, float]:
    """Median create_domain and unload (wall clock), and create_domain's CPU time."""
    for i in range(3):  # warm-up: imports, the default domain's dispatcher
        AppDomain.unload(AppDomain.create_domain(f"Warm{i}"))
    creates, cpus, unloads = [], [], []
    for i in range(cycles):
        cpu = time.thread_time()
        begun = time.perf_counter()
        d = AppDomain.create_domain(f"Bench{i}")
        creates.append(time.perf_counter() - begun)
        cpus.append(time.thread_time() - cpu)
        d.do_callback(helpers.noop)
        begun = time.perf_counter()
        AppDomain.unload(d)
        unloads.append(time.perf_counter() - begun)
    return statistics.median(creates), statistics.median(unloads), statistics.median(cpus)


def bench_bare_create(cycles: int = 40) -> tuple[float, float]:
    """The floor: CPython's own create + destroy of an isolated interpreter (no appdomain).

    Median wall clock and CPU time of the create.
    """
    from appdomain._core import _compat

    creates, cpus = [], []
    for _ in range(cycles):
        cpu = time.thread_time()
        begun = time.perf_counter()
        interp = _compat.create_interp()
        creates.append(time.perf_counter() - begun)
        cpus.append(time.thread_time() - cpu)
        _compat.destroy_interp(interp)
    return statistics.median(creates), statistics.median(cpus)


# The finder module setuptools writes for a package installed in its default editable mode
# imports these (its template, setuptools.command.editable_wheel._FINDER_TEMPLATE); used
# when no setuptools is at hand to write the real one.
_STAND_IN_FINDER = """\
import sys
from importlib.machinery import ModuleSpec
from importlib.util import spec_from_file_location
from itertools import chain
from pathlib import Path

MAPPING = {mapping!r}
NAMESPACES = {{}}


class _EditableFinder:
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        for pkg, pkg_path in MAPPING.items():
            if fullname == pkg:
                return spec_from_file_location(fullname, Path(pkg_path, "__init__.py"))
        return None


def install():
    if not any(finder == _EditableFinder for finder in sys.meta_path):
        sys.meta_path.append(_EditableFinder)
"""


def _finder_source(name: str, mapping: dict[str, str]) -> str:
    """The finder module setuptools would write (its own template when it can be found)."""
    code = (
        "import sys\n"
        "from setuptools.command.editable_wheel import _finder_template\n"
        f"sys.stdout.write(_finder_template({name!r}, {mapping!r}, {{}}))\n"
    )
    for python in (sys.executable, "python3"):
        try:
            done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        except OSError:
            continue
        if done.returncode == 0 and "MAPPING" in done.stdout:
            return done.stdout
    return _STAND_IN_FINDER.format(mapping=mapping)


def editable_venv_rows() -> list[str]:
    """Domain start in a throw-away venv that also holds a package installed editable.

    The venv sees this run's packages through a plain path .pth; the other package is laid
    out as setuptools' default editable mode does (a finder module, compiled as pip does,
    and a .pth line that imports it and installs it in every new interpreter's site).
    """
    import compileall
    import tempfile

    import appdomain

    with tempfile.TemporaryDirectory(prefix="appdomain-editable-") as tmp:
        venv = Path(tmp, "venv")
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
        (site,) = venv.glob("lib/python*/site-packages")
        ours = {str(Path(appdomain.__file__).parents[1])}  # links: not resolved
        ours.update(p for p in sys.path if p.endswith("site-packages") or "__editable__" in p)
        (site / "zz_this_run.pth").write_text("\n".join(sorted(ours)) + "\n")
        package = Path(tmp, "src", "demo_editable")
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("VALUE = 1\n")
        finder = "__editable___demo_editable_0_1_finder"
        source = _finder_source(finder, {"demo_editable": str(package)})
        (site / f"{finder}.py").write_text(source)
        compileall.compile_file(str(site / f"{finder}.py"), quiet=1)
        (site / "__editable__.demo_editable-0.1.pth").write_text(
            f"import {finder}; {finder}.install()\n"
        )
        done = subprocess.run(
            [str(venv / "bin" / "python"), __file__, "--start-only"],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
    if done.returncode != 0:
        return [f"  (editable venv run failed: {done.stderr.strip()[-300:]})"]
    return done.stdout.splitlines()


# The user module of the first-call rows: it imports nothing but appdomain, as a user's
# module that only holds a MarshalByRefObject would (bench_helpers imports statistics,
# ~5-10 ms in every new domain, which is not appdomain's cost).
_START_WORKER = """\
from appdomain import MarshalByRefObject


class Worker(MarshalByRefObject):
    def add(self, a, b):
        return a + b
"""


def bench_first_call(folder: str, cycles: int = 20, cached: bool = True) -> float:
    """create_domain + first create_instance_and_unwrap + first proxy call, together.

    cached: the user module has its compiled file, as on a user's machine where Python
    writes them; else each cycle imports a module of its own that has none (its first run).
    """
    import py_compile

    times = []
    for i in range(cycles):
        module = "start_worker" if cached else f"start_worker_fresh_{i}"
        path = os.path.join(folder, module + ".py")
        if not os.path.exists(path):
            with open(path, "w", encoding="utf-8") as file:
                file.write(_START_WORKER)
            if cached:  # even under PYTHONDONTWRITEBYTECODE, as Python would have written it
                py_compile.compile(path, doraise=True)
        begun = time.perf_counter()
        d = AppDomain.create_domain(f"First{i}")
        calc = d.create_instance_and_unwrap(module, "Worker")
        calc.add(1, 2)
        times.append(time.perf_counter() - begun)
        del calc
        AppDomain.unload(d)
    return statistics.median(times)


def bench_same_thread(d: AppDomain) -> tuple[float, float]:
    noop = helpers.noop
    callback = per_call(lambda: d.do_callback(noop), 2000)
    calc = d.create_instance_and_unwrap("bench_helpers", "Worker")  # its imports: not timed
    calc.add(1, 2)
    counter = iter(range(10**9))
    proxy = per_call(lambda: calc.add(next(counter), 2), 2000)
    return callback, proxy


def _hold(d: AppDomain, func: Any, *args: Any) -> None:
    try:
        d.do_callback(func, *args)
    except Exception:  # the hold ends when its channel is closed
        pass


def bench_dispatcher(d: AppDomain, spin: bool = False) -> float:
    """A call into d while another thread is inside d in a long call.

    spin=False: that call waits in Channel.recv (GIL released): the latency of the route
    itself.  spin=True: it spins in Python, so every call also waits for d's GIL.
    """
    started, stop = Channel(), Channel()
    if spin:
        args: tuple[Any, ...] = (helpers.busy_until_closed, started, stop)
    else:
        args = (helpers.signal_then_block, started, stop)
    busy = threading.Thread(target=_hold, args=(d, *args), daemon=True)
    busy.start()
    started.recv(timeout=30)
    try:
        noop = helpers.noop
        return per_call(lambda: d.do_callback(noop), 50 if spin else 500)
    finally:
        stop.close()
        busy.join(30)


def bench_callback_into_default(d: AppDomain) -> float:
    sink = Sink()
    samples = [d.do_callback(time_callbacks, sink, 500) for _ in range(ROUNDS)]
    return statistics.median(samples)


def bench_channel_round_trip(server: AppDomain, client: AppDomain) -> float:
    requests, replies = Channel(), Channel()
    server.do_callback(helpers.start_echo_server, requests, replies)
    try:
        samples = [
            client.do_callback(time_round_trips, requests, replies, 1000) for _ in range(ROUNDS)
        ]
    finally:
        requests.close()
    return statistics.median(samples)


def show(label: str, seconds: float, target: float | None, unit: str) -> None:
    scale = {"ms": 1e3, "us": 1e6}[unit]
    if target is None:
        note = "(no target)"
    else:
        verdict = "ok" if seconds <= target else "OVER"
        note = f"(target <= {target * scale:g} {unit}, {verdict})"
    print(f"  {label:<46} {seconds * scale:9.2f} {unit}   {note}")


def start_rows() -> None:
    """Print domain start beside the bare floor, all measured in this run."""
    import tempfile

    create, unload, create_cpu = bench_create_unload()
    bare, bare_cpu = bench_bare_create()
    with tempfile.TemporaryDirectory(prefix="appdomain-start-") as folder:
        sys.path.insert(0, folder)  # the domains inherit it
        try:
            first = bench_first_call(folder)
            fresh = bench_first_call(folder, cached=False)
        finally:
            sys.path.remove(folder)
    show("bare _interpreters.create() (the floor)", bare, None, "ms")
    show("create_domain", create, 12e-3, "ms")
    print(f"  {'':<46} {create / bare:9.2f} x the floor")
    # A domain boots on the creating thread: its CPU time there is the boot's work, which
    # other processes' load on a shared machine disturbs less than the wall clock.
    print(
        f"  {'  CPU time: create_domain / bare':<46} {create_cpu * 1e3:6.2f} / {bare_cpu * 1e3:.2f}"
        f" ms = {create_cpu / bare_cpu:.2f} x"
    )
    show("create + first instance + first call", first, 20e-3, "ms")
    show("  the same, user module without its .pyc", fresh, None, "ms")
    show("unload", unload, 10e-3, "ms")


def main() -> None:
    native = _core.native_module() is not None
    mode = "native" if native else "pure"
    pure = os.environ.get("APPDOMAIN_PURE", "")
    print(f"appdomain bench_domains  mode={mode}  APPDOMAIN_PURE={pure!r}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    start_rows()
    print("  with a package installed in setuptools' default editable mode (throw-away venv):")
    for line in editable_venv_rows():
        print("  " + line)

    d = AppDomain.create_domain("BenchCalls")
    try:
        callback, proxy = bench_same_thread(d)
        show("same-thread do_callback(noop)", callback, 15e-6, "us")
        show("same-thread proxy calc.add(i, 2)", proxy, 15e-6, "us")
        show("call while another thread waits inside", bench_dispatcher(d), 60e-6, "us")
        show(
            "call while another thread spins inside (GIL)",
            # Informational: a thread running pure Python in the domain keeps its GIL for
            # the switch interval (5 ms), so no call can get in sooner, on any route.
            bench_dispatcher(d, spin=True),
            None,
            "us",
        )
        show("callback into the default domain", bench_callback_into_default(d), 60e-6, "us")
    finally:
        AppDomain.unload(d)

    server = AppDomain.create_domain("BenchServer")
    client = AppDomain.create_domain("BenchClient")
    try:
        show(
            "channel round trip between two domains",
            bench_channel_round_trip(server, client),
            60e-6,
            "us",
        )
    finally:
        AppDomain.unload(client)
        AppDomain.unload(server)


if __name__ == "__main__":
    if sys.argv[1:] == ["--start-only"]:
        start_rows()
    else:
        main()
