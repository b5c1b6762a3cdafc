#!/usr/bin/env bash
# Installs the Debian packages, builds troupe and runs the C++ showcase
# (examples/showcase.cpp), then builds and installs the Python package into
# .venv/ and runs the Python showcase (examples/showcase.py). Each exercises
# every layer that exists on real work and prints what it did, how fast, and
# beside the plain way of doing it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)" --target showcase
./build/examples/showcase "$@"
echo
echo "==================== Python ===================="
./scripts/python-env.sh
.venv/bin/python examples/showcase.py
