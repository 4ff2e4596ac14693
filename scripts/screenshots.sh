#!/usr/bin/env bash
# Writes a PNG screenshot of each main view of MoEfy Studio into docs/screenshots/
# (1400x900), docs/screenshots/1366x768/ and docs/screenshots/1920x1080/.
#
#   bash scripts/screenshots.sh [WORKSPACE_DIR] [BUILD_DIR]
#
# Without WORKSPACE_DIR the pictures show the real demo: the output of
# `moefy demo --out data/demo` (what scripts/studio.sh creates), generated here
# first when it is missing (MOEFY_DEMO_QUICK=1 runs `moefy demo --quick`), and
# opened exactly as `moefy-studio --demo` opens it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${2:-$root/build}"
ws="${1:-}"
out="$root/docs/screenshots"
mkdir -p "$out"
# Throwaway settings and app-data locations, so the screenshots neither depend
# on nor change the user's layout, recent workspaces or demo workspace.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export XDG_CONFIG_HOME="$tmp/config" XDG_DATA_HOME="$tmp/data"
export QT_QPA_PLATFORM=offscreen
if [[ -n "$ws" ]]; then
  args=("$ws")
else
  if [[ ! -f "$root/data/demo-workspace/workspace.json" && ! -f "$root/data/demo/recording/manifest.json" ]]; then
    echo "screenshots: no demo output in data/demo; running moefy demo first" >&2
    "$build/app/moefy" demo --out "$root/data/demo" ${MOEFY_DEMO_QUICK:+--quick} --force
  fi
  export MOEFY_DATA_DIR="$root/data"
  args=(--demo)
fi
"$build/app/moefy-studio" "${args[@]}" --screenshots "$out" --size 1400x900
# The smallest common laptop screen and a full-HD one: the layout must work on both.
for size in 1366x768 1920x1080; do
  "$build/app/moefy-studio" "${args[@]}" --screenshots "$out/$size" --size "$size"
done
# Keep the committed PNGs small: 256-colour palettes when pngquant is there
# (Debian package pngquant); the plots' colours survive at this quality.
if command -v pngquant >/dev/null; then
  pngquant --force --skip-if-larger --quality 85-100 --speed 1 --ext .png "$out"/*.png "$out"/*/*.png || true
fi
