#!/usr/bin/env bash
# Installs the Debian packages, builds troupe and runs every test: ctest (all
# labels but `nightly`, the 10 M-input fuzz runs), then the Python package's tests (pytest over tests/python, stress
# included) in .venv.
# Usage: ./scripts/test.sh            (build dir: build/)
#        BUILD=build-x CMAKE_ARGS="..." CTEST_ARGS="-L concurrency" PYTHON_TESTS=0 ./scripts/test.sh
#        PYTEST_ARGS='-m "not stress"' ./scripts/test.sh     (the fast Python set)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
BUILD=${BUILD:-build}
cmake -S . -B "$BUILD" -G Ninja ${CMAKE_ARGS:-}
cmake --build "$BUILD" -j "$(nproc)"
(cd "$BUILD" && ctest --output-on-failure -j "$(nproc)" ${CTEST_ARGS:--LE nightly})
if [ "${PYTHON_TESTS:-1}" = 1 ]; then
  ./scripts/python-env.sh
  eval ".venv/bin/python -m pytest tests/python -ra ${PYTEST_ARGS:-}"
fi
