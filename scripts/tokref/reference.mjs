// Encodes the parity text set with the reference implementation
// (@huggingface/tokenizers, pure JS) and writes the ids as safetensors:
//   ids        I32 [N]      all documents' ids, concatenated (special tokens added)
//   offsets    I64 [D+1]    document d has ids[offsets[d] : offsets[d+1]]
//   roundtrip  U8  [D]      1 if decode(ids) (special tokens skipped, no clean-up) == the document
//   invalid_ids / invalid_offsets: the same for the invalid-UTF-8 documents,
//   decoded to text with TextDecoder (U+FFFD replacement) before encoding.
// Usage: node reference.mjs TOKENIZER.json TEXTSET.txt OUT.safetensors
import { Tokenizer } from "@huggingface/tokenizers";
import fs from "fs";

const [tokPath, textPath, outPath] = process.argv.slice(2);
const tj = JSON.parse(fs.readFileSync(tokPath, "utf8"));
const cfgPath = tokPath.replace(/tokenizer\.json$/, "tokenizer_config.json");
const cfg = cfgPath !== tokPath && fs.existsSync(cfgPath) ? JSON.parse(fs.readFileSync(cfgPath, "utf8")) : {};
const tok = new Tokenizer(tj, cfg);

function run(docs) {
  const ids = [];
  const offsets = [0];
  const roundtrip = [];
  for (const d of docs) {
    const e = tok.encode(d, { add_special_tokens: true });
    ids.push(...e.ids);
    offsets.push(ids.length);
    let rt = 0;
    if (e.ids.length > 0) {
      const back = tok.decode(e.ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false });
      rt = back === d ? 1 : 0;
    } else {
      rt = d.length === 0 ? 1 : 0;
    }
    roundtrip.push(rt);
  }
  return { ids, offsets, roundtrip };
}

const docs = fs.readFileSync(textPath, "utf8").split("\0");
const main = run(docs);
const raw = fs.readFileSync(textPath.replace(/\.txt$/, "") + ".invalid.bin");
const invalidDocs = [];
let start = 0;
for (let i = 0; i <= raw.length; ++i) {
  if (i === raw.length || raw[i] === 0) {
    invalidDocs.push(new TextDecoder("utf-8").decode(raw.subarray(start, i)));
    start = i + 1;
  }
}
const inv = run(invalidDocs);

// Minimal safetensors writer.
const tensors = [
  ["ids", "I32", Int32Array.from(main.ids)],
  ["offsets", "I64", BigInt64Array.from(main.offsets.map(BigInt))],
  ["roundtrip", "U8", Uint8Array.from(main.roundtrip)],
  ["invalid_ids", "I32", Int32Array.from(inv.ids)],
  ["invalid_offsets", "I64", BigInt64Array.from(inv.offsets.map(BigInt))],
];
const header = { __metadata__: { reference: "@huggingface/tokenizers 0.2.0", tokenizer: tokPath.split("/").slice(-3).join("/"), documents: String(docs.length) } };
let off = 0;
for (const [name, dtype, arr] of tensors) {
  header[name] = { dtype, shape: [arr.length], data_offsets: [off, off + arr.byteLength] };
  off += arr.byteLength;
}
let hjson = JSON.stringify(header);
while ((8 + Buffer.byteLength(hjson)) % 8 !== 0) hjson += " ";
const hbuf = Buffer.from(hjson, "utf8");
const len = Buffer.alloc(8);
len.writeBigUInt64LE(BigInt(hbuf.length));
fs.writeFileSync(outPath, Buffer.concat([len, hbuf, ...tensors.map(([, , a]) => Buffer.from(a.buffer, a.byteOffset, a.byteLength))]));
const nrt = main.roundtrip.reduce((a, b) => a + b, 0);
console.error(`${outPath}: ${docs.length} documents, ${main.ids.length} ids, ${nrt} round-trip; ${invalidDocs.length} invalid-UTF-8 documents, ${inv.ids.length} ids`);
