#!/usr/bin/env bash
# Checks clang-format (.clang-format) on the C++ lines changed since the merge
# base with the main line: exit 1 and the diff to apply if any changed line is
# not formatted. Only changed lines are checked, so touching a file does not
# oblige anyone to reformat the lines around the change (which would collide
# with other branches); the formatter is enforced from here on.
#   usage: scripts/check-format.sh [BASE_REF]   (default: $MOEFY_FORMAT_BASE, origin/main, main)
#   fix:   git diff -U0 -M --no-color $(git merge-base HEAD main) -- '*.cpp' '*.h' | clang-format-diff -p1 -i
set -euo pipefail
cd "$(dirname "$0")/.."
DIFF_TOOL=$(command -v clang-format-diff || command -v clang-format-diff-14 || true)
[ -n "$DIFF_TOOL" ] || { echo "check-format: clang-format-diff not found (apt-get install clang-format)"; exit 1; }
base_ref="${1:-${MOEFY_FORMAT_BASE:-}}"
if [ -z "$base_ref" ]; then
  for r in origin/main main; do
    if git rev-parse -q --verify "$r^{commit}" >/dev/null; then base_ref=$r; break; fi
  done
fi
[ -n "$base_ref" ] || { echo "check-format: no base ref (origin/main or main); give one"; exit 1; }
base=$(git merge-base HEAD "$base_ref")
files=$(git diff --name-only --diff-filter=ACMR "$base" -- '*.cpp' '*.h' | grep -v '^analysis/text/unicode_tables.inc' || true)
if [ -z "$files" ]; then
  echo "check-format: no C++ changes since $(git rev-parse --short "$base") ($base_ref)"
  exit 0
fi
# -M with the glob pathspec (not the file list) keeps renames as renames: a
# moved file's unchanged lines are not changed lines.
out=$(git diff -U0 -M --no-color "$base" -- '*.cpp' '*.h' | "$DIFF_TOOL" -p1 -style=file)
if [ -n "$out" ]; then
  echo "$out"
  echo "check-format: the changed lines above are not clang-formatted (see the fix command in $0)"
  exit 1
fi
echo "check-format: $(echo "$files" | wc -w) changed C++ files formatted (base $(git rev-parse --short "$base"), $base_ref)"
