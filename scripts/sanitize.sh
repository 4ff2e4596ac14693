#!/usr/bin/env bash
# Builds MoEfy Studio with AddressSanitizer + UndefinedBehaviorSanitizer
# (-DMOEFY_SANITIZE=ON) in its own build folder and runs tests under them.
#
#   bash scripts/sanitize.sh              # the core tests (ctest -L core)
#   bash scripts/sanitize.sh -L 'core|numeric|e2e'   # more labels (slow)
#   bash scripts/sanitize.sh -R reader    # any ctest selection
#
# Arguments are passed to ctest (default: -L core). The build folder is
# build-sanitize (MOEFY_SANITIZE_BUILD_DIR overrides it); MOEFY_JOBS sets the
# build parallelism (default: all cores). Exits non-zero on any sanitizer
# report: halt_on_error makes ASan/UBSan abort the test that triggers it.
#
# Notes: libtorch is not instrumented (Debian's build), so ASan checks our code
# and the memory it allocates; detect_leaks is off because libtorch's and
# OpenMP's thread pools keep allocations alive until exit by design, and
# LeakSanitizer reports them as leaks. The GUI is left out (Qt's plugins under
# ASan are slow and not our code); the fuzz targets' regression runs are core
# tests and run here too.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${MOEFY_SANITIZE_BUILD_DIR:-build-sanitize}"
JOBS="${MOEFY_JOBS:-$(nproc)}"
start=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOEFY_SANITIZE=ON \
  -DMOEFY_BUILD_GUI=OFF -DMOEFY_BUILD_BENCH=OFF >/dev/null
cmake --build "$BUILD" -j "$JOBS"
built=$(date +%s)
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
args=("$@")
if ((${#args[@]} == 0)); then args=(-L core); fi
cd "$BUILD"
status=0
ctest --output-on-failure -j "$JOBS" "${args[@]}" || status=$?
end=$(date +%s)
echo "sanitize: build $((built - start)) s, tests $((end - built)) s (ctest ${args[*]}), exit $status"
exit $status
