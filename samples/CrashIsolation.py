"""A plugin that crashes its process, run in a process host: the program carries on.

The plugin's ``parse`` dereferences a null pointer (``ctypes.string_at(0)``) on one bad
input, as a buggy C extension might.  In a subinterpreter that would take the whole
process down; in a domain on a ``ProcessHost`` only the host's process dies.  The call
raises ``AppDomainUnloadedException`` naming the signal, ``host_exited`` reports it, and
the program starts a fresh host and goes on with the remaining inputs.
"""

from __future__ import annotations

import os
import threading

from appdomain import (
    AppDomain,
    AppDomainSetup,
    AppDomainUnloadedException,
    HostExitedEventArgs,
    MarshalByRefObject,
    ProcessHost,
)


class Parser(MarshalByRefObject):
    """The plugin: parses numbers, and crashes its process on the input "crash"."""

    def parse(self, text: str) -> int:
        if text == "crash":
            import ctypes

            ctypes.string_at(0)  # a segfault, as a buggy C extension would have
        return int(text)

    def process_id(self) -> int:
        return os.getpid()


def start() -> tuple[AppDomain, Parser, threading.Event]:
    """Start a plugin domain in a child process; return it, its plugin, its exit flag."""
    domain = AppDomain.create_domain("Plugin", AppDomainSetup(host=ProcessHost()))
    exited = threading.Event()

    def on_exit(sender: AppDomain, args: HostExitedEventArgs) -> None:
        print(f"host_exited: signal {args.signal}, exit code {args.exit_code}", flush=True)
        exited.set()

    domain.host_exited += on_exit
    parser: Parser = domain.create_instance_and_unwrap(Parser)
    print(f"plugin started in process {parser.process_id()} (this is {os.getpid()})", flush=True)
    return domain, parser, exited


def main() -> int:
    domain, parser, exited = start()
    total = 0
    for text in ["1", "2", "crash", "3", "4"]:
        try:
            total += parser.parse(text)
            print(f"parsed {text!r}; total {total}", flush=True)
        except AppDomainUnloadedException as exc:
            print(f"the plugin crashed on {text!r}: {str(exc).splitlines()[0]}", flush=True)
            exited.wait(10)
            domain, parser, exited = start()  # a fresh host; the program goes on
    print(f"done: total {total}, default domain {AppDomain.current_domain.id} unharmed")
    AppDomain.unload(domain)
    return 0 if total == 10 else 1


if __name__ == "__main__":  # the host re-imports this file: keep the program under this guard
    raise SystemExit(main())
