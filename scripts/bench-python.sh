#!/usr/bin/env bash
# Python benchmarks: troupe beside ProcessPoolExecutor, multiprocessing.Pool,
# loky and Ray (bench/python/bench_executor.py; bench/README.md says what
# each case measures); with --shared, troupe.shm.Dict and troupe.Queue beside
# multiprocessing's Manager and Queue, UltraDict, shared-memory-dict and
# faster-fifo (bench/python/bench_shared.py) instead.
#
# Creates .venv-bench (python3 -m venv) at the repo root if it is missing,
# installs the peers and the build tools from PyPI into it, builds and
# installs troupe from this checkout's working tree (its own CMake build
# folder, build/bench-python/, so it never races the one of
# scripts/python-env.sh), then runs the benchmark; every argument goes to it.
# Usage: ./scripts/bench-python.sh                 (all cases, --runs 5)
#        ./scripts/bench-python.sh --quick         (smoke run: fewer items)
#        ./scripts/bench-python.sh --case tiny --case array --runs 7
#        BENCH_SKIP_INSTALL=1 ./scripts/bench-python.sh ...   (reuse the venv as it is)
#        BENCH_FROM_HEAD=1 ./scripts/bench-python.sh         (troupe as committed: git HEAD)
#        BENCH_VENV=/tmp/v ./scripts/bench-python.sh --quick  (another venv folder)
#        ./scripts/bench-python.sh --shared [--quick] [--case incr|read_mostly|queue]...
#                                         (the shared-objects benchmark; --shared may stand anywhere)
# If Ray does not install (no wheel for this Python or platform), the other
# peers still run and the tables say that Ray was skipped; likewise each of
# UltraDict, shared-memory-dict and faster-fifo for --shared.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROG="$ROOT/bench/python/bench_executor.py"
ARGS=()
for a in "$@"; do
  if [ "$a" = --shared ]; then PROG="$ROOT/bench/python/bench_shared.py"; else ARGS+=("$a"); fi
done
VENV=${BENCH_VENV:-"$ROOT/.venv-bench"}
PY=${PYTHON:-python3}
PIP=(-m pip install -q --disable-pip-version-check)

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
if [ "${BENCH_SKIP_INSTALL:-0}" != 1 ]; then
  "$VENV/bin/python" "${PIP[@]}" --upgrade pip
  "$VENV/bin/python" "${PIP[@]}" "scikit-build-core>=0.10" "nanobind>=2.0" "cloudpickle>=2.2" numpy loky psutil
  if [ "$PROG" = "$ROOT/bench/python/bench_shared.py" ]; then
    # each on its own: one that does not install is skipped, the others run
    # (atomics: UltraDict's shared_lock=True needs it)
    for peer in UltraDict atomics shared-memory-dict faster-fifo; do
      if ! "$VENV/bin/python" "${PIP[@]}" "$peer"; then
        echo "bench-python: $peer did not install; the benchmark skips it (the other peers still run)" >&2
      fi
    done
  elif ! "$VENV/bin/python" "${PIP[@]}" ray; then
    echo "bench-python: ray did not install; Ray is skipped (the other peers still run)" >&2
  fi
  SRC="$ROOT" BUILD_DIR="$ROOT/build/bench-python/worktree"
  DESC="the working tree at HEAD $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  if [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ]; then DESC="$DESC with uncommitted changes"; fi
  if [ "${BENCH_FROM_HEAD:-0}" = 1 ]; then
    # the committed HEAD, not the working tree (which may hold someone's
    # half-done edits): exported to build/bench-python/head-src
    SRC="$ROOT/build/bench-python/head-src" BUILD_DIR="$ROOT/build/bench-python/head"
    HEAD=$(git -C "$ROOT" rev-parse HEAD)
    if [ "$(cat "$BUILD_DIR/.head" 2>/dev/null)" != "$HEAD" ]; then
      rm -rf "$SRC" "$BUILD_DIR"
      mkdir -p "$SRC" "$BUILD_DIR"
      git -C "$ROOT" archive HEAD | tar -x -C "$SRC"
      echo "$HEAD" > "$BUILD_DIR/.head"
    fi
    DESC="git HEAD $(git -C "$ROOT" rev-parse --short HEAD)"
  fi
  if ! "$VENV/bin/python" "${PIP[@]}" --no-build-isolation \
      -C build-dir="$BUILD_DIR/{wheel_tag}" "$SRC"; then
    echo "bench-python: troupe did not build from $SRC; BENCH_FROM_HEAD=1 builds the committed HEAD," \
      "BENCH_SKIP_INSTALL=1 runs the troupe already in $VENV" >&2
    exit 1
  fi
  echo "$DESC" > "$VENV/troupe-source.txt"
fi
echo "bench-python: troupe from $("$VENV/bin/python" -c 'import troupe, os; print(os.path.dirname(troupe.__file__))')" >&2
exec "$VENV/bin/python" "$PROG" ${ARGS[@]+"${ARGS[@]}"}
