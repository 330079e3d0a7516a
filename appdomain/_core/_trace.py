"""TEMP tracing (not for commit)."""
import os
import time

from . import _compat

_ME = _compat.current_interp_id()
Q = int(os.environ.get("ADTRACE", "0"))
_ns = time.perf_counter_ns
_put = _compat.queue_put


def t(label: str) -> None:
    if Q:
        _put(Q, (label, _ME, _ns()))
