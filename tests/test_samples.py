"""The samples and the ``appdomain`` command: each sample runs as a script and via the CLI."""

from __future__ import annotations

import http.client
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

# Every test here runs on the native route and on the pure routes (conftest's route).
pytestmark = pytest.mark.usefixtures("route")

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
# The CLI through its module, so the tests do not depend on the console script's location.
CLI = [sys.executable, "-c", "import sys; from appdomain._cli import main; sys.exit(main())"]
TIMEOUT = 120  # generous bound for a slow CI machine; no test relies on it for timing


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a command from the repo root and capture its output."""
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)


def assert_clean_stderr(stderr: str) -> None:
    """Fail on tracebacks, including those Python only reports as 'Exception ignored'."""
    assert "Traceback" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr


def check_duplication_output(done: subprocess.CompletedProcess[str]) -> None:
    """Check that DuplicationSample succeeded and that the new domain answered."""
    assert done.returncode == 0, done.stdout + done.stderr
    assert_clean_stderr(done.stderr)
    answer = re.search(
        r"^answer: hello from AppDomain (\d+) \('DuplicateSocketsTest'\)$",
        done.stdout,
        re.MULTILINE,
    )
    assert answer is not None, done.stdout
    assert int(answer.group(1)) != 1  # not the default domain
    assert "client in AppDomain 1 " in done.stdout
    assert "unloaded DuplicateSocketsTest" in done.stdout


def test_duplication_sample_runs_as_a_script() -> None:
    check_duplication_output(run([sys.executable, str(SAMPLES / "DuplicationSample.py")]))


def test_duplication_sample_runs_via_the_cli() -> None:
    check_duplication_output(run([*CLI, "sample", "DuplicationSample"]))


@pytest.mark.parametrize("command", [["samples"], ["sample"]])
def test_cli_lists_the_samples_with_descriptions(command: list[str]) -> None:
    done = run([*CLI, *command])
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[1:] if line.strip()}
    assert {
        "CrashIsolation",
        "DuplicationSample",
        "MultiDomainServer",
        "PluginHost",
        "RayFanOut",
    } <= set(lines)
    assert "__init__" not in lines
    assert "new AppDomain" in lines["DuplicationSample"]
    assert "worker domains" in lines["MultiDomainServer"]


def check_plugin_host_output(done: subprocess.CompletedProcess[str]) -> None:
    """Check that PluginHost showed the edit's new behaviour, the old domain's unload, stats."""
    assert done.returncode == 0, done.stdout + done.stderr
    assert_clean_stderr(done.stderr)
    out = done.stdout
    assert "plugins calc, greeter loaded in <AppDomain #" in out
    before, _, after = out.partition("editing greeter.py while the host runs...")
    assert "greeter.greet('world') -> 'hello, world'" in before
    assert "greeter.greet('world') -> 'HELLO, WORLD!'" in after
    assert "calc.total(1, 2, 3)     -> 6" in before and "calc.total(1, 2, 3)     -> 6" in after
    assert re.search(r"reloaded: generation 2 in <AppDomain #\d+ 'sample-2'> \(greeter.py", after)
    assert re.search(r"unloaded: generation 1, <AppDomain #\d+ 'sample-1'>", after)
    stats = r"domain \d+ \('sample-2'\), monitoring on\n  calls in / out +\d+ / \d+"
    assert re.search(stats, after)
    assert "survived memory" in after
    assert out.rstrip().endswith("host closed: every plugin domain unloaded")


def test_plugin_host_sample_runs_as_a_script() -> None:
    check_plugin_host_output(run([sys.executable, str(SAMPLES / "PluginHost.py")]))


def test_plugin_host_sample_runs_via_the_cli() -> None:
    check_plugin_host_output(run([*CLI, "sample", "PluginHost"]))


def check_crash_isolation_output(done: subprocess.CompletedProcess[str]) -> None:
    """Check that CrashIsolation survived its plugin's segfault and finished the job."""
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "host_exited: signal 11, exit code None" in out
    assert "the plugin crashed on 'crash': domain 'Plugin' (process " in out
    assert "killed by signal 11 (SIGSEGV)" in out
    assert out.count("plugin started in process") == 2  # a fresh host after the crash
    assert "done: total 10, default domain 1 unharmed" in out


def test_crash_isolation_sample_runs_as_a_script() -> None:
    check_crash_isolation_output(run([sys.executable, str(SAMPLES / "CrashIsolation.py")]))


def test_crash_isolation_sample_runs_via_the_cli() -> None:
    check_crash_isolation_output(run([*CLI, "sample", "CrashIsolation"]))


def test_ray_fan_out_sample_counts_with_progress_from_every_worker() -> None:
    done = run([sys.executable, str(SAMPLES / "RayFanOut.py"), "--workers", "2"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^2 domains on Ray actors: processes \[\d+, \d+\]$", done.stdout, re.M)
    assert "[##############################] 60000/60000 numbers" in done.stdout
    assert "6057 primes below 60000" in done.stdout  # pi(60000)


def test_cli_rejects_an_unknown_sample_with_the_list() -> None:
    done = run([*CLI, "sample", "NoSuchSample"])
    assert done.returncode == 2
    assert "unknown sample 'NoSuchSample'" in done.stderr
    assert "DuplicationSample" in done.stderr and "MultiDomainServer" in done.stderr


def test_cli_version_and_usage() -> None:
    from appdomain import __version__

    done = run([*CLI, "--version"])
    assert done.returncode == 0 and done.stdout.strip() == f"appdomain {__version__}"
    done = run([*CLI, "frobnicate"])
    assert done.returncode == 2 and "unknown command 'frobnicate'" in done.stderr
    assert run(CLI).returncode == 2  # no command: usage, as an error


def test_cli_passes_arguments_and_exit_code_through() -> None:
    done = run([*CLI, "sample", "MultiDomainServer", "--workers", "0"])
    assert done.returncode == 2  # argparse's error exit, from the sample itself
    assert "--workers must be at least 1" in done.stderr


class Server:
    """MultiDomainServer in a subprocess, ready once it printed its 'listening on' line."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(SAMPLES / "MultiDomainServer.py"), "--port", "0", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # A watchdog, not a synchronisation: a hung server fails the test instead of hanging it.
        self.watchdog = threading.Timer(TIMEOUT, self.process.kill)
        self.watchdog.start()
        assert self.process.stdout is not None
        self.banner = self.process.stdout.readline()
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", self.banner)
        if match is None:
            self.finish()
            pytest.fail(f"server did not start: {self.banner!r}")
        self.port = int(match.group(1))

    def finish(self) -> tuple[int, str, str]:
        """Wait for the server to exit; return its exit code, stdout and stderr."""
        out, err = self.process.communicate(timeout=TIMEOUT)
        self.watchdog.cancel()
        return self.process.returncode, self.banner + out, err


@pytest.fixture
def server() -> Iterator[Server]:
    started = Server("--workers", "2", "--duration", str(TIMEOUT))
    yield started
    if started.process.poll() is None:
        started.process.kill()
        started.finish()


def get(port: int, path: str = "/") -> str:
    """GET a page on a new connection (urllib closes it after the response)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        assert response.status == 200
        body: bytes = response.read()
        return body.decode()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_multi_domain_server_serves_http_and_stops_on_a_signal(
    server: Server, stop: signal.Signals
) -> None:
    assert "2 worker domain(s)" in server.banner
    bodies = [get(server.port, f"/?n={100 + i}") for i in range(4)]
    answered = {re.match(r"AppDomain (\d+) (worker-\d)", body).groups() for body in bodies}  # type: ignore[union-attr]
    # Connections are handed out round robin: both worker domains answered, neither is
    # the default domain.
    assert {name for _, name in answered} == {"worker-1", "worker-2"}
    assert all(domain_id != "1" for domain_id, _ in answered)
    assert "compute(101) = " in bodies[1]

    # Keep-alive: several requests on one connection, served by one domain; left open
    # on purpose, so the shutdown must close it.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    tags = set()
    for _ in range(3):
        conn.request("GET", "/?n=10")
        response = conn.getresponse()
        assert response.status == 200
        tags.add(response.read().split(b":")[0])
    assert len(tags) == 1

    server.process.send_signal(stop)
    code, out, err = server.finish()
    conn.close()
    assert code == 0, out + err
    assert_clean_stderr(err)
    assert f"stopping ({stop.name})" in out
    assert re.search(r"worker-1: \d+ request", out) and re.search(r"worker-2: \d+ request", out)
    assert out.rstrip().endswith("worker domains unloaded")


def test_multi_domain_server_stops_after_its_duration() -> None:
    started = Server("--workers", "1", "--duration", "5")
    assert get(started.port).startswith("AppDomain ")
    code, out, err = started.finish()
    assert code == 0, out + err
    assert_clean_stderr(err)
    assert "stopping (duration 5s elapsed)" in out
    assert "worker-1: 1 request(s)" in out
