#!/usr/bin/python3
"""Where a generated token's time goes, shape by shape, in one invocation: the shapes are run in turn, round by
round, so that they share the same minutes, and each cell lists the rounds.

    /usr/bin/python3 bench/decode_parts.py [--rounds 3] [--tokens 48]
        [--shapes qwen2.5-0.5b:none,qwen2.5-0.5b:q8,...,110M:none:768:bf16]
        [--against OTHER_BINARY]

A shape is PRESET:QUANT[:PROMPT_TOKENS[:KV_CACHE]] (defaults 16 and fp32); the default list is the 0.5-1B presets
and SmolLM2's with fp32 and q8 weights after 16 prompt tokens, and the 110M shape after 768 with both caches. For
each run `neuralforge benchmark --generate` reports (docs/protocol.md) `bandwidth_use` against the read loop's best
pass and, here, against its median pass; against a pass beside each token (`paired_bandwidth_use`, and
`paired_product_use` for the products alone; nan for a binary from before them); the weight products' share of a
token and how fast they alone read the weights, as a fraction of the best pass; the attention's time; and the read
loop's median pass over its best (how much this machine's read speed moves from pass to pass), and that best pass in
GB/s. With --against (say, a build of an earlier commit), each shape also runs on that binary right after or before
this one (the order turns each round), in a row of its own with a column of this binary's tok/s over the other's,
round by round. Prints one markdown table and the commands it ran."""
import argparse
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NF = os.path.join(ROOT, "build", "neuralforge")
DEFAULT_SHAPES = ("qwen2.5-0.5b:none,qwen2.5-0.5b:q8,llama3.2-1b:none,llama3.2-1b:q8,smollm2-135m:none,"
                  "smollm2-135m:q8,110M:none:768:fp32,110M:none:768:bf16")


def parse_shape(text):
    parts = text.split(":")
    prompt = parts[2] if len(parts) > 2 else "16"
    cache = parts[3] if len(parts) > 3 else "fp32"
    if not 2 <= len(parts) <= 4 or parts[1] not in ("none", "q8") or not prompt.isdigit() or cache not in ("fp32",
                                                                                                           "bf16"):
        raise SystemExit(f"--shapes: '{text}' is not PRESET:none|q8[:PROMPT_TOKENS[:fp32|bf16]]")
    return parts[0], parts[1], int(prompt), cache


def command(shape, tokens):
    preset, quant, prompt, cache = shape
    return ["benchmark", "--generate", "--preset", preset, "--quant", quant, "--prompt-tokens", str(prompt),
            "--tokens", str(tokens), "--kv-cache", cache]


def run(binary, args):
    r = subprocess.run([binary, *args], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise SystemExit(f"{binary} {' '.join(args)} failed: {r.stdout.strip()[-400:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def parts(m):
    best, median = m["memory_read_gbytes_s"], m["memory_read_median_gbytes_s"]
    return {
        "tok/s": m["tok_s"],
        "use (best pass)": m["bandwidth_use"],
        "use (median pass)": m["bandwidth_use"] * best / median,
        "use (paired pass)": m.get("paired_bandwidth_use", float("nan")),
        "products' use (paired)": m.get("paired_product_use", float("nan")),
        "products' share": m["product_ms_per_token"] / m["ms_per_token"],
        "products' read / best": m["product_gbytes_s"] / best,
        "attention ms": m["attention_ms_per_token"],
        "median / best pass": median / best,
        "read GB/s (best pass)": best,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--shapes", default=DEFAULT_SHAPES)
    ap.add_argument("--against", help="another neuralforge binary to alternate with this build's, shape by shape")
    a = ap.parse_args()
    if a.rounds < 1 or a.tokens < 1:
        raise SystemExit("--rounds and --tokens must be at least 1")
    if a.against and not os.access(a.against, os.X_OK):
        raise SystemExit(f"--against: '{a.against}' is not an executable file")
    if a.against and os.path.realpath(a.against) == os.path.realpath(NF):
        raise SystemExit(f"--against: '{a.against}' is this build's own binary; give another one")
    shapes = [parse_shape(s) for s in a.shapes.split(",")]
    binaries = [NF] + ([a.against] if a.against else [])
    results = {(shape, b): [] for shape in shapes for b in binaries}
    for i in range(a.rounds):
        for shape in shapes:
            for b in binaries if i % 2 == 0 else binaries[::-1]:
                results[shape, b].append(parts(run(b, command(shape, a.tokens))))
                print(f"round {i + 1} {':'.join(map(str, shape))} {b}: {json.dumps(results[shape, b][-1])}",
                      flush=True)
    columns = list(next(iter(results.values()))[0])
    ratio = ["tok/s over --against"] if a.against else []
    print("\n| shape | " + " | ".join(columns + ratio) + " |")
    print("|---|" + "---|" * len(columns + ratio))
    for (shape, b), rs in results.items():
        cells = [", ".join(f"{r[c]:.1f}" if c in ("tok/s", "read GB/s (best pass)") else f"{r[c]:.2f}" for r in rs)
                 for c in columns]
        if a.against:
            other = results[shape, a.against]
            cells.append(", ".join(f"{r['tok/s'] / o['tok/s']:.2f}" for r, o in zip(rs, other)) if b == NF else "")
        label = ":".join(map(str, shape)) + ("" if b == NF else f" ({b})")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\ncommands (alternated, round by round):")
    for shape in shapes:
        for b in binaries:
            print(f"  {os.path.relpath(b, ROOT) if b == NF else b} " + " ".join(command(shape, a.tokens)))


if __name__ == "__main__":
    main()
