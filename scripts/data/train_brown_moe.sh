#!/usr/bin/env bash
# Trains data/models/brown-moe/ (the shipped native MoE model: Mixtral
# architecture, 4 layers, d_model 256, 8 experts of d_ff 256, top-2) from
# data/corpus/brown/ with the bundled tokenizer of brown-relu, so that the
# two shipped models share vocabulary and data.
# usage: STEPS=N scripts/data/train_brown_moe.sh [BUILD_DIR] [WORK_DIR]
# STEPS: size it to the time budget from a short timing run (docs/train.md,
# "The shipped MoE model"): STEPS = seconds x tokens_per_s / (16 x 128).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${1:-$root/build}"
work="${2:-$root/out/brown-moe-train}"
steps="${STEPS:?set STEPS (optimiser steps; see docs/train.md)}"
moefy="$build/app/moefy"
mkdir -p "$(dirname "$work")"
warmup=$(( steps / 20 > 1 ? steps / 20 : 1 ))
# One thread: on a shared 2-core machine, OpenMP threads spinning on busy cores
# made training 2-3x slower (measured for brown-relu).
MOEFY_THREADS=1 "$moefy" train "$root/data/corpus/brown/train" \
  --heldout "$root/data/corpus/brown/heldout" \
  --config "$root/scripts/data/brown-moe.config.json" \
  --tokenizer "$root/data/models/brown-relu/tokenizer.json" \
  --out "$work" --force \
  --steps "$steps" --warmup "$warmup" --seed 0 --batch 16 --seq-len 128 --lr 2e-3 \
  --z-loss-coef 0.001 \
  --log-every 10 --eval-every 100 --eval-tokens 8192 --checkpoint-every 100 --dtype F16
out="$root/data/models/brown-moe"
mkdir -p "$out"
cp "$work/config.json" "$work/model.safetensors" "$work/tokenizer.json" "$work/training_log.jsonl" "$work/training.json" "$out/"
echo "copied the model to $out"
