#!/usr/bin/python3
"""Peak memory and speed of a LoRA run on a Hugging Face model directory,
NeuralForge against PyTorch (Debian python3-torch) on the same model, batch
and data, in the same invocation (issue 19's memory acceptance:
docs/performance.md records the results).

    /usr/bin/python3 tests/e2e/hf_ref.py write --preset llama3.2-1b --dtype bf16 /tmp/llama1b
    /usr/bin/python3 bench/lora_memory_vs_torch.py --model /tmp/llama1b [--batch 4] [--seq 512] [--rank 16]
                                                   [--steps 3] [--torch-steps 2] [--dtype bf16|fp32]

NeuralForge runs `train --model DIR --lora-rank R` (targets wq,wk,wv,wo,
alpha = rank) on random token ids; its peak RSS is the child's ru_maxrss
(wait4), its tok/s the median of the `step` messages after the first (the
first zeroes fresh pages and compiles oneDNN's kernels), or the only one.

The PyTorch peer, in a child process of its own (so its ru_maxrss is its
own, measured by itself): the directory's tensors as frozen torch tensors (bf16 under --dtype
bf16, else fp32), Hugging Face's LlamaForCausalLM / Qwen2ForCausalLM
computation written out below (RMSNorm, rotate-half RoPE with llama3
scaling, q/k/v biases, GQA, SwiGLU, tied classifier), rank-R adapters on
q,k,v,o in fp32 (y += (x A^T) B^T), under torch.autocast("cpu", bfloat16)
for bf16; its step is forward, cross-entropy, backward and AdamW on the
adapters, timed after one warm-up step. Both use the same threads."""
import argparse
import json
import math
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NF = os.path.join(ROOT, "build", "neuralforge")
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))


def write_tokens(path, vocab, count, seed=1):
    """A NeuralForge token file (docs/formats.md): the 1024-byte header, then uint32 ids."""
    ids = np.random.default_rng(seed).integers(0, vocab, count).astype("<u4")
    header = b"\xff\xffNFTOK\x00" + struct.pack("<IIQI", 1, 4, count, vocab)
    with open(path, "wb") as f:
        f.write(header + bytes(1024 - len(header)) + ids.tobytes())


def neuralforge(a, data, ckpt):
    argv = [NF, "train", "--model", a.model, "--data", data, "--lora-rank", str(a.rank), "--lora-alpha",
            str(a.rank), "--batch", str(a.batch), "--seq", str(a.seq), "--steps", str(a.steps), "--val-every", "0",
            "--dtype", a.dtype, "--threads", str(a.threads), "--ckpt", ckpt]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{out.decode()[-2000:]}")
    msgs = [json.loads(line) for line in out.decode().split("\n") if line]
    steps = [m for m in msgs if m["type"] == "step"]
    later = steps[1:] or steps
    init = next(m for m in msgs if m["type"] == "init")
    return dict(rss=usage.ru_maxrss * 1024, estimate=init["memory_bytes"], activations=init["activation_bytes"],
                tok_s=statistics.median(m["tok_s"] for m in later), first_ms=steps[0]["ms"],
                step_ms=statistics.median(m["ms"] for m in later))


# ---------------------------------------------------------------- the PyTorch peer (a child process)

def lora_peer_steps(cfg, P, batch, seq, rank, steps, dtype):
    """The PyTorch peer's LoRA training on the model of HF config cfg whose frozen tensors (HF names) are P:
    one warm-up step, then `steps` timed ones, on random tokens. Returns (median ms a step, tok/s, last loss).
    bench/presets_vs_torch.py runs it on random weights."""
    import torch
    import torch.nn.functional as F

    import hf_ref

    L, nh, nkv, hd = cfg["num_hidden_layers"], cfg["num_attention_heads"], hf_ref.kv_heads(cfg), hf_ref.head_dim(cfg)
    eps, B, T, r = hf_ref.norm_eps(cfg), batch, seq, rank
    torch.manual_seed(0)
    adapters = {}
    for i in range(L):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out, n = P[hf_ref.proj_name(i, proj) + ".weight"].shape
            adapters[(i, proj)] = (torch.nn.Parameter(torch.empty(r, n).uniform_(-1, 1) / math.sqrt(n)),
                                   torch.nn.Parameter(torch.zeros(out, r)))
    params = [p for pair in adapters.values() for p in pair]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    ang = torch.outer(torch.arange(T, dtype=torch.float64), hf_ref.rope_inv_freq(cfg))
    cos = torch.cat((ang, ang), -1).cos()[None, :, None, :].float()
    sin = torch.cat((ang, ang), -1).sin()[None, :, None, :].float()
    mask = torch.full((T, T), float("-inf")).triu(1)

    def rms(x, w):
        x = x.float()
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w.float()

    def linear(x, i, proj):
        name = hf_ref.proj_name(i, proj) + "."
        y = F.linear(x, P[name + "weight"], P.get(name + "bias"))
        if (i, proj) in adapters:
            A, Bm = adapters[(i, proj)]
            y = y + (x @ A.T) @ Bm.T
        return y

    def rotate(x):
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), -1)

    def loss_of(tokens, targets):
        x = P["model.embed_tokens.weight"][tokens].float()
        for i in range(L):
            p = f"model.layers.{i}."
            h = rms(x, P[p + "input_layernorm.weight"])
            q = linear(h, i, "q_proj").view(B, T, nh, hd)
            k = linear(h, i, "k_proj").view(B, T, nkv, hd)
            v = linear(h, i, "v_proj").view(B, T, nkv, hd)
            q, k = q * cos + rotate(q) * sin, k * cos + rotate(k) * sin
            k, v = k.repeat_interleave(nh // nkv, 2), v.repeat_interleave(nh // nkv, 2)
            att = (torch.einsum("bqhd,bkhd->bhqk", q, k) * hd ** -0.5 + mask).softmax(-1)
            o = torch.einsum("bhqk,bkhd->bqhd", att, v).reshape(B, T, nh * hd)
            x = x + linear(o, i, "o_proj")
            h = rms(x, P[p + "post_attention_layernorm.weight"])
            x = x + linear(F.silu(linear(h, i, "gate_proj")) * linear(h, i, "up_proj"), i, "down_proj")
        x = rms(x, P["model.norm.weight"])
        head = P.get("lm_head.weight", P["model.embed_tokens.weight"])
        return F.cross_entropy(F.linear(x, head).float().view(-1, head.shape[0]), targets.view(-1))

    V = cfg["vocab_size"]
    tokens, targets = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    times = []
    for step in range(steps + 1):
        t0 = time.time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = loss_of(tokens, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step > 0:
            times.append(time.time() - t0)
    ms = 1000 * statistics.median(times)
    return ms, B * T / (ms / 1000), loss.item()


def peer(a):
    import torch

    from torch_blas import require_optimized_blas
    import hf_ref

    require_optimized_blas()
    torch.set_num_threads(a.threads)
    cfg, arrays = hf_ref.read_hf_dir(a.model)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    P = {}
    for name in list(arrays):  # one tensor at a time: the fp32 arrays go as the torch copies come
        P[name] = torch.from_numpy(arrays.pop(name)).to(dtype)
    ms, tok_s, loss = lora_peer_steps(cfg, P, a.batch, a.seq, a.rank, a.torch_steps, a.dtype)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(dict(step_ms=ms, tok_s=tok_s, loss=loss, rss=rss)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a Hugging Face model directory")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3, help="NeuralForge's steps")
    ap.add_argument("--torch-steps", type=int, default=2, help="PyTorch's timed steps (after one warm-up)")
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp32"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--no-torch", action="store_true", help="NeuralForge alone")
    ap.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)  # the PyTorch child
    a = ap.parse_args()
    if a.peer:
        return peer(a)
    with open(os.path.join(a.model, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "tokens.bin")
        write_tokens(data, vocab, max(200_000, 4 * a.batch * a.seq * (a.steps + 1)))
        nf = neuralforge(a, data, os.path.join(d, "lora.ckpt"))
    gib = lambda b: f"{b / 2**30:.2f} GiB"
    print(f"{a.model}: LoRA r={a.rank} on wq,wk,wv,wo, batch {a.batch} x seq {a.seq}, --dtype {a.dtype}, "
          f"{a.threads} threads")
    print(f"NeuralForge: peak RSS {gib(nf['rss'])} ({nf['rss'] / 1e9:.2f} GB), estimate {gib(nf['estimate'])}, "
          f"activations {gib(nf['activations'])}, {nf['tok_s']:.1f} tok/s ({nf['step_ms']:.0f} ms a step; "
          f"first step {nf['first_ms']:.0f} ms)")
    if a.no_torch:
        return
    argv = [sys.executable, os.path.abspath(__file__), "--peer", "--model", a.model, "--batch", str(a.batch),
            "--seq", str(a.seq), "--rank", str(a.rank), "--torch-steps", str(a.torch_steps), "--dtype", a.dtype,
            "--threads", str(a.threads)]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.exit(f"the PyTorch peer failed:\n{p.stderr.decode()[-3000:]}")
    pt = json.loads(p.stdout.decode().strip().split("\n")[-1])
    print(f"PyTorch: peak RSS {gib(pt['rss'])}, {pt['tok_s']:.1f} tok/s ({pt['step_ms']:.0f} ms a step)")
    print(f"NeuralForge / PyTorch tok/s: {nf['tok_s'] / pt['tok_s']:.2f}x")


if __name__ == "__main__":
    main()
