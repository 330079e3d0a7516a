"""The process's exit with domains still loaded (issue 20): wait for their threads, in bounds.

Each test runs a child Python process and controls it through pipes: a domain thread the
child starts blocks on a pipe whose write end the test holds, so nothing here sleeps to
wait for anything.  Children are killed if they outlive CHILD_TIMEOUT: a hang fails the
test instead of the run.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("route")

TESTS = Path(__file__).resolve().parent
CHILD_TIMEOUT = 120.0

# Imported by the children and by their domains (the children's sys.path has tmp_path).
HELPERS = '''
import ctypes, os, re, threading


def _read(fd):
    os.read(fd, 1)


def start_reader(fd):
    """A domain thread blocked in os.read(fd) (the GIL released) until the pipe is written."""
    threading.Thread(target=_read, args=(fd,), name="exit-reader").start()


def _read_holding_gil(go, fd):
    os.read(go, 1)
    ctypes.PyDLL(None).read(fd, ctypes.create_string_buffer(1), 1)


def start_gil_reader(go, fd):
    """A domain thread that, once go is written to, blocks in read(fd) holding the GIL."""
    threading.Thread(target=_read_holding_gil, args=(go, fd), name="gil-reader").start()


def _regex(go):
    os.read(go, 1)
    re.match(r"(a+)+$", "a" * 40 + "b")  # catastrophic backtracking: hours, in C


def start_regex(go):
    threading.Thread(target=_regex, args=(go,), name="regex").start()


def _fail():
    raise ValueError("boom")


def register_failing_exit_callback():
    """An exit callback, as concurrent.futures registers its own, that raises."""
    threading._register_atexit(_fail)
'''


def _child(tmp_path: Path, body: str, *fds: int, env: dict[str, str] | None = None):
    """Start `python script.py` running body (after the helpers' import) with fds passed."""
    (tmp_path / "exit_helpers.py").write_text(HELPERS)
    script = tmp_path / "child.py"
    script.write_text(
        "import sys, os, time\n"
        "from appdomain import AppDomain, CannotUnloadAppDomainException\n"
        "import exit_helpers\n"
        "if __name__ == '__main__':\n" + textwrap.indent(textwrap.dedent(body), "    ")
    )
    return _start([sys.executable, str(script)], tmp_path, fds, env)


def _start(argv: list[str], cwd: Path, fds: tuple[int, ...], env: dict[str, str] | None):
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = os.pathsep.join([str(cwd), str(TESTS)])
    child_env.update(env or {})
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=child_env,
        pass_fds=fds,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _read_until(proc: subprocess.Popen[bytes], marker: bytes) -> bytes:
    """Read the child's stdout until marker shows (the child has printed it)."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + CHILD_TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while marker not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"the child did not print {marker!r} in {CHILD_TIMEOUT} s: {seen!r}"
            if selector.select(left):
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, f"the child ended before printing {marker!r}: {seen!r}"
                seen += chunk
    return seen


def _finish(proc: subprocess.Popen[bytes], seen: bytes = b"") -> tuple[int, str, str]:
    """Wait for the child to exit; return (status, stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the child hung at exit: stdout {seen + out!r}, stderr {err!r}")
    return proc.returncode, (seen + out).decode(), err.decode()


def _open_pipe():
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


@pytest.fixture
def pipe():
    """The pipe a domain thread reads from, stuck until the test writes to it."""
    yield from _open_pipe()


@pytest.fixture
def go():
    """The pipe the child's main thread signals on once the stuck call has returned."""
    yield from _open_pipe()


# -- threads that end after the main script ------------------------------------------------


START_READER = """
d = AppDomain.create_domain("Worker")
d.do_callback(exit_helpers.start_reader, {fd})
print("main done", flush=True)
"""


def test_exit_waits_for_a_domain_thread_and_keeps_status_0(tmp_path: Path, pipe):
    r, w = pipe
    proc = _child(tmp_path, START_READER.format(fd=r), r)
    seen = _read_until(proc, b"main done")
    os.write(w, b"x")  # the thread ends after the main script has
    status, _, err = _finish(proc, seen)
    assert (status, err) == (0, ""), f"expected status 0 and no report, got {status}: {err}"


def test_exit_reports_a_domain_thread_running_past_exit_timeout(tmp_path: Path, pipe):
    r, _ = pipe
    body = "AppDomain.unload_timeout = 0.5\n" + START_READER.format(fd=r)
    proc = _child(tmp_path, body, r, env={"APPDOMAIN_EXIT_TIMEOUT": "0.5"})
    _, _, err = _finish(proc)
    assert "still running 0.5 s after exit began" in err, err
    assert "thread 'exit-reader' still running" in err, err


LOG_TO_STDOUT = """
import logging
logging.basicConfig(stream=sys.stdout, format="LOG %(name)s %(levelname)s %(message)s")
"""


def test_exit_report_goes_to_the_programs_logging(tmp_path: Path, pipe):
    r, _ = pipe
    body = LOG_TO_STDOUT + "AppDomain.unload_timeout = 0.5\n" + START_READER.format(fd=r)
    proc = _child(tmp_path, body, r, env={"APPDOMAIN_EXIT_TIMEOUT": "0.5"})
    _, out, err = _finish(proc)
    assert "LOG appdomain WARNING appdomain: still running 0.5 s after exit began" in out, out
    assert "still running" not in err, err


def test_a_failing_exit_callback_of_a_domain_is_logged(tmp_path: Path):
    body = LOG_TO_STDOUT + (
        'd = AppDomain.create_domain("Worker")\n'
        "d.do_callback(exit_helpers.register_failing_exit_callback)\n"
    )
    proc = _child(tmp_path, body)
    status, out, err = _finish(proc)
    assert status == 0, err
    assert "LOG appdomain ERROR appdomain: at exit:" in out, out
    assert "domain 'Worker': exit callback failed: ValueError('boom')" in out, out


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("", 1), ("AppDomain.exit_code = 7\n", 7)],
    ids=["status-not-known-is-1", "exit_code-is-used"],
)
def test_exit_with_a_domain_that_cannot_unload(tmp_path: Path, pipe, setting: str, expected: int):
    r, _ = pipe
    body = "AppDomain.unload_timeout = 0.5\n" + setting + START_READER.format(fd=r)
    proc = _child(tmp_path, body, r, env={"APPDOMAIN_EXIT_TIMEOUT": "0.5"})
    status, _, err = _finish(proc)
    assert status == expected, f"expected status {expected}, got {status}: {err}"


def test_exit_timeout_attribute_overrides_the_environment(tmp_path: Path, pipe):
    r, _ = pipe
    body = "AppDomain.unload_timeout = 0.5\nAppDomain.exit_timeout = 0.25\n"
    proc = _child(tmp_path, body + START_READER.format(fd=r), r)
    _, _, err = _finish(proc)
    assert "still running 0.25 s after exit began" in err, err


def test_exit_timeout_default_is_30_seconds(tmp_path: Path):
    proc = _child(tmp_path, "print(AppDomain.exit_timeout)\n", env={"APPDOMAIN_EXIT_TIMEOUT": ""})
    status, out, err = _finish(proc)
    assert (status, out.strip()) == (0, "30.0"), f"got {status}, {out!r}, {err!r}"


def test_a_bad_exit_timeout_setting_is_a_warning_a_program_can_catch(tmp_path: Path):
    script = tmp_path / "child.py"
    script.write_text(
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from appdomain import AppDomain\n"
        "    print(AppDomain.exit_timeout)\n"
        "print(*[f'{w.category.__name__}: {w.message}' for w in caught], sep='\\n')\n"
    )
    proc = _start([sys.executable, str(script)], tmp_path, (), {"APPDOMAIN_EXIT_TIMEOUT": "soon"})
    status, out, err = _finish(proc)
    assert (status, err) == (0, ""), err
    assert out.splitlines()[0] == "30.0", out
    expected = "RuntimeWarning: APPDOMAIN_EXIT_TIMEOUT must be a number of seconds >= 0 "
    expected += "(got 'soon')"
    assert expected in out, out


# -- a domain whose GIL a thread holds in C code ---------------------------------------------


def test_exit_with_a_gil_held_domain_reports_and_exits(tmp_path: Path, pipe, go):
    go_r, go_w = go
    r, _ = pipe
    body = f"""
    d = AppDomain.create_domain("Stuck")
    d.do_callback(exit_helpers.start_gil_reader, {go_r}, {r})
    os.write({go_w}, b"x")
    print("main done", flush=True)
    """
    proc = _child(tmp_path, body, go_r, go_w, r, env={"APPDOMAIN_EXIT_TIMEOUT": "0.5"})
    status, _, err = _finish(proc)
    assert "a thread holds the domain's GIL in native code" in err, err
    assert status == 1, f"expected status 1, got {status}: {err}"


REGEX = """
d = AppDomain.create_domain("Regex")
go_r, go_w = os.pipe()
d.do_callback(exit_helpers.start_regex, go_r)
os.write(go_w, b"x")
begun = time.monotonic()
try:
    AppDomain.unload(d, timeout=3)
except CannotUnloadAppDomainException as exc:
    print(f"gave up after {time.monotonic() - begun:.2f} s: {exc}", flush=True)
AppDomain.exit_code = 0
"""


def test_unload_gives_up_on_a_catastrophic_regex(tmp_path: Path):
    proc = _child(tmp_path, REGEX, env={"APPDOMAIN_EXIT_TIMEOUT": "0.5"})
    _, out, err = _finish(proc)
    assert "a thread holds the domain's GIL in native code" in out, f"{out!r} {err!r}"
    took = float(out.split("gave up after ")[1].split(" s")[0])
    assert took < 5.0, f"unload(timeout=3) took {took} s, expected < 5 s"


def test_exit_after_a_catastrophic_regex_does_not_hang(tmp_path: Path):
    proc = _child(tmp_path, REGEX, env={"APPDOMAIN_EXIT_TIMEOUT": "0.5"})
    status, out, err = _finish(proc)
    assert status == 0, f"expected AppDomain.exit_code 0, got {status}: {out!r} {err!r}"


# -- pytest runs: the session's status is kept ----------------------------------------------


PYTEST_FILE = """
import os
from appdomain import AppDomain
import exit_helpers


def test_starts_a_thread_that_outlives_the_session():
    d = AppDomain.create_domain("Outlives")
    d.do_callback(exit_helpers.{start}, *{fds})
    {then}
"""


def _pytest_child(
    tmp_path: Path,
    start: str,
    fds: tuple[int, ...],
    env: dict[str, str],
    then: str = "pass",
    also: tuple[int, ...] = (),
):
    """Start a pytest run of one passing test: it starts a domain thread, then runs then.

    fds are start's arguments; also: more descriptors the child inherits (for then).
    """
    (tmp_path / "exit_helpers.py").write_text(HELPERS)
    source = PYTEST_FILE.format(start=start, fds=fds, then=then)
    (tmp_path / "test_outlives.py").write_text(source)
    pytest_script = str(Path(sys.executable).with_name("pytest"))
    argv = [pytest_script, "-q", "-p", "no:cacheprovider", "test_outlives.py"]
    return _start(argv, tmp_path, (*fds, *also), env)


def test_passing_pytest_run_whose_domain_thread_outlives_it_exits_0(tmp_path: Path, pipe):
    r, w = pipe
    proc = _pytest_child(tmp_path, "start_reader", (r,), {})
    seen = _read_until(proc, b"1 passed")
    os.write(w, b"x")
    status, out, err = _finish(proc, seen)
    assert status == 0, f"expected status 0, got {status}: {out} {err}"


def test_passing_pytest_run_with_a_domain_stuck_at_exit_exits_0(tmp_path: Path, pipe, go):
    go_r, go_w = go
    r, _ = pipe
    env = {"APPDOMAIN_EXIT_TIMEOUT": "0.5"}
    then = f"os.write({go_w}, b'x')"  # once the call that started it has returned
    proc = _pytest_child(tmp_path, "start_gil_reader", (go_r, r), env, then, (go_w,))
    status, out, err = _finish(proc)
    assert "1 passed" in out, out
    assert status == 0, f"expected the session's status 0, got {status}: {out} {err}"
