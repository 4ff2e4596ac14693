// Encodes the parity text set with a reference implementation and writes the
// ids as safetensors:
//   ids        I32 [N]      all documents' ids, concatenated (special tokens added)
//   offsets    I64 [D+1]    document d has ids[offsets[d] : offsets[d+1]]
//   roundtrip  U8  [D]      1 if decode(ids) (special tokens skipped, no clean-up) == the document
//   invalid_ids / invalid_offsets: the same for the invalid-UTF-8 documents,
//   decoded to text with TextDecoder (U+FFFD replacement) before encoding.
//   chat_ids / chat_offsets / chat_roundtrip: the same for the chat text set
//   (make_chat_textset.mjs), when CHAT.txt is given.
// The reference is @huggingface/tokenizers (pure JS) by default, or with
// --rust the Rust `tokenizers` crate itself through its Node binding (npm
// `tokenizers`, a prebuilt native module inside the package).
// Usage: node reference.mjs [--rust] TOKENIZER.json TEXTSET.txt OUT.safetensors [CHAT.txt]
import { Tokenizer } from "@huggingface/tokenizers";
import fs from "fs";

const args = process.argv.slice(2);
const rust = args[0] === "--rust";
if (rust) args.shift();
const [tokPath, textPath, outPath, chatPath] = args;
let encode, decode, refName;
if (rust) {
  const { default: rs } = await import("tokenizers");
  const rtok = rs.Tokenizer.fromFile(tokPath);
  encode = async (d) => (await rtok.encode(d, null, { addSpecialTokens: true })).getIds();
  decode = (ids) => rtok.decode(ids, true);
  refName = `tokenizers ${JSON.parse(fs.readFileSync(new URL("node_modules/tokenizers/package.json", import.meta.url), "utf8")).version} (Rust crate, Node binding)`;
} else {
  const tj = JSON.parse(fs.readFileSync(tokPath, "utf8"));
  const cfgPath = tokPath.replace(/tokenizer\.json$/, "tokenizer_config.json");
  const cfg = cfgPath !== tokPath && fs.existsSync(cfgPath) ? JSON.parse(fs.readFileSync(cfgPath, "utf8")) : {};
  const tok = new Tokenizer(tj, cfg);
  encode = async (d) => tok.encode(d, { add_special_tokens: true }).ids;
  decode = async (ids) => tok.decode(ids, { skip_special_tokens: true, clean_up_tokenization_spaces: false });
  refName = "@huggingface/tokenizers 0.2.0";
}

async function run(docs) {
  const ids = [];
  const offsets = [0];
  const roundtrip = [];
  for (const d of docs) {
    const e = await encode(d);
    ids.push(...e);
    offsets.push(ids.length);
    let rt = 0;
    if (e.length > 0) {
      const back = await decode(e);
      rt = back === d ? 1 : 0;
    } else {
      rt = d.length === 0 ? 1 : 0;
    }
    roundtrip.push(rt);
  }
  return { ids, offsets, roundtrip };
}

const docs = fs.readFileSync(textPath, "utf8").split("\0");
const main = await run(docs);
const raw = fs.readFileSync(textPath.replace(/\.txt$/, "") + ".invalid.bin");
const invalidDocs = [];
let start = 0;
for (let i = 0; i <= raw.length; ++i) {
  if (i === raw.length || raw[i] === 0) {
    invalidDocs.push(new TextDecoder("utf-8").decode(raw.subarray(start, i)));
    start = i + 1;
  }
}
const inv = await run(invalidDocs);
const chat = chatPath ? await run(fs.readFileSync(chatPath, "utf8").split("\0")) : null;

// Minimal safetensors writer.
const tensors = [
  ["ids", "I32", Int32Array.from(main.ids)],
  ["offsets", "I64", BigInt64Array.from(main.offsets.map(BigInt))],
  ["roundtrip", "U8", Uint8Array.from(main.roundtrip)],
  ["invalid_ids", "I32", Int32Array.from(inv.ids)],
  ["invalid_offsets", "I64", BigInt64Array.from(inv.offsets.map(BigInt))],
];
if (chat) {
  tensors.push(["chat_ids", "I32", Int32Array.from(chat.ids)]);
  tensors.push(["chat_offsets", "I64", BigInt64Array.from(chat.offsets.map(BigInt))]);
  tensors.push(["chat_roundtrip", "U8", Uint8Array.from(chat.roundtrip)]);
}
const header = { __metadata__: { reference: refName, tokenizer: tokPath.split("/").slice(-3).join("/"), documents: String(docs.length) } };
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
console.error(`${outPath}: ${docs.length} documents, ${main.ids.length} ids, ${nrt} round-trip; ${invalidDocs.length} invalid-UTF-8 documents, ${inv.ids.length} ids` + (chat ? `; ${chat.offsets.length - 1} chat documents, ${chat.ids.length} ids, ${chat.roundtrip.reduce((a, b) => a + b, 0)} round-trip` : ""));
