#!/usr/bin/env bash
# Python benchmarks: troupe beside ProcessPoolExecutor, multiprocessing.Pool,
# loky and Ray (bench/python/bench_executor.py; bench/README.md says what
# each case measures).
#
# Creates .venv-bench (python3 -m venv) at the repo root if it is missing,
# installs the peers and the build tools from PyPI into it, builds and
# installs troupe from this checkout (its own CMake build folder,
# build/bench-python/, so it never races the one of scripts/python-env.sh),
# then runs the benchmark; every argument goes to it.
# Usage: ./scripts/bench-python.sh                 (all cases, --runs 5)
#        ./scripts/bench-python.sh --quick         (smoke run: fewer items)
#        ./scripts/bench-python.sh --case tiny --case array --runs 7
#        BENCH_SKIP_INSTALL=1 ./scripts/bench-python.sh ...   (reuse the venv as it is)
# If Ray does not install (no wheel for this Python or platform), the other
# peers still run and the tables say that Ray was skipped.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/.venv-bench"
PY=${PYTHON:-python3}
PIP=(-m pip install -q --disable-pip-version-check)

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if [ "${BENCH_SKIP_INSTALL:-0}" != 1 ]; then
  "$VENV/bin/python" "${PIP[@]}" --upgrade pip
  "$VENV/bin/python" "${PIP[@]}" "scikit-build-core>=0.10" "nanobind>=2.0" "cloudpickle>=2.2" numpy loky psutil
  if ! "$VENV/bin/python" "${PIP[@]}" ray; then
    echo "bench-python: ray did not install; Ray is skipped (the other peers still run)" >&2
  fi
  "$VENV/bin/python" "${PIP[@]}" --no-build-isolation \
    -C build-dir="build/bench-python/{wheel_tag}" "$ROOT"
fi
exec "$VENV/bin/python" "$ROOT/bench/python/bench_executor.py" "$@"
