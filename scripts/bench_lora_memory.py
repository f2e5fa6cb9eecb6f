#!/usr/bin/python3
"""LoRA against full fine-tuning on the stories110M shape: peak RSS, step
time and checkpoint size, both runs in the same invocation on the same model
and data, reported as ratios (docs/performance.md records the results).

    /usr/bin/python3 scripts/bench_lora_memory.py [--batch 4] [--seq 256] [--steps 3] [--rank 8]

The model is random (the shape is what matters for memory and time): dim 768,
12 layers, 12 heads, hidden 2048, vocab 32000, seq_len 1024, written as a
llama2.c v0 file (~440 MB) in a temporary directory with random token data.
Peak RSS is the child's ru_maxrss from wait4; step time is the median `ms`
of the `step` messages after the first."""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NF = os.path.join(ROOT, "build", "neuralforge")
SHAPE = dict(dim=768, hidden_dim=2048, n_layers=12, n_heads=12, n_kv_heads=12, vocab_size=32000, seq_len=1024)


def write_model(path):
    c = SHAPE
    D, H, L, V = c["dim"], c["hidden_dim"], c["n_layers"], c["vocab_size"]
    hs = D // c["n_heads"]
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        f.write(struct.pack("7i", D, H, L, c["n_heads"], c["n_kv_heads"], V, c["seq_len"]))
        sizes = [V * D, L * D, L * D * D, L * D * D, L * D * D, L * D * D, L * D, L * H * D, L * D * H, L * H * D, D,
                 c["seq_len"] * hs]  # the last is the freq_cis tables, which readers skip
        for i, n in enumerate(sizes):
            if i in (1, 6, 10):
                block = np.ones(n, np.float32)
            else:
                block = (rng.standard_normal(n, dtype=np.float32) * 0.02).astype(np.float32)
            f.write(block.tobytes())


def run(args):
    start = time.time()
    p = subprocess.Popen([NF, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"neuralforge {' '.join(map(str, args))} failed:\n{out.decode()[-2000:]}")
    msgs = [json.loads(l) for l in out.decode().split("\n") if l]
    steps = [m["ms"] for m in msgs if m["type"] == "step"][1:]
    ckpt = [m for m in msgs if m["type"] == "checkpoint"][-1]
    init = [m for m in msgs if m["type"] == "init"][0]
    return dict(rss=usage.ru_maxrss * 1024, step_ms=statistics.median(steps), ckpt_bytes=ckpt["bytes"],
                params=init["params"], activation_bytes=init["activation_bytes"], wall=time.time() - start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rank", type=int, default=8)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        model, data = os.path.join(d, "m.bin"), os.path.join(d, "d.bin")
        write_model(model)
        np.random.default_rng(1).integers(0, SHAPE["vocab_size"], 200_000).astype("<u2").tofile(data)
        common = ["train", "--model", model, "--data", data, "--steps", a.steps, "--batch", a.batch, "--seq", a.seq,
                  "--val-every", 0]
        full = run([*common, "--ckpt", os.path.join(d, "full.ckpt")])
        os.unlink(os.path.join(d, "full.ckpt"))
        lora = run([*common, "--ckpt", os.path.join(d, "lora.ckpt"), "--lora-rank", a.rank])
    mib = lambda b: f"{b / 2**20:.1f} MiB"
    print(f"stories110M shape, batch {a.batch} x seq {a.seq}, {a.steps} steps, LoRA rank {a.rank} on wq,wk,wv,wo")
    print("| run | trainable params | peak RSS | activations | median step | checkpoint |")
    print("|---|---|---|---|---|---|")
    for name, r in (("full fine-tune", full), (f"LoRA r={a.rank}", lora)):
        print(f"| {name} | {r['params']:,} | {mib(r['rss'])} | {mib(r['activation_bytes'])} | "
              f"{r['step_ms']:.0f} ms | {mib(r['ckpt_bytes'])} |")
    print(f"LoRA / full: peak RSS {lora['rss'] / full['rss']:.2f}, step time {lora['step_ms'] / full['step_ms']:.2f}, "
          f"checkpoint {lora['ckpt_bytes'] / full['ckpt_bytes']:.4f}")


if __name__ == "__main__":
    main()
