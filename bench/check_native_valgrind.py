"""Run the native domain switch under valgrind and report invalid memory accesses.

Not part of the test suite (it takes minutes): run it by hand after changing _native.c.
    python bench/check_native_valgrind.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

VALGRIND_SCRIPT = """
import threading, _interpreters, appdomain._native as n
MAIN = 0
n.register_dispatcher(lambda p: b"main:" + bytes(p[0]))
ids = []
for k in range(3):
    i = int(_interpreters.create())
    ids.append(i)
    _interpreters.exec(i, "import appdomain._native as n\\n"
                          "def fn(p):\\n"
                          "    if p and bytes(p[0]) == b'cb':\\n"
                          "        return n.call(0, (b'x',))\\n"
                          "    if p and bytes(p[0]) == b'raise':\\n"
                          "        raise KeyError('k')\\n"
                          "    return b''.join(bytes(x) for x in p)\\n"
                          "n.register_dispatcher(fn)\\n")
big = bytes(300_000)
for i in ids:
    assert n.call(i, (b"a", b"b")) == b"ab"
    assert n.call(i, (b"cb",)) == b"main:x"
    assert n.call(i, (b"e", big)) == b"e" + big
    try:
        n.call(i, (b"raise",))
    except RuntimeError as e:
        assert "KeyError" in str(e)
def worker(i):
    for _ in range(20):
        assert n.call(i, (b"cb",)) == b"main:x"
ts = [threading.Thread(target=worker, args=(i,)) for i in ids for _ in range(2)]
[t.start() for t in ts]
[t.join() for t in ts]
n.release_interp(ids[0]); _interpreters.destroy(ids[0])   # released, then destroyed
_interpreters.destroy(ids[1])                             # destroyed with orphans cached
n.release_thread()
print("ok")                                               # ids[2] left alive for exit
"""


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "vg.py")
        with open(script, "w") as f:
            f.write(VALGRIND_SCRIPT)
        proc = subprocess.run(
            [
                "valgrind",
                "--error-exitcode=99",
                "--errors-for-leak-kinds=none",
                sys.executable,
                script,
            ],
            capture_output=True,
            text=True,
            timeout=1800,
            env={**os.environ, "PYTHONMALLOC": "malloc"},
        )
    invalid = [
        line
        for line in proc.stderr.splitlines()
        if "Invalid read" in line or "Invalid write" in line
    ]
    summary = [line for line in proc.stderr.splitlines() if "ERROR SUMMARY" in line]
    print(f"exit code {proc.returncode}; script said {proc.stdout.strip()!r}")
    print(summary[-1] if summary else "no valgrind summary")
    print(f"invalid accesses: {len(invalid)}")
    return 0 if proc.returncode == 0 and not invalid else 1


if __name__ == "__main__":
    raise SystemExit(main())
