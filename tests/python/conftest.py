"""Shared fixtures for the Python package's tests.

Tests run against the installed package (``pip install .`` into .venv), in
one pytest process whose troupe runtime starts on first use; tests that need
their own runtime settings (budget, exit behaviour, signals) run a script in
a fresh interpreter (``run_script``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Iterator

import pytest

import troupe

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def ex() -> Iterator[troupe.Executor]:
    with troupe.Executor(max_workers=4) as e:
        yield e


def run_script(code: str, *args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess[str]:
    """Runs code as __main__ of a fresh interpreter; returns its result."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=kw.pop("cwd", HERE),
        **kw,
    )


def children_of(pid: int) -> list[int]:
    """Live (and zombie) child processes of pid."""
    out: list[int] = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
