"""Reference material shared by the end-to-end tests: random LLaMA weights,
writers for llama2.c's v0/v1/v2 model files, and a float64 PyTorch forward
pass written from llama2.c's model.py (adjacent-pair RoPE, GQA, SwiGLU)."""
import struct

import numpy as np
import torch

CFG = dict(dim=48, hidden_dim=100, n_layers=3, n_heads=6, n_kv_heads=2, vocab_size=97, seq_len=40)


def random_weights(seed=0, cfg=CFG):
    g = np.random.default_rng(seed)
    D, H, L, V = cfg["dim"], cfg["hidden_dim"], cfg["n_layers"], cfg["vocab_size"]
    KV = D // cfg["n_heads"] * cfg["n_kv_heads"]
    f = lambda *shape, s=0.2: (g.standard_normal(shape) * s).astype(np.float32)
    return dict(
        emb=f(V, D, s=1.0), rms_att=1 + f(L, D, s=0.1), wq=f(L, D, D), wk=f(L, KV, D), wv=f(L, KV, D),
        wo=f(L, D, D), rms_ffn=1 + f(L, D, s=0.1), w1=f(L, H, D), w2=f(L, D, H), w3=f(L, H, D),
        rms_final=1 + f(D, s=0.1), wcls=f(V, D))


def header7(cfg, vocab):
    return struct.pack("7i", cfg["dim"], cfg["hidden_dim"], cfg["n_layers"], cfg["n_heads"], cfg["n_kv_heads"],
                       vocab, cfg["seq_len"])


def write_v0(path, w, cfg=CFG):
    hs = cfg["dim"] // cfg["n_heads"]
    with open(path, "wb") as f:
        f.write(header7(cfg, -cfg["vocab_size"]))  # negative: separate classifier
        for k in ("emb", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final"):
            f.write(w[k].tobytes())
        f.write(np.zeros(cfg["seq_len"] * hs, np.float32).tobytes())  # freq_cis real + imag
        f.write(w["wcls"].tobytes())


def ak42_header(cfg, version, extra=b""):
    h = struct.pack("<Ii", 0x616B3432, version) + header7(cfg, cfg["vocab_size"]) + struct.pack("B", 0) + extra
    return h + b"\0" * (256 - len(h))


def write_v1(path, w, cfg=CFG):
    with open(path, "wb") as f:
        f.write(ak42_header(cfg, 1))
        for k in ("rms_att", "rms_ffn", "rms_final", "emb", "wq", "wk", "wv", "wo", "w1", "w2", "w3", "wcls"):
            f.write(w[k].tobytes())


def quantize(t, gs):
    flat = t.reshape(-1, gs)
    scale = np.abs(flat).max(axis=1) / 127.0
    q = np.round(flat / scale[:, None]).astype(np.int8)
    return q, scale.astype(np.float32)


def write_v2(path, w, gs, cfg=CFG):
    """llama2.c's Q8_0 export: fp32 norms, then per matrix and per layer int8 values followed by the scales."""
    with open(path, "wb") as f:
        f.write(ak42_header(cfg, 2, struct.pack("<i", gs)))
        for k in ("rms_att", "rms_ffn", "rms_final"):
            f.write(w[k].tobytes())
        mats = [w["emb"]] + [w[k][l] for k in ("wq", "wk", "wv", "wo", "w1", "w2", "w3")
                             for l in range(cfg["n_layers"])] + [w["wcls"]]
        deq = []
        for m in mats:
            q, s = quantize(m, gs)
            f.write(q.tobytes())
            f.write(s.tobytes())
            deq.append((q.astype(np.float32) * s[:, None]).reshape(m.shape))
    return deq


def quantize_rows(x, gs):
    """A Q8 product's input as the engine quantizes it when the groups tile
    its rows: per group of gs, scale = max |x| / 127 and x / scale rounded
    to nearest even, in float32 as the engine computes them."""
    if x.shape[-1] % gs:
        return x  # the groups straddle rows: the engine multiplies fp32 x
    g = x.to(torch.float32).reshape(*x.shape[:-1], -1, gs)
    scale = g.abs().amax(-1, keepdim=True) / 127.0
    inv = torch.where(scale > 0, 1.0 / scale, torch.zeros_like(scale))
    return (torch.round(g * inv) * scale).reshape(x.shape).to(torch.float64)


def torch_logits(w, tokens, cfg=CFG, act_gs=None):
    """LLaMA as llama2.c's model.py defines it, in float64. act_gs: the
    inputs of the weight products quantized as a Q8 model's are (quantize_rows)."""
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in w.items()}
    D, nh, nkv = cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"]
    hs = D // nh
    T = len(tokens)
    q8 = (lambda x: quantize_rows(x, act_gs)) if act_gs else (lambda x: x)

    def rms(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * weight

    def rope(x):  # x (T, heads, hs): rotate adjacent pairs
        freqs = 1.0 / (10000.0 ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs))
        ang = torch.outer(torch.arange(T, dtype=torch.float64), freqs)  # (T, hs/2)
        xr = x.reshape(T, x.shape[1], hs // 2, 2)
        c, s = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
        out = torch.stack([xr[..., 0] * c - xr[..., 1] * s, xr[..., 0] * s + xr[..., 1] * c], dim=-1)
        return out.reshape(T, x.shape[1], hs)

    x = t["emb"][torch.tensor(tokens)]
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for l in range(cfg["n_layers"]):
        h = q8(rms(x, t["rms_att"][l]))
        q = rope((h @ t["wq"][l].T).view(T, nh, hs))
        k = rope((h @ t["wk"][l].T).view(T, nkv, hs))
        v = (h @ t["wv"][l].T).view(T, nkv, hs)
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        att = torch.einsum("qhd,khd->hqk", q, k) / hs ** 0.5 + mask
        o = torch.einsum("hqk,khd->qhd", att.softmax(-1), v).reshape(T, D)
        x = x + q8(o) @ t["wo"][l].T
        h = q8(rms(x, t["rms_ffn"][l]))
        x = x + q8(torch.nn.functional.silu(h @ t["w1"][l].T) * (h @ t["w3"][l].T)) @ t["w2"][l].T
    return (q8(rms(x, t["rms_final"])) @ t["wcls"].T).numpy()




ORDER = ["emb", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final", "wcls"]


def torch_loss(t, tokens, targets, cfg, shared, lora=None, x0=None):
    """t: dict of float64 leaf tensors; tokens/targets (B, T).
    lora: {"scale": s, "A": {name: (L, r, in)}, "B": {name: (L, out, r)}} adds
    s * B A x to each named projection (LoRA); "norms" may replace rms_*.
    x0: the embedded tokens (B, T, D) to use instead of looking them up."""
    if lora and "norms" in lora:
        t = {**t, **lora["norms"]}

    def proj(h, name, l):
        y = h @ t[name][l].T
        if lora and name in lora["A"]:
            y = y + lora["scale"] * (h @ lora["A"][name][l].T) @ lora["B"][name][l].T
        return y

    D, nh, nkv = cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"]
    hs = D // nh
    B, T = tokens.shape

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    def rope(x):  # (B, T, heads, hs), adjacent pairs
        freqs = 1.0 / (10000.0 ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs))
        ang = torch.outer(torch.arange(T, dtype=torch.float64), freqs)[None, :, None, :]
        xr = x.reshape(B, T, x.shape[2], hs // 2, 2)
        c, s = torch.cos(ang), torch.sin(ang)
        return torch.stack([xr[..., 0] * c - xr[..., 1] * s, xr[..., 0] * s + xr[..., 1] * c], -1).reshape(x.shape)

    x = t["emb"][torch.tensor(tokens)] if x0 is None else x0
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for l in range(cfg["n_layers"]):
        h = rms(x, t["rms_att"][l])
        q = rope(proj(h, "wq", l).view(B, T, nh, hs))
        k = rope(proj(h, "wk", l).view(B, T, nkv, hs)).repeat_interleave(nh // nkv, 2)
        v = proj(h, "wv", l).view(B, T, nkv, hs).repeat_interleave(nh // nkv, 2)
        att = (torch.einsum("bqhd,bkhd->bhqk", q, k) / hs ** 0.5 + mask).softmax(-1)
        x = x + proj(torch.einsum("bhqk,bkhd->bqhd", att, v).reshape(B, T, D), "wo", l)
        h = rms(x, t["rms_ffn"][l])
        x = x + proj(torch.nn.functional.silu(proj(h, "w1", l)) * proj(h, "w3", l), "w2", l)
    logits = rms(x, t["rms_final"]) @ (t["emb"] if shared else t["wcls"]).T
    return torch.nn.functional.cross_entropy(logits.reshape(B * T, -1), torch.tensor(targets).reshape(-1))
