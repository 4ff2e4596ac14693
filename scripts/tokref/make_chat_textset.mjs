// Builds the chat text set for the tokenizer parity tests: documents in the
// chat formats of the model families (Phi-3, Llama-3, Qwen/ChatML, Gemma,
// OLMo-2/cl100k, o200k) whose added tokens stand next to spaces, tabs,
// newlines, other Unicode whitespace (and characters that are not whitespace
// for Rust's char::is_whitespace, such as U+FEFF and U+200B), inside words,
// doubled, truncated, at the start and at the end of a document. This is what
// exercises the added tokens' lstrip/rstrip/normalized/special flags, which
// the main text set (textset.txt) only touches. Deterministic; documents are
// joined with NUL bytes. Only characters assigned in Unicode 14 are used.
//
// Usage: node make_chat_textset.mjs OUT.txt      (then gzip -9n OUT.txt)
import fs from "fs";

import { mulberry32 } from "./prng.mjs";

const { rand, ri } = mulberry32(0x0c4a7001);
const pick = (arr) => arr[Math.floor(rand() * arr.length)];

const docs = [];
const add = (s) => {
  if (s.includes("\0")) throw new Error("NUL in document");
  if (s.length > 0) docs.push(s);
};

const phi3 = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>", "<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>", "<s>", "</s>", "<unk>"];
const llama3 = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>", "<|python_tag|>", "<|reserved_special_token_0|>"];
const chatml = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>", "</tool_call>"];
const gemma = ["<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<mask>"];
const openai = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|endofprompt|>", "<|pad|>", "|||IP_ADDRESS|||", "|||EMAIL_ADDRESS|||", "|||PHONE_NUMBER|||"];
const allSpecials = [...new Set([...phi3, ...llama3, ...chatml, ...gemma, ...openai])];
const partial = ["<|end", "<|user", "|>", "<|", "end|>", "<|END|>", "<|User|>", "< |end|>", "<|end| >", "<<|end|>>", "<|<|user|>|>", "</s", "<s >", "<|endoftext", "<|placeholder7|>"];
// Whitespace for Rust's char::is_whitespace (Unicode White_Space) and a few
// look-alikes that are not.
const spaces = [" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\n ", " \t\n ", "\u00a0", "\u3000", "\u2003", "\u2028", "\u0085", "\u000b", "\u000c"];
const notSpaces = ["\ufeff", "\u200b", "\u180e", "\u2060"];
const sentences = [
  "You are a helpful assistant.",
  "What is the capital of France?",
  "The capital of France is Paris.",
  "Write a haiku about the sea.",
  "def add(a, b):\n    return a + b\n",
  "Translate to German: Good morning!",
  "Guten Morgen!",
  "日本の首都は東京です。",
  "¿Cuál es la raíz cuadrada de 144? Es 12.",
  "Привет, как дела?",
  "مرحبا بالعالم",
  "I'm fine, thanks 😀 — and you?",
  "Numbers: 3.14159, 2,718, 1e-9, 0x1F.",
  "",
  " ",
];
const sep = () => pick(["", "", "", ...spaces, ...spaces, ...notSpaces]);

// 1. Each family's chat template, rendered as the family's chat template does
// it, and with the whitespace variations people put around the markers.
const conv = () => {
  const turns = [];
  for (let n = ri(1, 4); n > 0; --n) turns.push([pick(["system", "user", "assistant"]), pick(sentences)]);
  return turns;
};
for (let k = 0; k < 40; ++k) {
  const t = conv();
  // Phi-3 (tokenizer_config.json chat_template) and its common variations.
  add(t.map(([r, c]) => `<|${r}|>\n${c}<|end|>\n`).join("") + "<|assistant|>\n");
  add(t.map(([r, c]) => `<|${r}|>${c}<|end|>`).join("") + "<|endoftext|>");
  add(t.map(([r, c]) => `${sep()}<|${r}|>${sep()}${c}${sep()}<|end|>${sep()}`).join("") + pick(["<|assistant|>", "</s>", "<|endoftext|>"]) + sep());
  // Llama 3.
  add("<|begin_of_text|>" + t.map(([r, c]) => `<|start_header_id|>${r}<|end_header_id|>\n\n${c}<|eot_id|>`).join("") + "<|start_header_id|>assistant<|end_header_id|>\n\n");
  // ChatML (Qwen, OLMo-2 instruct uses <|user|>-style or ChatML-like markers).
  add(t.map(([r, c]) => `<|im_start|>${r}\n${c}<|im_end|>\n`).join("") + "<|im_start|>assistant\n<think>\n\n</think>\n\n");
  // Gemma.
  add("<bos>" + t.map(([r, c]) => `<start_of_turn>${r === "assistant" ? "model" : "user"}\n${c}<end_of_turn>\n`).join("") + "<start_of_turn>model\n");
  // OLMo-2 / Tülu 3 template.
  add(t.map(([r, c]) => `<|${r}|>\n${c}\n`).join("") + "<|assistant|>\n" + pick(sentences) + "<|endoftext|>");
}

// 2. Every added-token string of every family between every kind of
// whitespace, doubled, inside words, at the ends of the document.
for (const s of allSpecials) {
  for (const w of [...spaces, ...notSpaces]) {
    add(`${w}${s}${w}x${w}${s}`);
    add(`a${s}${w}b`);
    add(`a${w}${s}b`);
  }
  add(s);
  add(s + s + s);
  add(`${s} ${s}\n${s}\t${s}`);
  add(`word${s}word`);
  add(`${s}${" ".repeat(40)}`);
  add(`${"\n".repeat(5)}${s}${"\n".repeat(5)}`);
}

// 3. Random mixtures, including truncated and look-alike markers.
for (let k = 0; k < 300; ++k) {
  let s = "";
  for (let n = ri(3, 30); n > 0; --n) {
    const kind = ri(0, 5);
    if (kind <= 1) s += pick(allSpecials);
    else if (kind === 2) s += pick(partial);
    else s += pick(sentences);
    s += sep();
  }
  add(s);
}

fs.writeFileSync(process.argv[2], docs.join("\0"));
const bytes = docs.reduce((a, d) => a + Buffer.byteLength(d), 0);
console.error(`${process.argv[2]}: ${docs.length} documents, ${bytes} bytes`);
