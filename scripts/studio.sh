#!/usr/bin/env bash
# Sets up, builds, and opens MoEfy Studio on the bundled demo: the first time,
# `moefy demo` runs the whole pipeline on the bundled model into data/demo/
# (a few minutes, one progress line per stage); the studio then opens it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
BUILD_DIR="${MOEFY_BUILD_DIR:-build}"
if [ ! -f data/demo/recording/manifest.json ]; then
  "$BUILD_DIR/app/moefy" demo --out data/demo
fi
exec "$BUILD_DIR/app/moefy-studio" --demo "$@"
