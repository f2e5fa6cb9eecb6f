#!/usr/bin/python3
"""Data-parallel training under mpirun on this machine, and on paper between machines.

    /usr/bin/python3 bench/mpi_scaling.py [--preset 15M|42M|110M] [--batch 4] [--seq 256] [--steps 3] [--rounds 2]

Runs `neuralforge train --init` with the preset's shape (the shapes of `neuralforge benchmark --train --preset`)
on random token ids, every run with the same global batch (2 x batch sequences of seq tokens a step):
  one process, --threads 1, --accum 2      one process, --threads 2, --accum 2
  mpirun -np 2 --threads 1, --overlap off     mpirun -np 2 --threads 1, --overlap on
--steps timed steps after one warm-up step, the runs alternated --rounds times (the means are printed). From
the `step` messages: tok/s, and under mpirun the time the step waited for the gradients' sum (comm_ms) and the
time the sum ran (comm_busy_ms: with --overlap on partly during backward). Then, on paper, the step time of
N machines at 10, 25 and 100 Gbit/s for this shape and a 1.1B one (TinyLlama's): a ring all-reduce moves
2(N-1)/N of the gradient's bytes through each machine's link; the compute time of a step is this machine's,
measured here with 2 threads (the 1.1B one scaled by its FLOPs per token), and that of a node 16 times faster;
with the overlap, the sums of the layers (the first with the final norm and a separate classifier) hide behind
the backward pass of the layers before them (all but the last layer's backward); the last bucket (the embedding,
and the classifier when shared) never does."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NF = os.path.join(ROOT, "build", "neuralforge")
MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe"]
# name: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab, shared classifier (src/cmd_benchmark.c's presets)
SHAPES = {"15M": (288, 768, 6, 6, 6, 32000, True), "42M": (512, 1376, 8, 8, 8, 32000, True),
          "110M": (768, 2048, 12, 12, 12, 32000, True),
          "1.1B": (2048, 5632, 22, 32, 4, 32000, False)}  # TinyLlama-1.1B: not a preset, for the paper part only


def param_counts(shape):
    """(all floats, the last bucket's: the embedding, with the classifier when shared) in params.h's layout."""
    D, H, L, NH, NKV, V, shared = shape
    KV = D // NH * NKV
    layer = 2 * D * D + 2 * KV * D + 3 * H * D + 2 * D
    return L * layer + V * D * (1 if shared else 2) + D, V * D


def flops_per_token(shape, T):
    """model_flops_per_token (src/train_model.c): 6 per weight and token, plus attention; and its layers' part."""
    D, H, L, NH, NKV, V, _ = shape
    KV = D // NH * NKV
    layers = 6.0 * L * (2 * D * D + 2 * KV * D + 3 * H * D) + 6.0 * L * T * D
    return layers + 6.0 * V * D, layers


def run_train(args, data, threads, accum, ranks=1, overlap="off"):
    D, H, L, NH, NKV, V, _ = SHAPES[args.preset]
    cmd = [NF, "train", "--init", "--dim", D, "--hidden-dim", H, "--n-layers", L, "--n-heads", NH, "--n-kv-heads",
           NKV, "--vocab-size", V, "--seq-len", max(args.seq, 256), "--seq", args.seq, "--batch", args.batch,
           "--accum", accum, "--steps", args.steps + 1, "--val-every", 0, "--threads", threads, "--data", data]
    if ranks > 1:
        cmd = MPIRUN + ["-np", ranks] + cmd + ["--overlap", overlap]
    p = subprocess.run([str(c) for c in cmd], capture_output=True, timeout=3600)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{p.stdout.decode()[-2000:]}{p.stderr.decode()[-2000:]}")
    steps = [json.loads(l) for l in p.stdout.decode().splitlines() if '"type":"step"' in l][1:]  # after the warm-up
    mean = lambda k: sum(s.get(k, 0.0) for s in steps) / len(steps)
    return {"ms": mean("ms"), "comm_ms": mean("comm_ms"), "comm_busy_ms": mean("comm_busy_ms"),
            "command": " ".join(map(str, cmd))}


def measure(args):
    tokens = args.batch * args.seq * 2
    with tempfile.TemporaryDirectory(prefix="nf_mpi_") as d:
        data = os.path.join(d, "tokens.bin")
        np.random.default_rng(1).integers(0, SHAPES[args.preset][5], 4_000_000).astype("<u2").tofile(data)
        runs = {"np1_t1": dict(threads=1, accum=2), "np1_t2": dict(threads=2, accum=2),
                "np2_t1": dict(threads=1, accum=1, ranks=2, overlap="off"),
                "np2_t1_overlap": dict(threads=1, accum=1, ranks=2, overlap="on")}
        seen = {k: [] for k in runs}
        for r in range(args.rounds):
            for name, kw in runs.items():
                seen[name].append(run_train(args, data, **kw))
                print(f"  round {r + 1} {name}: {seen[name][-1]['ms']:.0f} ms/step", file=sys.stderr)
    out = {}
    for name, rs in seen.items():
        m = {k: sum(x[k] for x in rs) / len(rs) for k in ("ms", "comm_ms", "comm_busy_ms")}
        m["tok_s"] = tokens / (m["ms"] / 1000)
        m["command"] = rs[0]["command"]
        out[name] = m
    return out


def on_paper(args, compute_ms, seq):
    """The step time of N machines for the preset's shape and the 1.1B one, as a table."""
    base_flops, _ = flops_per_token(SHAPES[args.preset], seq)
    lines = []
    for name in (args.preset, "1.1B"):
        shape = SHAPES[name]
        n, last = param_counts(shape)
        total, layers = flops_per_token(shape, seq)
        for speed, label in ((1, "this machine"), (16, "a node 16x faster")):
            compute = compute_ms * total / base_flops / speed
            # backward is 2/3 of the FLOPs; the layers' sums can run during all of it but the last layer's
            window = compute * (2 / 3) * (layers / total) * (shape[2] - 1) / shape[2]
            lines.append(f"\n{name} ({n / 1e6:.0f}M params, {4 * n / 1e6:.0f} MB of gradient, last bucket "
                         f"{4 * last / 1e6:.0f} MB, the embedding), compute {compute / 1000:.2f} s/step on {label}, "
                         f"of which {window / 1000:.2f} s of backward can hide the layers' sums:")
            lines.append("| link | N | all-reduce s | step s, no overlap | speed-up | step s, overlap | speed-up |")
            lines.append("|---|---|---|---|---|---|---|")
            for gbit in (10, 25, 100):
                for N in (2, 4, 8):
                    per_byte = 8 / (gbit * 1e9) * 1000  # ms
                    comm = 2 * (N - 1) / N * 4 * n * per_byte
                    comm_last = 2 * (N - 1) / N * 4 * last * per_byte
                    exposed = comm_last + max(0.0, comm - comm_last - window)
                    plain, over = compute + comm, compute + exposed
                    lines.append(f"| {gbit} Gbit/s | {N} | {comm / 1000:.2f} | {plain / 1000:.2f} | "
                                 f"{N * compute / plain:.2f}x | {over / 1000:.2f} | {N * compute / over:.2f}x |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="110M", choices=["15M", "42M", "110M"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    n, last = param_counts(SHAPES[args.preset])
    load_before = os.getloadavg()[0]
    m = measure(args)
    print(f"load average (1 min) before {load_before:.2f}, after {os.getloadavg()[0]:.2f}: other work on the cores "
          "skews every number here")
    print(f"{args.preset}, {2 * args.batch} x {args.seq} tokens a step; gradient {n} floats = {4 * n / 1e6:.1f} MB "
          f"all-reduced per step (ring: {4 * n / 1e6:.1f} MB through each of 2 ranks' links)")
    print("| run | ms/step | tok/s | vs -np 1 --threads 1 | vs 1 process --threads 2 | comm_ms (waited) | "
          "comm_busy_ms (ran) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in m.items():
        print(f"| {name} | {r['ms']:.0f} | {r['tok_s']:.1f} | {r['tok_s'] / m['np1_t1']['tok_s']:.2f} | "
              f"{r['tok_s'] / m['np1_t2']['tok_s']:.2f} | {r['comm_ms']:.0f} | {r['comm_busy_ms']:.0f} |")
    over = m["np2_t1_overlap"]
    hidden = 1 - over["comm_ms"] / over["comm_busy_ms"] if over["comm_busy_ms"] > 0 else 0.0
    print(f"overlap: the sums ran {over['comm_busy_ms']:.0f} ms a step, the step waited {over['comm_ms']:.0f} ms "
          f"for them ({100 * hidden:.0f}% ran during backward)")
    for name, r in m.items():
        print(f"  {name}: {r['command']}")
    # this machine's compute time of a step: its faster single process (2 threads on an idle machine, where the
    # other core is free; 1 thread where something else keeps that core busy)
    one = min(m["np1_t1"]["ms"], m["np1_t2"]["ms"])
    print(on_paper(args, one, args.seq))


if __name__ == "__main__":
    main()
