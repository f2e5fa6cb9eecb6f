#!/usr/bin/python3
"""Generation speed of NeuralForge against PyTorch (Debian python3-torch) on
the same LLaMA shape, in the same invocation.

    /usr/bin/python3 bench/generate_vs_torch.py [--preset 15M|42M|110M] [--prompt-tokens 128] [--tokens 128]
                                               [--threads N]

Both process the prompt as one batch (a warm-up pass, then a timed one),
then generate greedily one token at a time with a KV cache, in fp32
(NeuralForge also with --quant q8). The PyTorch peer is llama2.c's model.py
architecture, written below with a KV cache, run under
torch.inference_mode()."""
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


def rms(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w


class Model:
    def __init__(self, dim, hidden, layers, heads, seq):
        g = torch.Generator().manual_seed(0)
        r = lambda *s: torch.randn(*s, generator=g) * 0.02
        self.heads, self.hs = heads, dim // heads
        self.emb = r(VOCAB, dim)
        self.layers = [dict(wq=r(dim, dim), wk=r(dim, dim), wv=r(dim, dim), wo=r(dim, dim), w1=r(hidden, dim),
                            w2=r(dim, hidden), w3=r(hidden, dim), n1=torch.ones(dim), n2=torch.ones(dim))
                       for _ in range(layers)]
        self.norm = torch.ones(dim)
        freqs = 1.0 / (10000.0 ** (torch.arange(0, self.hs, 2).float() / self.hs))
        ang = torch.outer(torch.arange(seq).float(), freqs)
        self.cos, self.sin = torch.cos(ang), torch.sin(ang)
        self.cache = [[torch.zeros(seq, heads, self.hs), torch.zeros(seq, heads, self.hs)] for _ in range(layers)]

    def rope(self, x, pos):  # x (T, heads, hs)
        T = x.shape[0]
        c, s = self.cos[pos:pos + T, None, :], self.sin[pos:pos + T, None, :]
        x = x.view(T, self.heads, self.hs // 2, 2)
        a, b = x[..., 0], x[..., 1]
        return torch.stack([a * c - b * s, a * s + b * c], -1).view(T, self.heads, self.hs)

    def forward(self, tokens, pos):
        x = self.emb[tokens]
        T = x.shape[0]
        for L, (kc, vc) in zip(self.layers, self.cache):
            h = rms(x, L["n1"])
            kc[pos:pos + T] = self.rope(F.linear(h, L["wk"]).view(T, self.heads, self.hs), pos)
            vc[pos:pos + T] = F.linear(h, L["wv"]).view(T, self.heads, self.hs)
            q = self.rope(F.linear(h, L["wq"]).view(T, self.heads, self.hs), pos).transpose(0, 1)
            k, v = kc[:pos + T].transpose(0, 1), vc[:pos + T].transpose(0, 1)
            att = q @ k.transpose(-1, -2) / math.sqrt(self.hs)
            mask = torch.full((T, pos + T), float("-inf")).triu(pos + 1)
            o = (att + mask).softmax(-1) @ v
            x = x + F.linear(o.transpose(0, 1).reshape(T, -1), L["wo"])
            h = rms(x, L["n2"])
            x = x + F.linear(F.silu(F.linear(h, L["w1"])) * F.linear(h, L["w3"]), L["w2"])
        return F.linear(rms(x[-1], self.norm), self.emb)


def torch_peer(a):
    dim, hidden, layers, heads = PRESETS[a.preset]
    m = Model(dim, hidden, layers, heads, a.prompt_tokens + a.tokens)
    prompt = torch.randint(0, VOCAB, (a.prompt_tokens,))
    with torch.inference_mode():
        m.forward(prompt, 0)  # warm-up pass, as NeuralForge's benchmark makes one
        t0 = time.time()
        logits = m.forward(prompt, 0)
        prompt_s = time.time() - t0
        t0 = time.time()
        for pos in range(a.prompt_tokens, a.prompt_tokens + a.tokens):
            logits = m.forward(logits.argmax().view(1), pos)
        gen_s = time.time() - t0
    return a.prompt_tokens / prompt_s, a.tokens / gen_s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="110M", choices=PRESETS)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    blas = require_optimized_blas()  # before the minutes of runs, not after
    nf = {}
    for quant in ("none", "q8"):  # NeuralForge first, before torch starts its thread pool in this process
        out = subprocess.run([NF, "benchmark", "--generate", "--preset", a.preset, "--prompt-tokens",
                              str(a.prompt_tokens), "--tokens", str(a.tokens), "--quant", quant, "--threads",
                              str(a.threads)], capture_output=True, check=True).stdout
        nf[quant] = json.loads(out.decode().strip().split("\n")[-1])
    torch.set_num_threads(a.threads)
    torch_prompt, torch_gen = torch_peer(a)
    print(f"{a.preset}, {a.prompt_tokens} prompt tokens then {a.tokens} greedy tokens, {a.threads} threads, "
          f"torch {torch.__version__} on {blas}")
    print("| run | prompt tok/s | generated tok/s |")
    print("|---|---|---|")
    print(f"| NeuralForge fp32 | {nf['none']['prompt_tok_s']:.0f} | {nf['none']['tok_s']:.1f} |")
    print(f"| NeuralForge q8 | {nf['q8']['prompt_tok_s']:.0f} | {nf['q8']['tok_s']:.1f} |")
    print(f"| PyTorch fp32 | {torch_prompt:.0f} | {torch_gen:.1f} |")
    print(f"NeuralForge / PyTorch generated tok/s: fp32 {nf['none']['tok_s'] / torch_gen:.2f}x, "
          f"q8 {nf['q8']['tok_s'] / torch_gen:.2f}x; prompt {nf['none']['prompt_tok_s'] / torch_prompt:.2f}x")


if __name__ == "__main__":
    main()
