#!/usr/bin/env bash
# Builds a libFuzzer target (with ASan and UBSan, UB fatal) and runs it for
# FUZZ_SECONDS (default 30), or FUZZ_RUNS inputs, from its seed corpus:
#   FUZZ_TARGET=wire (default): the worker message decoder (fuzz/wire_fuzz.cpp)
#   FUZZ_TARGET=heap: a shared heap with a valid header and a corrupted body,
#                     opened, read and written in transactions (fuzz/heap_fuzz.cpp)
# New inputs go to $BUILD/<target>-corpus; the committed seeds are hand-made
# inputs, past crashes and hangs (named for the bug), and for the heap what
# long runs reached (merged with -merge=1, named by hash; a few KB). Every
# seed runs first, each time. A crash or a hang (-timeout) leaves its input
# in $BUILD/<target>-artifacts/ and makes this script fail.
# Usage: ./scripts/fuzz.sh                  (build dir: build-fuzz/)
#        FUZZ_TARGET=heap FUZZ_SECONDS=300 ./scripts/fuzz.sh
#        FUZZ_RUNS=10000000 FUZZ_ARGS="-jobs=2 -workers=2" ./scripts/fuzz.sh
#        ./scripts/fuzz.sh build-fuzz/wire-artifacts/crash-...   (replay one input)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-fuzz}
CXX=${FUZZ_CXX:-clang++}
TARGET=${FUZZ_TARGET:-wire}
FLAGS=(-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -Wall -Wextra -Iinclude -Isrc)
case "$TARGET" in
  wire)  # wire.cpp holds decode and fd_context, fd.cpp Fd; nothing else of troupe is linked.
    SOURCES=(fuzz/wire_fuzz.cpp src/proc/wire.cpp src/proc/fd.cpp); MAXLEN=4096; SEEDS=(fuzz/corpus) ;;
  heap)  # the shared-objects layer (every source of src/shm), Spin and futexes, the trace recorder.
    SOURCES=(fuzz/heap_fuzz.cpp src/shm/*.cpp src/sched/platform.cpp src/sched/trace.cpp)
    MAXLEN=384; SEEDS=(fuzz/heap-corpus) ;;
  *) echo "fuzz.sh: FUZZ_TARGET is wire or heap, not $TARGET" >&2; exit 2 ;;
esac
mkdir -p "$BUILD/$TARGET-corpus" "$BUILD/$TARGET-artifacts"
"$CXX" "${FLAGS[@]}" "${SOURCES[@]}" -lfmt -o "$BUILD/${TARGET}_fuzz"
if [ $# -gt 0 ]; then
  exec "$BUILD/${TARGET}_fuzz" "$@"
fi
LIMIT=(-max_total_time="${FUZZ_SECONDS:-30}")
[ -n "${FUZZ_RUNS:-}" ] && LIMIT=(-runs="$FUZZ_RUNS")
"$BUILD/${TARGET}_fuzz" "${LIMIT[@]}" -max_len="$MAXLEN" -timeout=10 \
  -artifact_prefix="$BUILD/$TARGET-artifacts/" -print_final_stats=1 ${FUZZ_ARGS:-} \
  "$BUILD/$TARGET-corpus" "${SEEDS[@]}"
