#!/usr/bin/env bash
# Writes a PNG screenshot of each main view of MoEfy Studio into docs/screenshots/.
#
#   bash scripts/screenshots.sh [WORKSPACE_DIR] [BUILD_DIR]
#
# WORKSPACE_DIR defaults to the bundled demo workspace (data/demo-workspace) when
# it exists, else a synthetic one made by scripts/gui/make_fake_workspace.py.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${2:-$root/build}"
ws="${1:-}"
if [[ -z "$ws" ]]; then
  if [[ -f "$root/data/demo-workspace/workspace.json" ]]; then
    ws="$root/data/demo-workspace"
  else
    ws="$build/screenshots-workspace"
    [[ -f "$ws/workspace.json" ]] || /usr/bin/python3 "$root/scripts/gui/make_fake_workspace.py" "$ws" >/dev/null
  fi
fi
out="$root/docs/screenshots"
mkdir -p "$out"
# A throwaway settings location so the screenshots do not depend on (or change) the user's layout.
export XDG_CONFIG_HOME="$(mktemp -d)"
export QT_QPA_PLATFORM=offscreen
"$build/app/moefy-studio" "$ws" --screenshots "$out" --size 1400x900
rm -rf "$XDG_CONFIG_HOME"
