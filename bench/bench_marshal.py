"""Print median timings of appdomain.marshal round trips, in main and in a subinterpreter.

Run: .venv/bin/python bench/bench_marshal.py   (prints a table; asserts nothing)
"""

from __future__ import annotations

import _interpreters
import marshal

import appdomain.marshal  # noqa: F401  # main imports first (msgpack must load here first)
from appdomain._core import _compat

BODY = r'''
import statistics, time
from appdomain._core import _compat
from appdomain.marshal import (encode_call, decode_call, to_shareable, from_shareable,
    encode_reply, decode_reply, dumps, loads)

def median_us(fn, repeat=9):
    t0 = time.perf_counter()
    fn()
    number = max(1, int(0.02 / max(time.perf_counter() - t0, 1e-7)))
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - t0) / number * 1e6)
    return statistics.median(runs)

qid = _compat.queue_create()

def via_queue(wire):
    """Really cross: put on a cross-interpreter queue and take it back (copies as a send)."""
    _compat.queue_put(qid, wire)
    return _compat.queue_get(qid)

small = (1, 2, "hello")
big = bytes(1 << 20)
big_ba = bytearray(1 << 20)
d100 = {f"key{i}": i for i in range(100)}
nested = {"a": [1, 2.5, "x", (3, 4)], "b": {"c": [bytearray(b"zz"), None]}}

cases = [
    ("small call args (2 ints, str)", lambda: decode_call(encode_call(small, {}))),
    ("  small call args, via a queue", lambda: decode_call(via_queue(encode_call(small, {})))),
    ("1 MiB bytes", lambda: from_shareable(to_shareable(big))),
    ("  1 MiB bytes, via a queue", lambda: from_shareable(via_queue(to_shareable(big)))),
    ("1 MiB bytearray", lambda: from_shareable(to_shareable(big_ba))),
    ("  1 MiB bytearray, via a queue", lambda: from_shareable(via_queue(to_shareable(big_ba)))),
    ("dict 100 str->int", lambda: from_shareable(to_shareable(d100))),
    ("  dict 100, via a queue", lambda: from_shareable(via_queue(to_shareable(d100)))),
    ("nested mixed containers", lambda: from_shareable(to_shareable(nested))),
    ("reply (int result)", lambda: decode_reply(encode_reply(3, small, {}, None), small, {})),
    ("dumps+loads dict 100 (msgpack)", lambda: loads(dumps(d100))),
]
for name, fn in cases:
    results.append((where, name, median_us(fn)))
_compat.queue_destroy(qid)
'''


def main() -> None:
    """Run the cases here and in a fresh subinterpreter; print one table."""
    results: list[tuple[str, str, float]] = []
    exec(BODY, {"results": results, "where": "main"})
    iid = _interpreters.create()
    out = _compat.queue_create()
    try:
        code = (
            "results = []\nwhere = 'subinterp'\n"
            + BODY
            + "\nimport marshal\n_compat.queue_put(out, marshal.dumps(results))\n"
        )
        err = _interpreters.exec(iid, code, {"out": out})
        if err is not None:
            raise RuntimeError(err.formatted)
        results += marshal.loads(_compat.queue_get(out))
    finally:
        _interpreters.destroy(iid)
        _compat.queue_destroy(out)
    table = {(w, n): us for w, n, us in results}
    print(f"{'case (encode+decode, median)':34} {'main µs':>10} {'subinterp µs':>14}")
    for name in dict.fromkeys(name for _, name, _ in results):
        main_us, sub_us = table.get(("main", name), 0.0), table.get(("subinterp", name), 0.0)
        print(f"{name:34} {main_us:10.2f} {sub_us:14.2f}")


if __name__ == "__main__":
    main()
