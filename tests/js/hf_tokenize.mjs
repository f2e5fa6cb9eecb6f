// hf_tokenize.mjs — Hugging Face tokenizers (HF's Rust library through
// @anush008/tokenizers) as the reference for tests/e2e/test_hf_tokenizer.py.
//
//   node hf_tokenize.mjs encode TOKENIZER_JSON TEXT_FILE [--special]
//     prints {"ids": [...], "decoded": "..."}: the text's ids without the
//     post-processor's BOS/EOS, and HF's decode of them
//   node hf_tokenize.mjs train OUT_JSON TEXT_FILE...
//     trains a byte-level BPE (GPT-2's pre-tokenizer, the trainer's defaults:
//     up to 30,000 pieces) and saves it with the ByteLevel decoder, which this
//     binding has no constructor for (so it is written into the JSON)
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const tk = require("@anush008/tokenizers");

const [mode, ...args] = process.argv.slice(2);
if (mode === "encode") {
  const [path, textPath] = args;
  const tok = tk.Tokenizer.fromFile(path);
  const text = readFileSync(textPath, "utf8");
  const enc = await tok.encode(text, null, { addSpecialTokens: false });
  const ids = Array.from(enc.getIds());
  const decoded = await tok.decode(ids, false);
  process.stdout.write(JSON.stringify({ ids, decoded }) + "\n");
} else if (mode === "train") {
  const [out, ...files] = args;
  const tok = new tk.Tokenizer(tk.BPE.empty());
  tok.setPreTokenizer(tk.byteLevelPreTokenizer(false, true));
  tok.train(files);
  tok.save(out);
  const json = JSON.parse(readFileSync(out, "utf8"));
  json.decoder = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  writeFileSync(out, JSON.stringify(json));
} else {
  console.error("usage: hf_tokenize.mjs encode|train ...");
  process.exit(2);
}
