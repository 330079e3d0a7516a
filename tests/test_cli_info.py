"""``appdomain info``: what a bug report needs, read off this interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

import pytest

from appdomain._core import native_built

CLI = [sys.executable, "-c", "import sys; from appdomain._cli import main; sys.exit(main())"]
# Not from the checkout's root, where `-c` would find its appdomain/ (without marshal/) first.
ELSEWHERE = tempfile.gettempdir()
TOPICS = (
    "appdomain",
    "python",
    "platform",
    "subinterpreters",
    "per-interpreter GIL",
    "C switch",
    "msgpack",
    "socket routes",
    "self-check create_domain",
    "self-check proxy call",
    "self-check callback",
    "cpus",
)


def info(pure: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "APPDOMAIN_PURE"}
    if pure:
        env["APPDOMAIN_PURE"] = "1"
    done = subprocess.run(
        [*CLI, "info"], capture_output=True, text=True, env=env, cwd=ELSEWHERE, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    rows = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    return {topic.rstrip(":"): finding.strip() for topic, finding in rows.items()}


@pytest.fixture(scope="module")
def native_info() -> dict[str, str]:
    return info()


def test_info_reports_every_topic_once(native_info: dict[str, str]) -> None:
    assert tuple(native_info) == TOPICS


def test_info_names_this_python(native_info: dict[str, str]) -> None:
    assert native_info["python"] == f"CPython {sys.version.split()[0]}"


def test_info_says_whether_the_c_switch_is_on(native_info: dict[str, str]) -> None:
    expected = "built, on" if native_built() is not None else "not built"
    assert native_info["C switch"].startswith(expected)


def test_info_says_the_c_switch_is_off_under_appdomain_pure() -> None:
    expected = "built, off" if native_built() is not None else "not built"
    assert info(pure=True)["C switch"].startswith(expected)


def test_info_reports_the_self_check_in_numbers(native_info: dict[str, str]) -> None:
    assert re.match(r"\d+\.\d ms", native_info["self-check create_domain"])
    assert re.match(r"\d+\.\d µs", native_info["self-check proxy call"])
    assert re.match(r"\d+\.\d µs", native_info["self-check callback"])


def test_info_lists_the_same_process_socket_route(native_info: dict[str, str]) -> None:
    assert "same-process" in native_info["socket routes"]


def test_info_refuses_arguments() -> None:
    done = subprocess.run(
        [*CLI, "info", "--all"], capture_output=True, text=True, cwd=ELSEWHERE, timeout=60
    )
    assert done.returncode == 2
    assert "'info' takes no arguments (got '--all')" in done.stderr
