#!/usr/bin/env bash
# Installs the Debian packages, builds troupe and runs every test (all labels).
# Usage: ./scripts/test.sh            (build dir: build/)
#        BUILD=build-x CMAKE_ARGS="..." CTEST_ARGS="-L concurrency" ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
BUILD=${BUILD:-build}
cmake -S . -B "$BUILD" -G Ninja ${CMAKE_ARGS:-}
cmake --build "$BUILD" -j "$(nproc)"
cd "$BUILD"
ctest --output-on-failure -j "$(nproc)" ${CTEST_ARGS:-}
