#!/usr/bin/python3
"""What choosing the next token costs: `neuralforge generate` with each sampling setting against greedy decoding
(the forward pass and an argmax) on the same model, run after run in one invocation.

    /usr/bin/python3 bench/sampling_speed.py [--rounds 3] [--tokens 100] [--dir /var/tmp/nf-peer]
        [--shapes 110M,qwen2.5-0.5b] [--against OTHER_BINARY]

The models are generate_vs_llamacpp.py's random-weight shapes (written once into --dir and kept): 110M with Llama
2's 32,000 tokens and fp32 weights, and Qwen2.5-0.5B's dimensions with Llama 3's 128,256 tokens, quantized at load
(--quant q8). Random weights make the next-token distribution nearly flat, so top-p 0.9 keeps about 90% of
the vocabulary: the sampler's worst case (a trained model's nucleus is far smaller). The settings: greedy
(--temperature 0, the peer), the default (temperature 1, top-p 0.9), --top-k 40, and --top-p 1 (nothing filtered).
The rate is the tokens after the first over the time after the first (`generate_done`'s total_ms minus
first_token_ms), so the prompt is not counted; each cell lists the rounds, then the median of each round's rate
over greedy's in the same round. With --against (say, a build of an earlier commit) every run is also made by that
binary, right after or before this one's (the order turns each round), in a row of its own, and the two must
draw the same tokens (the same seed): a change to the sampler that alters what it draws stops the script."""
import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import generate_vs_llamacpp as peer  # noqa: E402  (its shapes, model files and tokenizer paths)

NF = peer.NF
# shape: the weights' label and the flags that give them (the model file is generate_vs_llamacpp.prepare's .bin)
MODELS = {"110M": ("fp32", []), "qwen2.5-0.5b": ("q8", ["--quant", "q8"])}
SETTINGS = (
    ("greedy", ["--temperature", "0"]),
    ("top-p 0.9 (default)", []),
    ("top-k 40", ["--top-k", "40"]),
    ("top-p 1", ["--top-p", "1"]),
)


def generate(binary, model, tokenizer, tokens, extra):
    args = [binary, "generate", "--model", model, "--tokenizer", tokenizer, "--max-tokens", str(tokens), "--seed",
            "7", "--prompt", "Once upon a time", "--threads", str(peer.THREADS), *extra]
    r = subprocess.run(args, capture_output=True, text=True, timeout=3600)
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    if r.returncode != 0 or not lines or lines[-1].get("type") != "generate_done":
        raise SystemExit(f"{' '.join(args)} failed: {r.stdout.strip()[-400:]} {r.stderr.strip()[-400:]}")
    done, drawn = lines[-1], [m["token_id"] for m in lines if m.get("type") == "token"]
    after_first_ms = done["total_ms"] - done["first_token_ms"]
    rate = (done["tokens"] - 1) / (after_first_ms / 1000) if done["tokens"] > 1 and after_first_ms > 0 else 0.0
    return rate, drawn, args[1:]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--dir", default="/var/tmp/nf-peer", help="where the models are written (and kept)")
    ap.add_argument("--shapes", default=",".join(MODELS))
    ap.add_argument("--llama2-tokenizer", default=peer.LLAMA2_TOKENIZER, help="Llama 2's tokenizer.bin")
    ap.add_argument("--against", help="another neuralforge binary to alternate with this build's")
    a = ap.parse_args()
    names = a.shapes.split(",")
    if any(n not in MODELS for n in names) or a.rounds < 1 or a.tokens < 2:
        raise SystemExit(f"--shapes: some of {', '.join(MODELS)}; --rounds at least 1, --tokens at least 2")
    if a.against and os.path.realpath(a.against) == os.path.realpath(NF):
        raise SystemExit("--against names this build's own binary")
    tokenizers = {32000: a.llama2_tokenizer, 128256: peer.LLAMA3_TOKENIZER}
    os.makedirs(a.dir, exist_ok=True)
    binaries = [("this build", NF)] + ([("--against", a.against)] if a.against else [])
    rows, commands = {}, []
    for name in names:
        model, tokenizer = peer.prepare(name, a.dir, tokenizers)["bin"], tokenizers[peer.SHAPES[name][5]]
        weights, quant = MODELS[name]
        for i in range(a.rounds):
            for setting, sampling in SETTINGS:
                extra = quant + sampling
                order = binaries if i % 2 == 0 else binaries[::-1]
                drawn = {}
                for label, binary in order:
                    rate, drawn[label], args = generate(binary, model, tokenizer, a.tokens, extra)
                    rows.setdefault((name, weights, setting, label), []).append(rate)
                    if i == 0 and label == "this build":
                        commands.append("build/neuralforge " + " ".join(args))
                if len({tuple(t) for t in drawn.values()}) > 1:
                    raise SystemExit(f"{name} {setting}: the two binaries drew different tokens")
                print(f"round {i + 1} {name} {setting}: "
                      + ", ".join(f"{label} {rows[(name, weights, setting, label)][-1]:.1f} tok/s"
                                  for label, _ in binaries), flush=True)
    print("\n| shape | weights | sampling | binary | tok/s after the first token, by round | over greedy (median) |"
          + (" over --against (median) |" if a.against else ""))
    print("|---|---|---|---|---|---|" + ("---|" if a.against else ""))
    for (name, weights, setting, label), rates in rows.items():
        greedy = rows[(name, weights, "greedy", label)]
        cells = [name, weights, setting, label, ", ".join(f"{r:.1f}" for r in rates),
                 f"{statistics.median(r / g for r, g in zip(rates, greedy)):.2f}"]
        if a.against:
            other = rows[(name, weights, setting, "--against")]
            cells.append(f"{statistics.median(r / o for r, o in zip(rates, other)):.2f}" if label == "this build"
                         else "")
        print("| " + " | ".join(cells) + " |")
    print(f"\n{peer.THREADS} threads; commands (run in turn, round by round):")
    for c in commands:
        print("  " + c)


if __name__ == "__main__":
    main()
