#!/usr/bin/env bash
# Rebuilds data/corpus/bible-en-es/ (World English Bible -> Reina-Valera 1909,
# verse-aligned) from the Debian SWORD modules. Installs diatheke and the two
# modules first when they are missing (scripts/setup.sh --corpus: an optional
# extra, never part of the default setup or CI). Deterministic: the same
# packages and seed give byte-identical files. Arguments go to the .py
# (--out DIR, --seed N, --fraction F).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if ! command -v diatheke >/dev/null 2>&1 ||
  ! diatheke -b system -k modulelist 2>/dev/null | grep -q '^engWEB2015eb ' ||
  ! diatheke -b system -k modulelist 2>/dev/null | grep -q '^spaRV1909eb '; then
  bash "$root/scripts/setup.sh" --corpus
fi
exec python3 "$here/build_bible_corpus.py" "$@"
