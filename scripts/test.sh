#!/usr/bin/env bash
# Sets up, builds, and runs the whole test suite with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
t0=$(date +%s)
bash scripts/build.sh
t1=$(date +%s)
cd "${MOEFY_BUILD_DIR:-build}"
status=0
ctest --output-on-failure -j 2 "$@" || status=$?
echo "test.sh: build $((t1 - t0)) s, tests $(($(date +%s) - t1)) s"
exit $status
