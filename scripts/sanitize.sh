#!/usr/bin/env bash
# Builds MoEfy Studio with AddressSanitizer + UndefinedBehaviorSanitizer
# (-DMOEFY_SANITIZE=ON) in its own build folder and runs tests under them.
#
#   bash scripts/sanitize.sh              # the whole suite, the studio's tests included
#   bash scripts/sanitize.sh -L core      # the core tests only (fast)
#   bash scripts/sanitize.sh -R reader    # any ctest selection
#
# Arguments are passed to ctest (default: none, the whole suite). The build folder is
# build-sanitize (MOEFY_SANITIZE_BUILD_DIR overrides it); MOEFY_JOBS sets the
# build parallelism (default: all cores). Exits non-zero on any sanitizer
# report: halt_on_error makes ASan/UBSan abort the test that triggers it.
#
# Notes: libtorch is not instrumented (Debian's build), so ASan checks our code
# and the memory it allocates; detect_leaks is off because libtorch's and
# OpenMP's thread pools keep allocations alive until exit by design, and
# LeakSanitizer reports them as leaks. Qt and Debian's libraries are not
# instrumented either: the studio's tests check our views' code. The fuzz
# targets' regression runs are core tests and run here too. Cold on 2 cores the
# build takes about an hour; MOEFY_SANITIZE_GUI=OFF leaves the studio out.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${MOEFY_SANITIZE_BUILD_DIR:-build-sanitize}"
JOBS="${MOEFY_JOBS:-$(nproc)}"
start=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOEFY_SANITIZE=ON \
  -DMOEFY_BUILD_GUI="${MOEFY_SANITIZE_GUI:-ON}" -DMOEFY_BUILD_BENCH=OFF >/dev/null
cmake --build "$BUILD" -j "$JOBS"
built=$(date +%s)
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
args=("$@")
cd "$BUILD"
status=0
ctest --output-on-failure -j "$JOBS" ${args[@]+"${args[@]}"} || status=$?
end=$(date +%s)
echo "sanitize: build $((built - start)) s, tests $((end - built)) s (ctest ${args[*]:-whole suite}), exit $status"
exit $status
