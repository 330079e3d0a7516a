"""A plugin host with two plugins: one is edited while the host runs and reloads, unrestarted.

The plugins live in a folder of their own.  ``PluginHost`` loads them into a domain that
imports shadow copies of them, so their files stay free to change.  The sample then edits
one plugin's file: the host sees the change, loads the folder into a new domain, moves new
calls there and unloads the old domain once its calls have finished.  Monitoring is on, so
the sample ends with a ``statistics()`` snapshot of the domain that served.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

from appdomain import AppDomain, PluginEventArgs, PluginHost

GREETER = '''\
"""Plugin 1: says hello."""


def greet(name):
    return f"hello, {name}"
'''

GREETER_EDITED = '''\
"""Plugin 1, edited while the host runs: says hello louder."""


def greet(name):
    return f"HELLO, {name.upper()}!"
'''

CALC = '''\
"""Plugin 2: adds up."""


def total(*numbers):
    return sum(numbers)
'''

WAIT = 60.0  # seconds: a bound for a slow machine


def main() -> int:
    AppDomain.monitoring_is_enabled = True
    folder = Path(tempfile.mkdtemp(prefix="appdomain-plugins-"))
    try:
        (folder / "greeter.py").write_text(GREETER)
        (folder / "calc.py").write_text(CALC)
        reloaded, unloaded = threading.Event(), threading.Event()

        def on_reloaded(host: PluginHost, args: PluginEventArgs) -> None:
            changed = ", ".join(args.files)
            print(f"reloaded: generation {args.generation} in {args.domain!r} ({changed} changed)")
            reloaded.set()

        def on_unloaded(host: PluginHost, args: PluginEventArgs) -> None:
            print(f"unloaded: generation {args.generation}, {args.domain!r}")
            unloaded.set()

        with PluginHost(folder, name="sample", poll_interval=0.02) as host:
            host.reloaded += on_reloaded
            host.unloaded += on_unloaded
            first = host.domain
            print(f"plugins {', '.join(host.plugins)} loaded in {first!r}")
            for info in first.get_assemblies():
                if info.name in host.plugins:
                    print(f"  assembly {info.name} from {info.file}")
            print(f"greeter.greet('world') -> {host['greeter'].greet('world')!r}")
            print(f"calc.total(1, 2, 3)     -> {host['calc'].total(1, 2, 3)!r}")

            print("editing greeter.py while the host runs...")
            (folder / "greeter.py").write_text(GREETER_EDITED)
            if not (reloaded.wait(WAIT) and unloaded.wait(WAIT)):
                print("the host did not reload in time")
                return 1
            print(f"greeter.greet('world') -> {host['greeter'].greet('world')!r}")
            print(f"calc.total(1, 2, 3)     -> {host['calc'].total(1, 2, 3)!r}")
            print(f"now serving: generation {host.generation} in {host.domain!r}")
            print(host.domain.statistics())
        print("host closed: every plugin domain unloaded")
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
