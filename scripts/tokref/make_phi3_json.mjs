// Builds a Phi-3-style tokenizer.json from the Llama-2 one: Phi-3
// (Phi-3-mini-4k-instruct, Phi-3.5-mini-instruct) ships Llama-2's 32000-token
// SentencePiece-BPE vocabulary and merges unchanged and adds eleven tokens at
// ids 32000..32010. This is a reconstruction, not Microsoft's file (which is
// not obtainable offline): the added tokens and their flags are those of
// Phi-3's tokenizer_config.json `added_tokens_decoder`: `</s>` is rstrip and
// not special, `<|endoftext|>` is special without rstrip, the chat markers and
// placeholders are special with rstrip; none is normalized or lstrip.
// Normalizer, pre-tokenizer, post-processor (BOS) and decoder stay Llama-2's.
//
// Usage: node make_phi3_json.mjs LLAMA2_TOKENIZER.json OUT.json
import fs from "fs";

const [src, out] = process.argv.slice(2);
const j = JSON.parse(fs.readFileSync(src, "utf8"));
if (j.model.type !== "BPE" || Object.keys(j.model.vocab).length !== 32000) throw new Error(`${src}: not Llama-2's 32000-token BPE`);
const tok = (id, content, rstrip, special) => ({ id, content, single_word: false, lstrip: false, rstrip, normalized: false, special });
j.added_tokens = [
  tok(0, "<unk>", false, true),
  tok(1, "<s>", false, true),
  tok(2, "</s>", true, false),
  tok(32000, "<|endoftext|>", false, true),
  tok(32001, "<|assistant|>", true, true),
  tok(32002, "<|placeholder1|>", true, true),
  tok(32003, "<|placeholder2|>", true, true),
  tok(32004, "<|placeholder3|>", true, true),
  tok(32005, "<|placeholder4|>", true, true),
  tok(32006, "<|system|>", true, true),
  tok(32007, "<|end|>", true, true),
  tok(32008, "<|placeholder5|>", true, true),
  tok(32009, "<|placeholder6|>", true, true),
  tok(32010, "<|user|>", true, true),
];
fs.writeFileSync(out, JSON.stringify(j, null, 2));
