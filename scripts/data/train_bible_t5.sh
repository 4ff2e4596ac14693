#!/usr/bin/env bash
# Reproduces data/models/bible-t5/ (the bundled translation model, English ->
# Spanish, T5 v1.0 style with ReLU FFNs) from data/corpus/bible-en-es/.
# Takes about 55 minutes on 2 shared cores, training on one (STEPS=... shortens it).
# usage: [STEPS=N] scripts/data/train_bible_t5.sh [BUILD_DIR] [WORK_DIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${1:-$root/build}"
work="${2:-$root/out/bible-t5-train}"
steps="${STEPS:-2700}"
moefy="$build/app/moefy"
corpus="$root/data/corpus/bible-en-es"
mkdir -p "$(dirname "$work")"
# One tokenizer for both languages, T5's special ids (0 <pad>, 1 </s>, 2 <unk>).
"$moefy" train-tokenizer "$corpus/train.tsv" --style t5 --vocab 8000 --out "$work.tokenizer.json"
# One thread: on a shared 2-core machine, OpenMP threads spinning on busy cores
# made training 2-3x slower (see train_brown_relu.sh).
MOEFY_THREADS="${MOEFY_THREADS:-1}" "$moefy" train "$corpus/train.tsv" \
  --heldout "$corpus/valid.tsv" \
  --config "$root/scripts/data/bible-t5.config.json" \
  --tokenizer "$work.tokenizer.json" \
  --out "$work" --force \
  --steps "$steps" --seed 0 --batch 32 --seq-len 64 --target-len 64 --lr 2e-3 --warmup 100 \
  --log-every 10 --eval-every 250 --eval-tokens 8192 --checkpoint-every 100 --dtype F16
out="$root/data/models/bible-t5"
mkdir -p "$out"
cp "$work/config.json" "$work/model.safetensors" "$work/tokenizer.json" "$work/training_log.jsonl" "$work/training.json" "$out/"
echo "copied the model to $out"
