#!/usr/bin/env bash
# Runs the Python package's tests (the fast set) with the extension module and
# troupe's C++ libraries built with ThreadSanitizer: .venv-tsan/ gets a build
# of the package (build/python-tsan/), the interpreter loads the TSan runtime
# first (LD_PRELOAD; CPython itself is not instrumented, its locks are seen
# through the intercepted pthread calls), and worker processes inherit it.
# Any race report fails the run.
# Usage: ./scripts/python-tsan.sh [pytest args]      (after ./scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-tsan/bin/python ] || "$PY" -m venv .venv-tsan
.venv-tsan/bin/python -m pip install -q --disable-pip-version-check \
  "scikit-build-core>=0.10" "nanobind>=2.0" "cloudpickle>=2.2" pytest pytest-timeout numpy
.venv-tsan/bin/python -m pip install -q --disable-pip-version-check --no-build-isolation \
  -C cmake.define.TROUPE_SANITIZE=thread -C build-dir=build/python-tsan \
  -C cmake.build-type=RelWithDebInfo .
TSAN_RT=$(gcc -print-file-name=libtsan.so.2)
[ -f "$TSAN_RT" ] || TSAN_RT=$(gcc -print-file-name=libtsan.so)
log=$(mktemp)
status=0
LD_PRELOAD="$TSAN_RT" \
  TSAN_OPTIONS="report_signal_unsafe=0 halt_on_error=0 handle_segv=0 handle_abort=0 suppressions=$PWD/tests/tsan.supp" \
  .venv-tsan/bin/python -m pytest tests/python -m "not stress" -p no:cacheprovider -ra "$@" 2>&1 | tee "$log" || status=$?
races=$(grep -c "WARNING: ThreadSanitizer" "$log" || true)
rm -f "$log"
if [ "$races" -gt 0 ]; then
  echo "python-tsan: $races ThreadSanitizer report(s)"
  exit 1
fi
exit "$status"
