#!/usr/bin/env bash
# Installs the Debian packages, builds troupe and runs the showcase program,
# which exercises every layer that exists on real work and prints what it did.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)" --target showcase
./build/examples/showcase "$@"
