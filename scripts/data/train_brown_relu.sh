#!/usr/bin/env bash
# Reproduces data/models/brown-relu/ (the shipped default model) from
# data/corpus/brown/. Takes about 50 minutes on 2 shared cores.
# usage: scripts/data/train_brown_relu.sh [BUILD_DIR] [WORK_DIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${1:-$root/build}"
work="${2:-$root/out/brown-relu-train}"
moefy="$build/app/moefy"
mkdir -p "$(dirname "$work")"
"$moefy" train-tokenizer "$root/data/corpus/brown/train" --vocab 8192 --out "$work.tokenizer.json"
# One thread: on a shared 2-core machine, OpenMP threads spinning on busy cores
# made training 2-3x slower (measured 600 vs 233 tokens/s).
MOEFY_THREADS=1 "$moefy" train "$root/data/corpus/brown/train" \
  --heldout "$root/data/corpus/brown/heldout" \
  --config "$root/scripts/data/brown-relu.config.json" \
  --tokenizer "$work.tokenizer.json" \
  --out "$work" --force \
  --steps 700 --seed 0 --batch 16 --seq-len 128 --lr 2e-3 \
  --log-every 10 --eval-every 100 --eval-tokens 8192 --checkpoint-every 100 --dtype F16
out="$root/data/models/brown-relu"
mkdir -p "$out"
cp "$work/config.json" "$work/model.safetensors" "$work/tokenizer.json" "$work/training_log.jsonl" "$work/training.json" "$out/"
echo "copied the model to $out"
