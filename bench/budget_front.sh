#!/bin/bash
# Quality against FFN FLOPs on the bundled model (issue 17): plain MoEfication,
# per-layer budgets (route --budget --allocate activity), a shared expert (split
# --shared auto), the dynamic-k router and the
# top-k-activation bound at 12.5, 25 and 50 % of the dense FFN FLOPs (router and
# shared expert included), held-out Brown, seed 0, through `moefy front`
# (docs/moe.md "The front"). Prints its table: per method and budget the measured
# FLOP fraction, k/E, mean k, perplexity and top-1 agreement, then the best method
# per budget and its gain over plain. About 6 minutes on 2 cores. Measured:
# docs/moe.md "The front on the bundled model".
#   bash bench/budget_front.sh        (MOEFY_FRONT_DIR: a new or empty folder; default a fresh mktemp name)
set -e
cd "$(dirname "$0")/.."
B=build/app/moefy
W="${MOEFY_FRONT_DIR:-}"
if [ -z "$W" ]; then W=$(mktemp -d /tmp/moefy-front.XXXXXX); fi
echo "budget_front.sh: front folder $W"
$B front data/models/brown-relu data/corpus/brown/train data/corpus/brown/heldout --out "$W" \
  --experts 32 --tokens 32768 --samples 4096 --eval-tokens 4096 --seq-len 128 --split all --tau 0.8 --seed 0 --quiet
