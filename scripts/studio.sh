#!/usr/bin/env bash
# Sets up, builds, and opens MoEfy Studio on the bundled demo workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
exec "${MOEFY_BUILD_DIR:-build}/app/moefy-studio" "$@"
