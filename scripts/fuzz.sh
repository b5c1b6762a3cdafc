#!/usr/bin/env bash
# Builds the libFuzzer target for the worker message decoder (fuzz/wire_fuzz.cpp,
# with ASan and UBSan, UB fatal) and runs it for FUZZ_SECONDS (default 30) from
# the seed corpus fuzz/corpus/. New inputs go to $BUILD/corpus (the committed
# seeds stay small); a crash leaves its input in $BUILD/artifacts/ and makes
# this script fail.
# Usage: ./scripts/fuzz.sh                  (build dir: build-fuzz/)
#        FUZZ_SECONDS=300 BUILD=build-x FUZZ_ARGS="-jobs=2 -workers=2" ./scripts/fuzz.sh
#        ./scripts/fuzz.sh build-fuzz/artifacts/crash-...   (replay one input)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-fuzz}
CXX=${FUZZ_CXX:-clang++}
mkdir -p "$BUILD/corpus" "$BUILD/artifacts"
# wire.cpp holds decode, Fd and fd_context; nothing else of troupe is linked.
"$CXX" -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Wall -Wextra -Iinclude fuzz/wire_fuzz.cpp src/proc/wire.cpp -lfmt -o "$BUILD/wire_fuzz"
if [ $# -gt 0 ]; then
  exec "$BUILD/wire_fuzz" "$@"
fi
"$BUILD/wire_fuzz" -max_total_time="${FUZZ_SECONDS:-30}" -max_len=4096 -timeout=10 \
  -artifact_prefix="$BUILD/artifacts/" -print_final_stats=1 ${FUZZ_ARGS:-} \
  "$BUILD/corpus" fuzz/corpus
