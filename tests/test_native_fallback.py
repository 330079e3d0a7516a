"""Without the C switch appdomain still works, on the pure path, and says so once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """\
import sys
import warnings


class BlockNative:
    # Stands for an install where no C compiler built appdomain._native._ext.
    def find_spec(self, name, path=None, target=None):
        if name == "appdomain._native._ext":
            raise ImportError("appdomain._native._ext is not built here")
        return None


sys.meta_path.insert(0, BlockNative())
warnings.simplefilter("always")

import appdomain._core
from appdomain import AppDomain


def answer():
    return 42


if __name__ == "__main__":
    assert appdomain._core.native_module() is None
    for index in range(2):
        with AppDomain.create_domain(f"Pure{index}") as domain:
            assert domain.do_callback(answer) == 42
    print("ok")
"""


def test_missing_native_switch_falls_back_and_warns_once(tmp_path: Path) -> None:
    script = tmp_path / "no_native.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "APPDOMAIN_PURE"}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert proc.stderr.count("native domain switch") == 1
