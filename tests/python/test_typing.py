"""The installed package is typed: mypy sees its API (py.typed, _core.pyi)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

mypy = pytest.importorskip("mypy")

CACHE = os.path.join(os.path.dirname(__file__), "..", "..", "build", "mypy-cache")

USER_CODE = '''
import troupe

def square(x: int) -> int:
    return x * x

f: troupe.Future[int] = troupe.isolated(square).submit(3)
n: int = f.result()
with troupe.Executor() as ex:
    g = ex.submit(troupe.isolated(square), 4)
h = troupe.isolated(square).submit("not an int")
'''


def test_mypy_checks_user_code_against_the_package(tmp_path) -> None:
    src = tmp_path / "user.py"
    src.write_text(USER_CODE)
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", CACHE, str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = r.stdout
    assert "user.py:11: error" in out and "arg-type" in out, out  # the wrong argument is caught
    assert out.count("error:") == 1, out  # and nothing else is flagged


def test_the_package_itself_passes_mypy_strict(tmp_path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", CACHE, "-p", "troupe"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # the installed package, not a source folder
    )
    assert r.returncode == 0, r.stdout
