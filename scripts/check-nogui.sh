#!/usr/bin/env bash
# Builds the core and the CLI with -DMOEFY_BUILD_GUI=OFF in a separate build
# folder and checks (readelf/ldd) that `moefy` links no Qt library: the core and CLI
# must build and run on a headless node that has libtorch and nothing of Qt.
# Reuses ccache (the same compiler flags as the main build), so on a warm cache
# it mostly links. Prints the time it took.
#   usage: scripts/check-nogui.sh [CMAKE_ARGS...]   (build folder: $MOEFY_NOGUI_BUILD_DIR, default build-nogui;
#          e.g. -DMOEFY_SHARED_PCH=... on a developer machine so that ccache serves the main build's objects)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${MOEFY_NOGUI_BUILD_DIR:-build-nogui}"
start=$(date +%s)
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOEFY_BUILD_GUI=OFF -DMOEFY_BUILD_TESTS=OFF \
  -DMOEFY_BUILD_BENCH=OFF "$@" >/dev/null
cmake --build "$dir" -j "${MOEFY_JOBS:-$(nproc)}" --target moefy
# Two checks. (1) No Qt library among moefy's own NEEDED entries: nothing we
# link pulls Qt in. (2) No Qt6 (the version the studio uses) anywhere in the
# resolved closure. Qt5 may appear in the closure: Debian's libtorch_cpu needs
# libopencv_highgui, which needs Qt5 -- a packaging fact of libtorch we cannot
# change, and not a link of ours.
needed=$(readelf -d "$dir/app/moefy" | grep NEEDED | grep -i 'libqt' || true)
qt6=$(ldd "$dir/app/moefy" | grep -i 'libqt6' || true)
if [ -n "$needed$qt6" ]; then
  echo "check-nogui: $dir/app/moefy links Qt:"
  echo "$needed$qt6"
  exit 1
fi
"$dir/app/moefy" --version >/dev/null
echo "check-nogui: moefy built without the GUI links no Qt ($(ldd "$dir/app/moefy" | wc -l) libraries; $(($(date +%s) - start)) s)"
