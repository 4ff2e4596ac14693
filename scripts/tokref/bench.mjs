// Measures the reference implementation's encode throughput (MB/s of UTF-8
// text, one core) on the parity text set; prints one JSON line.
// Usage: node bench.mjs TOKENIZER.json TEXTSET.txt [REPEATS]
import { Tokenizer } from "@huggingface/tokenizers";
import fs from "fs";

const [tokPath, textPath, repeatsArg] = process.argv.slice(2);
const repeats = Number(repeatsArg ?? 3);
const tj = JSON.parse(fs.readFileSync(tokPath, "utf8"));
const cfgPath = tokPath.replace(/tokenizer\.json$/, "tokenizer_config.json");
const cfg = cfgPath !== tokPath && fs.existsSync(cfgPath) ? JSON.parse(fs.readFileSync(cfgPath, "utf8")) : {};
const t0 = performance.now();
const tok = new Tokenizer(tj, cfg);
const loadS = (performance.now() - t0) / 1000;
const docs = fs.readFileSync(textPath, "utf8").split("\0");
const bytes = docs.reduce((a, d) => a + Buffer.byteLength(d, "utf8"), 0);
let best = Infinity;
let count = 0;
for (let r = 0; r < repeats; ++r) {
  const a = performance.now();
  count = 0;
  for (const d of docs) count += tok.encode(d, { add_special_tokens: true }).ids.length;
  best = Math.min(best, (performance.now() - a) / 1000);
}
console.log(JSON.stringify({ mb_per_s: bytes / 1e6 / best, seconds: best, bytes, tokens: count, load_s: loadS, repeats }));
