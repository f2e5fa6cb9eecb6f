#!/usr/bin/python3
"""The 0.5-1B presets (issue 21): for each of SmolLM2-135M's, Qwen2.5-0.5B's
and Llama-3.2-1B's shapes with random weights, in one invocation,

  - LoRA training, NeuralForge `benchmark --train --lora-rank R --dtype bf16`
    against the PyTorch peer's fp32 LoRA (frozen base, rank-R adapters on
    q, k, v, o, AdamW on the adapters; bench/lora_memory_vs_torch.py's
    lora_peer_steps, in a child process of its own), same batch and
    sequence, alternating --rounds times: each round's ratio, and the
    median;
  - full fine-tuning (fp32, AdamW on every weight), or `benchmark`'s
    refusal when budget.h's estimate exceeds the machine's memory budget;
  - generation, fp32 and q8 weights: tok/s and bandwidth_use (weight bytes
    read per second against the memory read speed measured in the run).

    /usr/bin/python3 bench/presets_vs_torch.py [--preset all|smollm2-135m|qwen2.5-0.5b|llama3.2-1b]
        [--batch 1] [--seq 256] [--steps 3] [--torch-steps 2] [--rounds 2] [--rank 8] [--dtype bf16]
        [--torch-dtype fp32] [--prompt-tokens 16] [--tokens 32] [--threads N] [--no-torch]

One model is in memory at a time (each run is its own process): the 1B shape
needs about 5 GB (its fp32 weights) at once. docs/performance.md, "0.5-1B
models", records a run."""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NF = os.path.join(ROOT, "build", "neuralforge")
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
PRESETS = ("smollm2-135m", "qwen2.5-0.5b", "llama3.2-1b")


def benchmark(args):
    """`neuralforge benchmark ARGS`: its benchmark message, or its error message (a refusal) as {"error": ...}."""
    p = subprocess.run([NF, "benchmark", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    msgs = [json.loads(line) for line in p.stdout.decode().split("\n") if line.startswith("{")]
    for m in msgs:
        if m["type"] == "benchmark" and p.returncode == 0:
            return m
        if m["type"] == "error":
            return {"error": m["message"], "code": m["code"]}
    sys.exit(f"neuralforge benchmark {' '.join(map(str, args))} failed (exit {p.returncode})")


def peer_env():
    """The peer's environment: libgomp's wait policy as neuralforge sets its own (wait_policy.h,
    GOMP_SPINCOUNT=1000) unless the user chose one. On a shared machine libgomp's default spin (300000) made
    the peer's small element-wise ops cost a time slice each: 21.6 s against 3.3 s a step of the SmolLM2
    shape at a load average of 7-8 on 2 cores, a ratio that measured the wait policy, not the training."""
    env = dict(os.environ)
    if "OMP_WAIT_POLICY" not in env and "GOMP_SPINCOUNT" not in env:
        env["GOMP_SPINCOUNT"] = "1000"
    return env


def torch_round(a, preset):
    """One PyTorch peer run in a child process: {"tok_s", "step_ms", "loss"}."""
    argv = [sys.executable, os.path.abspath(__file__), "--peer", "--preset", preset, "--batch", str(a.batch), "--seq",
            str(a.seq), "--rank", str(a.rank), "--torch-steps", str(a.torch_steps), "--torch-dtype", a.torch_dtype,
            "--threads", str(a.threads)]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=peer_env())
    if p.returncode != 0:
        sys.exit(f"the PyTorch peer failed:\n{p.stderr.decode()[-3000:]}")
    return json.loads(p.stdout.decode().strip().split("\n")[-1])


def peer(a):
    """The child: the preset's HF tensors, random (N(0, 0.02) matrices, unit norms, zero biases, as
    `benchmark`'s params_init_fast spreads them), in --torch-dtype, then lora_peer_steps."""
    import torch

    import hf_ref
    from lora_memory_vs_torch import lora_peer_steps
    from torch_blas import require_optimized_blas

    require_optimized_blas()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = hf_ref.make_config(a.preset)
    dtype = torch.bfloat16 if a.torch_dtype == "bf16" else torch.float32
    P = {}
    for name, shape in hf_ref.tensor_shapes(cfg).items():
        if name.endswith("norm.weight"):
            P[name] = torch.ones(shape, dtype=dtype)
        elif name.endswith(".bias"):
            P[name] = torch.zeros(shape, dtype=dtype)
        else:
            P[name] = torch.empty(shape, dtype=dtype).uniform_(-0.02 * 3 ** 0.5, 0.02 * 3 ** 0.5)
    ms, tok_s, loss = lora_peer_steps(cfg, P, a.batch, a.seq, a.rank, a.torch_steps, a.torch_dtype)
    print(json.dumps(dict(step_ms=ms, tok_s=tok_s, loss=loss)))


def run_preset(a, preset):
    common = ["--preset", preset, "--threads", a.threads]
    train = [*common, "--train", "--batch", a.batch, "--seq", a.seq, "--steps", a.steps]
    lora = [*train, "--lora-rank", a.rank, "--dtype", a.dtype]
    rounds = []
    for _ in range(a.rounds):  # alternating, so a change in the machine's load touches both alike
        nf = benchmark(lora)
        if "error" in nf:
            sys.exit(f"{preset}: LoRA refused: {nf['error']}")
        pt = None if a.no_torch else torch_round(a, preset)
        rounds.append((nf, pt))
    full = benchmark([*train, "--dtype", "fp32"])
    gen = {q: benchmark([*common, "--generate", "--prompt-tokens", a.prompt_tokens, "--tokens", a.tokens, "--quant", q])
           for q in ("none", "q8")}
    nf0 = rounds[0][0]
    print(f"\n{preset}: {nf0['params']:,} weights; batch {a.batch} x seq {a.seq}, {a.threads} threads, "
          f"kernels {nf0['kernels']}")
    nf_tok = [nf["tok_s"] for nf, _ in rounds]
    print(f"  LoRA r={a.rank} {a.dtype}, NeuralForge tok/s by round: {', '.join(f'{t:.1f}' for t in nf_tok)} "
          f"(memory estimate {nf0['memory_estimate_bytes'] / 2**30:.2f} GiB, MFU {100 * nf0['mfu']:.0f}% of a "
          f"{nf0['gemm_peak_gflops']:.0f} GFLOP/s GEMM)")
    if not a.no_torch:
        pt_tok = [pt["tok_s"] for _, pt in rounds]
        ratios = [nf["tok_s"] / pt["tok_s"] for nf, pt in rounds]
        print(f"  PyTorch {a.torch_dtype} LoRA tok/s by round: {', '.join(f'{t:.1f}' for t in pt_tok)}")
        print(f"  NeuralForge / PyTorch by round: {', '.join(f'{r:.2f}x' for r in ratios)}; "
              f"median {statistics.median(ratios):.2f}x")
    if "error" in full:
        print(f"  full fine-tuning fp32: refused: {full['error']}")
    else:
        print(f"  full fine-tuning fp32: {full['tok_s']:.1f} tok/s (memory estimate "
              f"{full['memory_estimate_bytes'] / 2**30:.2f} GiB, MFU {100 * full['mfu']:.0f}%)")
    for q, g in gen.items():
        print(f"  generation {'fp32' if q == 'none' else q}: {g['tok_s']:.1f} tok/s after {a.prompt_tokens} prompt "
              f"tokens, {g['weight_gbytes_s']:.1f} GB/s of weights, bandwidth_use {g['bandwidth_use']:.2f} of a "
              f"{g['memory_read_gbytes_s']:.1f} GB/s read")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="all", choices=("all",) + PRESETS)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3, help="NeuralForge's timed steps (after one warm-up)")
    ap.add_argument("--torch-steps", type=int, default=2, help="PyTorch's timed steps (after one warm-up)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating NeuralForge / PyTorch LoRA rounds")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp32"), help="NeuralForge's LoRA --dtype")
    ap.add_argument("--torch-dtype", default="fp32", choices=("bf16", "fp32"), help="the peer's (bf16: autocast)")
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--no-torch", action="store_true", help="NeuralForge alone")
    ap.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)  # the PyTorch child
    a = ap.parse_args()
    if a.peer:
        return peer(a)
    if not a.no_torch:
        from torch_blas import require_optimized_blas
        env = peer_env()
        policy = {k: env[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in env}
        print(f"PyTorch peer on {require_optimized_blas()}, {policy}")  # before the minutes of runs, not after
    with open("/proc/loadavg") as f:
        print(f"load before: {f.read().strip()}")
    for preset in PRESETS if a.preset == "all" else (a.preset,):
        run_preset(a, preset)
    with open("/proc/loadavg") as f:
        print(f"load after: {f.read().strip()}")


if __name__ == "__main__":
    main()
