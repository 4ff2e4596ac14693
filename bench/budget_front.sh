#!/bin/bash
# Quality against FFN FLOPs on the bundled model (issue 17): plain MoEfication,
# a shared expert (split --shared auto), the dynamic-k router and the
# top-k-activation bound, held-out Brown, seed 0. Prints one row per result:
# fraction (k/E), ffn_flops_fraction (router and shared expert included), perplexity,
# top-1 agreement with dense. About 5 minutes on 2 cores.
#   bash bench/budget_front.sh        (MOEFY_FRONT_DIR: an empty or new scratch folder; default a fresh mktemp folder)
set -e
cd "$(dirname "$0")/.."
B=build/app/moefy
M=data/models/brown-relu; T=data/corpus/brown/train; H=data/corpus/brown/heldout; W="${MOEFY_FRONT_DIR:-}"
if [ -z "$W" ]; then W=$(mktemp -d /tmp/moefy-front.XXXXXX); fi
if [ -e "$W" ] && [ -n "$(ls -A "$W")" ]; then echo "budget_front.sh: $W is not empty; give an empty or new MOEFY_FRONT_DIR" >&2; exit 2; fi
mkdir -p "$W"; echo "budget_front.sh: scratch folder $W"
$B record $M $T --out $W/rec --tokens 32768 --seq-len 128 --samples 4096 --shuffle --quiet
$B split $W/rec --method coact --experts 32 --out $W/p0 --quiet
$B split $W/rec --method coact --experts 32 --shared auto --out $W/ps --quiet
$B route $M $W/rec $W/p0 --router mlp --out $W/r0 --quiet
$B route $M $W/rec $W/ps --router mlp --out $W/rs --quiet
$B route $M $W/rec $W/ps --router dynamic-k --top-k 12 --tau 0.8 --out $W/rd --quiet
$B eval $M $H --split all --tokens 4096 --seq-len 128 --partition $W/p0 --router $W/r0 --sweep 0.125,0.25,0.5 --bound topk-act --out $W/e0 --quiet
$B eval $M $H --split all --tokens 4096 --seq-len 128 --partition $W/ps --router $W/rs --sweep 0.0625,0.09375,0.125,0.15625,0.375 --out $W/es --quiet
$B eval $M $H --split all --tokens 4096 --seq-len 128 --partition $W/ps --router $W/rd --out $W/ed --quiet
W="$W" /usr/bin/python3 - <<'PY'
import json, os
W = os.environ["W"]
print("run      method     k/E      FLOPs   ppl      top-1   mean k per layer")
for n in ["e0", "es", "ed"]:
    j = json.load(open(f"{W}/{n}/eval.json"))
    for r in j["results"]:
        t1 = r.get("top1_agreement")
        print(f"{n:8s} {r.get('router', '?'):10s} {r.get('fraction', float('nan')):.4f}  {r.get('ffn_flops_fraction', float('nan')):.4f}  "
              f"{r.get('perplexity', float('nan')):8.2f} {t1 if t1 is None else round(t1, 4)}  {r.get('mean_k', '')}")
PY
