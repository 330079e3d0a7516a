"""Many create/unload cycles leak nothing; a process exits cleanly with domains still loaded."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import domain_helpers as helpers
import pytest

from appdomain import AppDomain

# Every test here runs on the native route and on the pure routes (conftest's route).
pytestmark = pytest.mark.usefixtures("route")

# Per route.  CPython 3.13.0 keeps ~1.3 MB of every destroyed interpreter (2.8 MB with an
# editable install's import hook), so both routes' cycles in one process stay under 3 GB.
CYCLES = 400
# Descriptors / threads a cycle may leave behind in total (lazily created shared sockets...).
FD_SLACK = 4
THREAD_SLACK = 2


def open_fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _cycle(i: int) -> None:
    d = AppDomain.create_domain(f"Cycle{i}")
    try:
        assert d.do_callback(helpers.add, i, 1) == i + 1
    finally:
        AppDomain.unload(d)


def test_create_unload_cycles_leak_no_fds_or_threads() -> None:
    # Warm up: the first domains start the default domain's dispatcher and caches.
    for i in range(5):
        _cycle(i)
    fds = open_fd_count()
    threads = threading.active_count()
    for i in range(CYCLES):
        _cycle(i)
    assert open_fd_count() <= fds + FD_SLACK
    assert threading.active_count() <= threads + THREAD_SLACK


# The spinning domain thread never ends: exit waits exit_timeout for it (30 s by default).
SHORT_EXIT = {**os.environ, "APPDOMAIN_EXIT_TIMEOUT": "0.5"}

EXIT_SCRIPT = textwrap.dedent(
    """\
    import sys
    sys.path.insert(0, {tests!r})
    import domain_helpers
    from appdomain import AppDomain, Channel

    plain = AppDomain.create_domain("LeftOpen")
    plain.set_data("k", 1)
    spinning = AppDomain.create_domain("LeftSpinning")
    spinning.do_callback(domain_helpers.start_spinner)
    accepting = AppDomain.create_domain("LeftAccepting")
    started = Channel()
    accepting.do_callback(domain_helpers.start_acceptor, started)
    started.recv(timeout=30)
    calc = plain.create_instance_and_unwrap("domain_helpers", "Calculator")
    assert calc.add(1, 2) == 3
    print("done", flush=True)
    """
)


def test_process_exit_with_domains_left_open(tmp_path: Path) -> None:
    script = tmp_path / "leave_open.py"
    script.write_text(EXIT_SCRIPT.format(tests=str(Path(helpers.__file__).parent)))
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env=SHORT_EXIT,
    )
    assert "Fatal Python error" not in proc.stderr
    assert proc.stdout.strip() == "done"
    assert proc.returncode == 0, proc.stderr


SYS_EXIT_SCRIPT = textwrap.dedent(
    """\
    import sys
    sys.path.insert(0, {tests!r})
    import domain_helpers
    from appdomain import AppDomain

    d = AppDomain.create_domain("LeftOpen")
    d.do_callback(domain_helpers.start_spinner)
    sys.exit(5)
    """
)


def test_process_sys_exit_code_kept_with_domains_left_open(tmp_path: Path) -> None:
    script = tmp_path / "exit5.py"
    script.write_text(SYS_EXIT_SCRIPT.format(tests=str(Path(helpers.__file__).parent)))
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=SHORT_EXIT
    )
    assert "Fatal Python error" not in proc.stderr
    assert proc.returncode == 5, proc.stderr
