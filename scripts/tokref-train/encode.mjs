// Reference encodings with the Hugging Face tokenizers JS implementation.
// usage: node encode.mjs TOKENIZER_JSON TEXTS_JSON > IDS_JSON
//   TEXTS_JSON: a JSON array of strings. Output: a JSON array of id arrays
//   (encode(text) with add_special_tokens true, as Tokenizer::encode(text, true)).
import { readFileSync } from "node:fs";
import { Tokenizer } from "@huggingface/tokenizers";

const [tokPath, textsPath] = process.argv.slice(2);
if (!tokPath || !textsPath) {
  console.error("usage: node encode.mjs TOKENIZER_JSON TEXTS_JSON");
  process.exit(2);
}
const tokenizer = new Tokenizer(JSON.parse(readFileSync(tokPath, "utf8")), {});
const texts = JSON.parse(readFileSync(textsPath, "utf8"));
const out = texts.map((t) => tokenizer.encode(t).ids);
process.stdout.write(JSON.stringify(out) + "\n");
