"""Measure socket handoff latency: same process, into a subinterpreter, to another process.

Run: ``.venv/bin/python bench/bench_sockets.py [rounds]``.  Prints medians (and p90);
targets are <= 30 us same-process and <= 300 us cross-process per handoff.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # runnable from a checkout without installing
    sys.path.insert(0, ROOT)

from appdomain import _handoff  # noqa: E402
from appdomain._sockets._socket import Socket, SocketInformation  # noqa: E402

# A long-lived claimant: per line (a hex blob) it claims the socket, closes it, acks.
CHILD = """
import sys
from appdomain._sockets._socket import Socket, SocketInformation
for line in sys.stdin:
    if len(line) > 1:  # an empty line only measures the pipe round trip
        Socket(SocketInformation.from_bytes(bytes.fromhex(line))).close()
    sys.stdout.write("k")
    sys.stdout.flush()
"""


def report(name: str, samples_ns: list[int], target_us: float | None = None) -> None:
    """Print the median and p90 of samples, in microseconds."""
    ordered = sorted(samples_ns)
    median = statistics.median(ordered) / 1000
    p90 = ordered[int(len(ordered) * 0.9)] / 1000
    goal = f"  (target <= {target_us:g} us)" if target_us else ""
    print(f"{name:<44} median {median:8.1f} us   p90 {p90:8.1f} us   n={len(ordered)}{goal}")


def bench_same_process(rounds: int) -> None:
    pid = os.getpid()
    whole, offer, claim = [], [], []
    for _ in range(rounds):
        sock = Socket(socket.AF_INET, socket.SOCK_STREAM)
        t0 = time.perf_counter_ns()
        info = sock.duplicate_and_close(pid)
        t1 = time.perf_counter_ns()
        back = Socket(info)
        t2 = time.perf_counter_ns()
        back.close()
        whole.append(t2 - t0)
        offer.append(t1 - t0)
        claim.append(t2 - t1)
    report("same process: duplicate_and_close + Socket()", whole, 30)
    report("  duplicate_and_close", offer)
    report("  Socket(info)", claim)


def bench_blob(rounds: int) -> None:
    info = Socket(socket.AF_INET, socket.SOCK_STREAM).duplicate_and_close(os.getpid())
    blob = info.protocol_information
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        SocketInformation.from_bytes(blob)
        samples.append(time.perf_counter_ns() - t0)
    Socket(info).close()
    report("SocketInformation.from_bytes", samples)


def bench_cross_process(rounds: int) -> None:
    env = dict(os.environ, PYTHONPATH=ROOT)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        bufsize=0,
    )
    assert child.stdin is not None and child.stdout is not None
    whole, offer = [], []
    try:
        for i in range(rounds + 20):
            sock = Socket(socket.AF_INET, socket.SOCK_STREAM)
            t0 = time.perf_counter_ns()
            info = sock.duplicate_and_close(child.pid)
            t1 = time.perf_counter_ns()
            child.stdin.write(info.protocol_information.hex().encode() + b"\n")
            if child.stdout.read(1) != b"k":
                raise RuntimeError("the claimant died")
            t2 = time.perf_counter_ns()
            if i >= 20:  # the first rounds import and warm up the child
                whole.append(t2 - t0)
                offer.append(t1 - t0)
        pipe = []
        for _ in range(rounds):  # the IPC that carries the blob, without a handoff
            t0 = time.perf_counter_ns()
            child.stdin.write(b"\n")
            child.stdout.read(1)
            pipe.append(time.perf_counter_ns() - t0)
    finally:
        child.stdin.close()
        child.wait()
    report("cross process: offer + child claims + ack", whole, 300)
    report("  duplicate_and_close (offer only)", offer)
    report("  pipe round trip carrying the blob (no handoff)", pipe)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print(f"Python {sys.version.split()[0]} on {sys.platform}, {rounds} rounds")
    bench_same_process(rounds)
    bench_blob(rounds)
    if _handoff.supports_remote():
        bench_cross_process(min(rounds, 1000))
    _handoff._shutdown()


if __name__ == "__main__":
    main()
