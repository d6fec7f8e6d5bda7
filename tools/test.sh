#!/usr/bin/env bash
# Fresh machine -> every test: installs dependencies, builds, runs ctest (unit, oracle,
# integration). GPU tests skip themselves, loudly, when no device is present.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cd build
ctest --output-on-failure -j"$(nproc)" "$@"
