// Encodes every *.txt below a folder (sorted by path, as moefy's corpusTextFiles)
// with the Hugging Face tokenizers JS implementation and prints one JSON array:
// the concatenated ids (each document encoded with special tokens, i.e. BOS first).
// usage: node encode_corpus.mjs TOKENIZER_JSON FOLDER > IDS_JSON
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";

const [tokPath, folder] = process.argv.slice(2);
const tokenizer = new Tokenizer(JSON.parse(readFileSync(tokPath, "utf8")), {});
const files = [];
(function walk(d) {
  for (const n of readdirSync(d)) {
    const p = join(d, n);
    if (statSync(p).isDirectory()) walk(p);
    else if (p.endsWith(".txt")) files.push(p);
  }
})(folder);
files.sort((a, b) => (Buffer.from(a) < Buffer.from(b) ? -1 : a === b ? 0 : 1));
const ids = [];
for (const f of files) for (const id of tokenizer.encode(readFileSync(f, "utf8")).ids) ids.push(id);
process.stdout.write(JSON.stringify(ids) + "\n");
