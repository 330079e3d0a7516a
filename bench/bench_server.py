"""Measure how MultiDomainServer scales from 1 to 2 worker domains (requests/s and ratio).

Starts ``samples/MultiDomainServer.py`` on 127.0.0.1 with 1, then 2 worker domains, drives
each with ``wrk`` (installed with apt-get when missing) over a bounded number of keep-alive
connections for a bounded time, and prints requests/s and the 2-vs-1 ratio.  Each request
runs ~1 ms of pure Python in a worker domain, so on 2 cores the ratio shows whether the
domains really run in parallel (each has its own GIL); the target is >= 1.7x.

Run: ``python bench/bench_server.py [--duration 10] [--connections 16]``.
Without wrk (and no way to install it) a small Python load generator is used instead; it
competes with the server for the CPU, so its figures are lower and it says so.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "samples" / "MultiDomainServer.py"
TARGET_RATIO = 1.7


@dataclass
class Result:
    """One measured run: workers, requests/s, and what the server said it served."""

    workers: int
    requests_per_second: float
    errors: str
    server_report: str


def ensure_wrk() -> str | None:
    """Return the path of wrk, installing the Debian package if needed; None if impossible."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        print("wrk is missing and there is no apt-get", flush=True)
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("wrk is missing: apt-get install -y wrk", flush=True)
    for step in (
        [apt, "install", "-y", "-q", "wrk"],
        [apt, "update", "-q"],
        [apt, "install", "-y", "-q", "wrk"],
    ):
        if step[1] == "install" and shutil.which("wrk"):
            break
        done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            print(f"  {' '.join(step[1:])} failed: {done.stderr.strip()[-300:]}", flush=True)
    return shutil.which("wrk")


class Server:
    """MultiDomainServer in a subprocess, on a free loopback port."""

    def __init__(self, workers: int, lifetime: float) -> None:
        # --duration bounds the server even if this script dies without stopping it.
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(SERVER),
                "--workers",
                str(workers),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--duration",
                f"{lifetime:g}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"listening on http://([\d.]+):(\d+)/", line)
        if match is None:
            self.process.kill()
            raise RuntimeError(f"server did not start: {line!r}")
        self.host, self.port = match.group(1), int(match.group(2))

    @property
    def url(self) -> str:
        """Return the server's base URL."""
        return f"http://{self.host}:{self.port}/"

    def stop(self) -> str:
        """Stop the server with SIGTERM, wait for it, and return what it printed."""
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=60)
        if self.process.returncode != 0:
            raise RuntimeError(f"server exited with {self.process.returncode}: {out}")
        return out


def run_wrk(wrk: str, url: str, connections: int, duration: float) -> tuple[float, str]:
    """Drive url with wrk; return requests/s and wrk's error line, if any."""
    done = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{duration:g}s", url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
    )
    match = re.search(r"Requests/sec:\s*([\d.]+)", done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    errors = re.search(r"(Socket errors:.*|Non-2xx.*)", done.stdout)
    return float(match.group(1)), errors.group(1) if errors else ""


def run_python_load(host: str, port: int, connections: int, duration: float) -> tuple[float, str]:
    """Drive the server from threads over keep-alive connections; return requests/s."""
    request = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    deadline = time.monotonic() + duration
    counts = [0] * connections
    failures: list[str] = []

    def client(slot: int) -> None:
        try:
            with socket.create_connection((host, port), timeout=10) as sock:
                buffer = b""
                while time.monotonic() < deadline:
                    sock.sendall(request)
                    while True:
                        end = buffer.find(b"\r\n\r\n")
                        if end >= 0:
                            found = re.search(rb"Content-Length: (\d+)", buffer[:end])
                            if found is None:
                                raise ConnectionError("response without Content-Length")
                            length = int(found[1])
                            if len(buffer) >= end + 4 + length:
                                buffer = buffer[end + 4 + length :]
                                break
                        chunk = sock.recv(65536)
                        if not chunk:
                            raise ConnectionError("server closed the connection")
                        buffer += chunk
                    counts[slot] += 1
        except OSError as exc:
            failures.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    return sum(counts) / elapsed, f"{len(failures)} client error(s)" if failures else ""


def measure(workers: int, args: argparse.Namespace, wrk: str | None) -> Result:
    """Start a server with this many workers, warm it up, measure it, stop it."""
    server = Server(workers, lifetime=args.warmup + args.duration + 60)
    try:
        if wrk is not None:
            run_wrk(wrk, server.url, args.connections, args.warmup)
            rps, errors = run_wrk(wrk, server.url, args.connections, args.duration)
        else:
            run_python_load(server.host, server.port, args.connections, args.warmup)
            rps, errors = run_python_load(server.host, server.port, args.connections, args.duration)
    finally:
        report = server.stop()
    return Result(workers, rps, errors, report)


def main() -> int:
    """Measure 1 and 2 workers and print requests/s and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up first")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of (1 worker, 2 workers)")
    parser.add_argument(
        "--python-load",
        action="store_true",
        help="use the Python load generator even if wrk is there",
    )
    args = parser.parse_args()

    wrk = None if args.python_load else ensure_wrk()
    if wrk is None:
        print(
            "NOTE: using the Python load generator (wrk unavailable or not wanted); it shares "
            "the CPUs with the server, so figures are lower than wrk's",
            flush=True,
        )
    print(
        f"cpus: {os.cpu_count()}; load: {wrk or 'python'}; {args.connections} connections, "
        f"{args.duration:g}s per run after {args.warmup:g}s warm-up",
        flush=True,
    )
    # Runs alternate 1, 2, 1, 2...; the best of each counts, which filters out moments
    # when other work on the machine took a core away.
    best: dict[int, Result] = {}
    for round_ in range(1, args.repeat + 1):
        for workers in (1, 2):
            result = measure(workers, args, wrk)
            previous = best.get(workers)
            if previous is None or result.requests_per_second > previous.requests_per_second:
                best[workers] = result
            served = ", ".join(re.findall(r"(worker-\d+: \d+) request", result.server_report))
            errors = f"; {result.errors}" if result.errors else ""
            print(
                f"round {round_}: {workers} worker(s): {result.requests_per_second:8.1f} "
                f"requests/s ({served}){errors}",
                flush=True,
            )
    one, two = best[1].requests_per_second, best[2].requests_per_second
    print(f"best: 1 worker {one:.1f} requests/s, 2 workers {two:.1f} requests/s")
    ratio = two / one
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"ratio 2/1: {ratio:.2f}x (target >= {TARGET_RATIO}x on 2 cores: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
