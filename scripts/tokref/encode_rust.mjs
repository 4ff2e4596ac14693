// Reference encodings with the Rust `tokenizers` crate (npm `tokenizers`, its
// Node binding), for checked-in parity fixtures.
// usage: node encode_rust.mjs TOKENIZER_JSON TEXTS_JSON > IDS_JSON
//   TEXTS_JSON: a JSON array of strings. Output: a JSON array of id arrays
//   (encode(text) with addSpecialTokens true, as Tokenizer::encode(text, true)).
import { readFileSync } from "node:fs";

const [tokPath, textsPath] = process.argv.slice(2);
if (!tokPath || !textsPath) {
  console.error("usage: node encode_rust.mjs TOKENIZER_JSON TEXTS_JSON");
  process.exit(2);
}
const { default: rs } = await import("tokenizers");
const tok = rs.Tokenizer.fromFile(tokPath);
const texts = JSON.parse(readFileSync(textsPath, "utf8"));
const out = [];
for (const t of texts) out.push((await tok.encode(t, null, { addSpecialTokens: true })).getIds());
process.stdout.write(JSON.stringify(out) + "\n");
