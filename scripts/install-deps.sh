#!/usr/bin/env bash
# Installs every Debian package that troupe's build, tests and benchmarks need.
# Works on Debian 12 and 13: package names carry no compiler version (clang,
# libclang-rt-dev pick the release's own). Optional packages (the CAF peer of
# the benchmarks) are installed where the release has them and skipped
# otherwise; the build leaves out what needs them.
# Idempotent: packages already present are left alone; safe to run many times.
set -euo pipefail
REQUIRED=(
  build-essential g++ cmake ninja-build pkg-config
  libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev
  libtbb-dev libboost-dev libmsgpack-cxx-dev nlohmann-json3-dev
  clang libclang-rt-dev
  python3 python3-venv python3-dev
)
OPTIONAL=(libcaf-dev)
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
missing=()
for p in "${REQUIRED[@]}" "${OPTIONAL[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
$SUDO apt-get update -qq
want=()
for p in "${missing[@]}"; do
  if printf '%s\n' "${OPTIONAL[@]}" | grep -qx "$p" && ! apt-cache show "$p" >/dev/null 2>&1; then
    echo "install-deps: optional $p is not in this release; skipped"
    continue
  fi
  want+=("$p")
done
[ ${#want[@]} -eq 0 ] || $SUDO apt-get install -y -qq --no-install-recommends "${want[@]}"
echo "install-deps: installed ${want[*]:-nothing}"
