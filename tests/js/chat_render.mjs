// chat_render.mjs — the reference for NeuralForge's chat templates
// (tests/e2e/test_chat.py): a model's own chat_template rendered by
// @huggingface/jinja, and text tokenized by Hugging Face tokenizers
// (@anush008/tokenizers wraps HF's Rust library) with the model's tokenizer.json.
//
//   node chat_render.mjs MODEL_DIR [--text-special TOKEN]... < requests.jsonl
//
// MODEL_DIR holds tokenizer.json and tokenizer_config.json. Each request line is
//   {"messages": [...]}  -> {"rendered": S}: the config's chat_template with its
//                           bos_token / eos_token, add_generation_prompt false
//                           (true when the request has "add_generation_prompt": true)
//   {"text": S}          -> {"ids": [...], "offsets": [[b, e], ...]}: S encoded
//                           without added BOS/EOS; offsets in code points of S
// --text-special TOKEN renames TOKEN among the tokenizer's added tokens, so that
// its spelling is encoded as the text it is (NeuralForge's reading of special-token
// spellings inside message content, which HF has no switch for).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@anush008/tokenizers";

const args = process.argv.slice(2);
const dir = args[0];
const textSpecials = new Set();
for (let i = 1; i < args.length; i += 2) {
    if (args[i] !== "--text-special" || i + 1 >= args.length) throw new Error(`bad argument ${args[i]}`);
    textSpecials.add(args[i + 1]);
}
const config = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
const tokenizerJson = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
// Renamed, not dropped: the library numbers added tokens by their place in the list, so dropping one would
// shift the ids of those after it.
let renamed = 0;
for (const t of tokenizerJson.added_tokens)
    if (textSpecials.has(t.content)) {
        t.content = `<|neuralforge-test-unused-${t.id}|>`;
        renamed++;
    }
if (renamed !== textSpecials.size) throw new Error("a --text-special is no added token");
const tok = Tokenizer.fromString(JSON.stringify(tokenizerJson));
// a special token's spelling: a string, or an AddedToken object ({content})
const spelling = (t) => (t == null ? "" : typeof t === "string" ? t : t.content);
const template = new Template(config.chat_template);

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
    if (!line.trim()) continue;
    const req = JSON.parse(line);
    if (req.messages) {
        const rendered = template.render({
            messages: req.messages,
            bos_token: spelling(config.bos_token),
            eos_token: spelling(config.eos_token),
            add_generation_prompt: req.add_generation_prompt === true,
        });
        console.log(JSON.stringify({ rendered }));
    } else {
        const e = await tok.encode(req.text, null, { addSpecialTokens: false });
        console.log(JSON.stringify({ ids: e.getIds(), offsets: e.getOffsets() }));
    }
}
