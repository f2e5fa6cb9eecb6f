#!/usr/bin/python3
"""Training speed of NeuralForge against PyTorch (Debian python3-torch) on
the same LLaMA shape, batch and sequence, in the same invocation.

    /usr/bin/python3 bench/train_vs_torch.py [--preset 15M|42M|110M] [--batch 4] [--seq 256] [--steps 3]
                                            [--lora-rank R] [--dtype fp32|bf16] [--threads N]

The PyTorch peer is llama2.c's model.py architecture written below (RMSNorm,
RoPE on adjacent pairs, SwiGLU, tied classifier), fp32, torch.optim.AdamW,
on random tokens; its step is forward, backward, clip_grad_norm_ and the
AdamW step, timed after one warm-up step, like `neuralforge benchmark
--train`. With --lora-rank, the peer trains rank-r adapters on wq, wk, wv,
wo with the base frozen. With --dtype bf16, NeuralForge runs `--dtype bf16`
and the peer runs under torch.autocast("cpu", dtype=torch.bfloat16): bf16
matrix products, fp32 weights and optimizer state in both. Both use the
same number of threads."""
import argparse
import json
import math
import os
import subprocess
import time

import torch
import torch.nn.functional as F

from torch_blas import require_optimized_blas

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NF = os.path.join(ROOT, "build", "neuralforge")
PRESETS = {"15M": (288, 768, 6, 6), "42M": (512, 1376, 8, 8), "110M": (768, 2048, 12, 12)}
VOCAB = 32000


class Lora(torch.nn.Module):
    def __init__(self, base, r):
        super().__init__()
        self.base, self.s = base, 1.0
        self.a = torch.nn.Parameter(torch.empty(r, base.in_features).uniform_(-1, 1) / math.sqrt(base.in_features))
        self.b = torch.nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x):
        return self.base(x) + self.s * (x @ self.a.T) @ self.b.T


class Block(torch.nn.Module):
    def __init__(self, dim, hidden, heads):
        super().__init__()
        self.heads = heads
        self.wq, self.wk, self.wv, self.wo = (torch.nn.Linear(dim, dim, bias=False) for _ in range(4))
        self.w1, self.w3 = (torch.nn.Linear(dim, hidden, bias=False) for _ in range(2))
        self.w2 = torch.nn.Linear(hidden, dim, bias=False)
        self.n1, self.n2 = torch.nn.Parameter(torch.ones(dim)), torch.nn.Parameter(torch.ones(dim))

    def forward(self, x, cos, sin):
        B, T, D = x.shape
        hs = D // self.heads

        def rms(v, w):
            return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5) * w

        def rope(v):
            v = v.view(B, T, self.heads, hs // 2, 2)
            a, b = v[..., 0], v[..., 1]
            return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).view(B, T, self.heads, hs).transpose(1, 2)

        h = rms(x, self.n1)
        q, k = rope(self.wq(h)), rope(self.wk(h))
        v = self.wv(h).view(B, T, self.heads, hs).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True) if hasattr(F, "scaled_dot_product_attention") \
            else (torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(hs) +
                                torch.full((T, T), float("-inf")).triu(1), -1) @ v)
        x = x + self.wo(o.transpose(1, 2).reshape(B, T, D))
        h = rms(x, self.n2)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


class Llama(torch.nn.Module):
    def __init__(self, dim, hidden, layers, heads, seq):
        super().__init__()
        self.emb = torch.nn.Embedding(VOCAB, dim)
        self.layers = torch.nn.ModuleList(Block(dim, hidden, heads) for _ in range(layers))
        self.norm = torch.nn.Parameter(torch.ones(dim))
        hs = dim // heads
        freqs = 1.0 / (10000.0 ** (torch.arange(0, hs, 2).float() / hs))
        ang = torch.outer(torch.arange(seq).float(), freqs)[None, :, None, :]
        self.cos, self.sin = torch.cos(ang), torch.sin(ang)

    def forward(self, tokens, targets):
        x = self.emb(tokens)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * self.norm
        logits = x @ self.emb.weight.T
        return F.cross_entropy(logits.view(-1, VOCAB), targets.view(-1))


def torch_peer(a):
    dim, hidden, layers, heads = PRESETS[a.preset]
    torch.manual_seed(0)
    model = Llama(dim, hidden, layers, heads, a.seq)
    if a.lora_rank:
        for p in model.parameters():
            p.requires_grad_(False)
        for blk in model.layers:
            for name in ("wq", "wk", "wv", "wo"):
                setattr(blk, name, Lora(getattr(blk, name), a.lora_rank))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    tokens = torch.randint(0, VOCAB, (a.batch, a.seq))
    targets = torch.randint(0, VOCAB, (a.batch, a.seq))
    times = []
    for step in range(a.steps + 1):
        t0 = time.time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.dtype == "bf16"):
            loss = model(tokens, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step > 0:
            times.append(time.time() - t0)
    ms = 1000 * sum(times) / len(times)
    return ms, a.batch * a.seq / (ms / 1000)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="15M", choices=PRESETS)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--lora-rank", type=int, default=0)
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    blas = require_optimized_blas()  # before the minutes of runs, not after
    # NeuralForge first, before torch starts its thread pool in this process
    out = subprocess.run([NF, "benchmark", "--train", "--preset", a.preset, "--batch", str(a.batch), "--seq",
                          str(a.seq), "--steps", str(a.steps), "--lora-rank", str(a.lora_rank), "--dtype", a.dtype,
                          "--threads", str(a.threads)], capture_output=True, check=True).stdout
    nf = json.loads(out.decode().strip().split("\n")[-1])
    torch.set_num_threads(a.threads)
    torch_ms, torch_tok_s = torch_peer(a)
    what = f"{a.preset}, batch {a.batch} x seq {a.seq}, {'LoRA r=' + str(a.lora_rank) if a.lora_rank else 'full'}, {a.dtype}"
    print(f"{what}, {a.threads} threads, torch {torch.__version__} on {blas}")
    print("| run | ms/step | tokens/s |")
    print("|---|---|---|")
    print(f"| NeuralForge | {nf['ms_per_step']:.0f} | {nf['tok_s']:.0f} |")
    print(f"| PyTorch | {torch_ms:.0f} | {torch_tok_s:.0f} |")
    print(f"NeuralForge / PyTorch tokens/s: {nf['tok_s'] / torch_tok_s:.2f}x; NeuralForge {nf['gflops']:.0f} GFLOP/s, "
          f"MFU {100 * nf['mfu']:.0f}% of a {nf['gemm_peak_gflops']:.0f} GFLOP/s GEMM")


if __name__ == "__main__":
    main()
