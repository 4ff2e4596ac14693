#!/usr/bin/env bash
# Sets up, builds, and runs the whole test suite with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
cd "${MOEFY_BUILD_DIR:-build}"
ctest --output-on-failure -j 2 "$@"
