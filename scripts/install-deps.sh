#!/usr/bin/env bash
# Installs every Debian package that troupe's build, tests and benchmarks need.
# Idempotent: packages already present are left alone; safe to run many times.
set -euo pipefail
PKGS=(
  build-essential g++ cmake ninja-build pkg-config
  libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev
  libcaf-dev libtbb-dev libboost-dev
  libmsgpack-cxx-dev
  clang-14 libclang-rt-14-dev
  python3 python3-pytest pybind11-dev
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${missing[*]}"
