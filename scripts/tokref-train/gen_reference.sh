#!/usr/bin/env bash
# Regenerates the checked-in BPE trainer fixtures in tests/data/train/:
#   tokenizer.json  `moefy train-tokenizer` on the Brown held-out split, vocab 1000
#   texts.json      the test texts (kept by hand)
#   ref_ids.json    their ids from the Hugging Face tokenizers JS implementation
# usage: scripts/tokref-train/gen_reference.sh [BUILD_DIR]   (needs node; runs npm install here)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${1:-$root/build}"
fx="$root/tests/data/train"
(cd "$here" && npm install --no-audit --no-fund --silent)
"$build/app/moefy" train-tokenizer "$root/data/corpus/brown/heldout" --vocab 1000 --out "$fx/tokenizer.json" --quiet
node "$here/encode.mjs" "$fx/tokenizer.json" "$fx/texts.json" > "$fx/ref_ids.json"
echo "wrote $fx/tokenizer.json and $fx/ref_ids.json"
