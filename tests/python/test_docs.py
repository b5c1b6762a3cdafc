"""Every ```python block of docs/python.md, docs/python-shared.md and README.md
runs, as a user would paste it."""

from __future__ import annotations

import os
import re
import sys
import subprocess

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
DOCS = [os.path.join(ROOT, "docs", f) for f in ("python.md", "python-shared.md")] + [os.path.join(ROOT, "README.md")]


def blocks() -> list[str]:
    found: list[str] = []
    for doc in DOCS:
        with open(doc) as f:
            found += re.findall(r"```python\n(.*?)```", f.read(), re.S)
    return found


@pytest.mark.parametrize("index", range(len(blocks())))
def test_doc_example_runs(index: int, tmp_path) -> None:
    code = blocks()[index]
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, f"example {index} failed:\n{code}\n{r.stderr}"
    assert r.stdout.strip(), "an example prints what it did"
