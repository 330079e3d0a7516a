"""End the process cleanly with domains still loaded: wait for their threads, then unload them.

Python waits at exit for the main interpreter's non-daemon threads, and .NET for foreground
threads; a domain's threads are all non-daemon (subinterpreters refuse daemon threads), so
at exit each domain first runs its ``threading`` exit callbacks (``concurrent.futures``
shuts its executors down there) and waits for its threads, all of them within
``AppDomain.exit_timeout`` seconds.  Each domain is then unloaded.  A domain that cannot
be unloaded cannot be finalized either (finalizing it would wait for its threads forever):
then the process reports what still runs and ends at once with ``os._exit``, with the
program's exit status when it is known (``AppDomain.exit_code``, which the pytest plugin
sets to the session's), else 1.

Every domain imports this with AppDomain (for ``env_exit_timeout``); only the default domain
runs ``finish``, at exit.
"""

from __future__ import annotations

import functools
import os
import sys
import time

from .._core import _compat
from .._errors import AppDomainUnloadedException, CannotUnloadAppDomainException
from . import _runtime

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["DEFAULT_EXIT_TIMEOUT", "env_exit_timeout", "finish"]

DEFAULT_EXIT_TIMEOUT = 30.0
# How long each domain's unload may take at exit, once its threads had their chance.
_UNLOAD_AT_EXIT_SECONDS = 5.0

_WAIT_SOURCE = f"import {_runtime.__name__} as _rt\n_rt.wait_at_exit(deadline)\ndel _rt\n"


def env_exit_timeout() -> float:
    """AppDomain.exit_timeout's default: APPDOMAIN_EXIT_TIMEOUT seconds, else 30."""
    raw = os.environ.get("APPDOMAIN_EXIT_TIMEOUT", "")
    if not raw:
        return DEFAULT_EXIT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        import warnings

        warnings.warn(
            f"APPDOMAIN_EXIT_TIMEOUT must be a number of seconds >= 0 (got {raw!r}); "
            f"using {DEFAULT_EXIT_TIMEOUT:g}",
            RuntimeWarning,
            stacklevel=2,
        )
        return DEFAULT_EXIT_TIMEOUT
    return value


# How long past the exit deadline a domain's wait may take to come back before the domain
# counts as one whose GIL is held (it cannot be unloaded, and the process ends without it).
EXIT_GRACE_SECONDS = 1.0


def finish(
    domains: Iterable[tuple[int, str, int]],
    unload: Callable[[int, float], None],
    exit_timeout: float,
    unload_timeout: float,
    exit_code: int | None,
) -> None:
    """Wait for the domains' threads, unload the domains; if one stays, report and exit now.

    domains: (domain id, name, interp id) of each domain still loaded.  Returns when all
    were unloaded: the interpreter then finalizes and exits as usual, with its own status.
    """
    from . import _bounded  # not at the top: every domain imports this module (_domain)

    domains = list(domains)
    deadline = time.monotonic() + exit_timeout
    # Every domain waits at once, each on its unload helper (a domain whose GIL is held
    # cannot hold the others up, nor us past the deadline).
    waits = [
        (name, interp_id, _bounded.worker(interp_id).submit(_waiter(interp_id, deadline)))
        for _, name, interp_id in domains
    ]
    late: list[str] = []
    failed: list[str] = []
    stuck: list[str] = []
    unresponsive: set[int] = set()
    for name, interp_id, step in waits:
        # The grace covers the step's way out of the domain: taking back a GIL that a
        # pure-Python loop holds took over 0.25 s on 3.14 here (a fix of
        # tests/test_domain_stress.py::test_process_sys_exit_code_kept_with_domains_left_open).
        if not step.done.wait(max(0.0, deadline - time.monotonic()) + EXIT_GRACE_SECONDS):
            # Its GIL is held (or the wait is stuck): its unload could not even begin.
            why = _bounded.describe_gil(interp_id) or "it did not respond"
            stuck.append(f"domain {name!r} could not be unloaded: {why}")
            unresponsive.add(interp_id)
            continue
        try:
            excinfo = step.outcome()
        except _compat.InterpreterError:  # a call into it still runs: unload aborts it
            late.append(f"domain {name!r}: a call into it was still running")
            continue
        if excinfo is None:
            continue
        message = getattr(excinfo, "msg", "") or "threads still ran"
        if getattr(getattr(excinfo, "type", None), "__name__", "") == "TimeoutError":
            late.append(f"domain {name!r}: {message}")
        else:
            failed.append(f"domain {name!r}: {message}")
    if failed:
        _report("at exit:", failed, error=True)
    if late:
        _report(
            f"still running {exit_timeout:g} s after exit began (AppDomain.exit_timeout):", late
        )
    for domain_id, _, interp_id in domains:
        if interp_id in unresponsive:
            continue
        try:
            unload(domain_id, min(unload_timeout, _UNLOAD_AT_EXIT_SECONDS))
        except AppDomainUnloadedException:
            pass
        except CannotUnloadAppDomainException as exc:
            stuck.append(str(exc))
    if stuck:
        status = 1 if exit_code is None else exit_code
        _report(f"exiting (status {status}) without finalizing these domains:", stuck, error=True)
        sys.stdout.flush()
        sys.stderr.flush()
        # Finalizing an interpreter whose threads still run would block forever: leave now.
        os._exit(status)


def _waiter(interp_id: int, deadline: float) -> Callable[[], object]:
    return functools.partial(_compat.exec_in, interp_id, _WAIT_SOURCE, {"deadline": deadline})


def _report(title: str, lines: list[str], *, error: bool = False) -> None:
    """Log title and lines on the `appdomain` logger (stderr where logging is not set up)."""
    import logging

    logging.getLogger("appdomain").log(
        logging.ERROR if error else logging.WARNING,
        "appdomain: %s\n  %s",
        title,
        "\n  ".join(lines),
    )
