#!/bin/bash
# Trains two small SentencePiece models with Debian's spm_train (package
# `sentencepiece`, libsentencepiece 0.1.97) on the parity text set, and encodes
# every line of the text set (and of the invalid-UTF-8 documents) with
# spm_encode, the reference for tests/numeric/test_sentencepiece_model.cpp:
#   spm_bpe.model      BPE, identity normalization, byte_fallback, split digits
#                      (Llama-2 style), no extra-whitespace removal
#   spm_unigram.model  Unigram, nmt_nfkc charsmap, user-defined symbols
# Outputs go to tests/data/tokenizer/ (spm_*.model, spm_*_ids.txt.gz).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../../tests/data/tokenizer"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
gzip -dc "$out/textset.txt.gz" | tr '\0' '\n' > "$tmp/lines.txt"
# Invalid documents: one per line (NUL -> newline; they contain no newline bytes
# other than their own, which stay line breaks).
tr '\0' '\n' < "$out/textset.invalid.bin" > "$tmp/invalid.txt"
common=(--input="$tmp/lines.txt" --vocab_size=8000 --character_coverage=0.98 --num_threads=1
        --input_sentence_size=0 --max_sentence_length=100000 --minloglevel=2)
spm_train "${common[@]}" --model_prefix="$tmp/spm_bpe" --model_type=bpe --byte_fallback=true \
  --split_digits=true --normalization_rule_name=identity --remove_extra_whitespaces=false \
  --allow_whitespace_only_pieces=true
spm_train "${common[@]}" --model_prefix="$tmp/spm_unigram" --model_type=unigram \
  --user_defined_symbols='<sep>,<cls>,@@' --byte_fallback=false
for m in spm_bpe spm_unigram; do
  cp "$tmp/$m.model" "$out/$m.model"
  spm_encode --model="$tmp/$m.model" --output_format=id < "$tmp/lines.txt" | gzip -9n > "$out/${m}_ids.txt.gz"
  spm_encode --model="$tmp/$m.model" --output_format=id < "$tmp/invalid.txt" | gzip -9n > "$out/${m}_invalid_ids.txt.gz"
done
ls -la "$out"/spm_*
