#!/usr/bin/env bash
# Creates .venv (python3 -m venv) if it is missing, installs the Python build
# and test tools from PyPI into it, then builds and installs the troupe
# package (pip install ., CMake through scikit-build-core; the build folder
# build/python/ is kept, so a second run rebuilds only what changed).
# Usage: ./scripts/python-env.sh          (after ./scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check \
  "scikit-build-core>=0.10" "nanobind>=2.0" "cloudpickle>=2.2" \
  pytest pytest-timeout numpy mypy
.venv/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation .
echo "python-env: troupe $(.venv/bin/python -c 'import troupe; print(troupe.__version__)') installed in .venv ($(.venv/bin/python --version))"
