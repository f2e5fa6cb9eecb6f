"""The Hugging Face reference (hf_ref.py) proved on its own, without NeuralForge:
- llama (theta 10000, untied) and SmolLM2's shape (tied) equal llama_ref.py's
  llama2.c reference (itself checked against llama2.c's run.c) once q/k rows go
  from HF's rotate-half layout to llama2.c's adjacent pairs: logits, every
  gradient, and LoRA gradients;
- llama3 RoPE scaling equals the published formula worked by hand (scalar math
  and pinned values) and llama.cpp's rope_freqs factors (inv_freq / factor);
- every family equals an incremental numpy implementation written differently
  (a KV cache, one position at a time, RoPE as a complex rotation of
  (x[i], x[i + half]), loops over heads), so causality, GQA's head mapping,
  biases, q/k norms and head_dim != hidden / heads are checked twice;
- Qwen3's q_norm/k_norm are per head (scaling one head's q rows changes
  nothing) and matter (other weights change the output); Qwen2's q/k/v biases
  each matter and it has no o_proj bias;
- gradients (full and LoRA) against finite differences, the masked mean loss,
  LoRA against weights merged by hand (PEFT's alpha / r);
- the writer: bf16 rounding to nearest even (against torch's own conversion and
  hand-picked bit patterns), safetensors' layout, shards with HF's index,
  config keys per family, the CLI, and the refusals."""
import json
import math
import os
import struct
import subprocess
import sys

import numpy as np
import torch

from harness import run_all, test, tmpdir

import hf_ref as H
from llama_ref import torch_logits, torch_loss

HERE = os.path.dirname(os.path.abspath(__file__))
FAMILIES = ("llama", "llama3", "smollm2", "qwen2", "qwen3")
LLAMA2C = {"q_proj": "wq", "k_proj": "wk", "v_proj": "wv", "o_proj": "wo", "gate_proj": "w1", "down_proj": "w2",
           "up_proj": "w3"}


def rel_err(a, b):
    return float(np.abs(np.asarray(a) - b).max() / max(np.abs(b).max(), 1e-300))


hf_to_pairs = H.hf_rows_to_pairs


def to_llama2c(cfg, t):
    """llama_ref's weight dict and config for an HF llama model."""
    L, nh, nkv = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    layer = lambda name: np.stack([t[f"model.layers.{i}.{name}"] for i in range(L)])
    w = dict(emb=t["model.embed_tokens.weight"], rms_att=layer("input_layernorm.weight"),
             rms_ffn=layer("post_attention_layernorm.weight"), rms_final=t["model.norm.weight"])
    for proj, ours in LLAMA2C.items():
        w[ours] = np.stack([t[H.proj_name(i, proj) + ".weight"] for i in range(L)])
    w["wq"] = np.stack([hf_to_pairs(m, nh) for m in w["wq"]])
    w["wk"] = np.stack([hf_to_pairs(m, nkv) for m in w["wk"]])
    w["wcls"] = t["model.embed_tokens.weight" if cfg["tie_word_embeddings"] else "lm_head.weight"]
    lcfg = dict(dim=cfg["hidden_size"], hidden_dim=cfg["intermediate_size"], n_layers=L, n_heads=nh, n_kv_heads=nkv,
                vocab_size=cfg["vocab_size"], seq_len=64)
    return w, lcfg


def llama2c_models():
    """llama_ref computes theta 10000, eps 1e-5, head_dim = hidden / heads: an untied llama and a tied SmolLM2."""
    yield H.random_model("llama", 3, num_hidden_layers=3)
    yield H.random_model("smollm2", 4, rope_theta=10000.0)


def batch(cfg, seed, B=2, T=9, masked=False):
    g = np.random.default_rng(seed)
    tokens = g.integers(0, cfg["vocab_size"], (B, T))
    targets = g.integers(0, cfg["vocab_size"], (B, T))
    if masked:
        targets[0, :3] = -1
        targets[1, 5] = -7
    return tokens, targets


@test
def llama_logits_and_gradients_equal_the_llama2c_reference():
    for cfg, t in llama2c_models():
        tokens, targets = batch(cfg, 1)
        w, lcfg = to_llama2c(cfg, t)
        err = rel_err(H.logits(cfg, t, tokens[0]), torch_logits(w, list(tokens[0]), lcfg))
        assert err < 1e-12, (cfg["num_attention_heads"], err)
        loss, grads = H.loss_and_grads(cfg, t, tokens, targets)
        leaves = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in w.items()
                  if k != "wcls" or not cfg["tie_word_embeddings"]}
        ref = torch_loss(leaves, tokens, targets, lcfg, shared=cfg["tie_word_embeddings"])
        ref.backward()
        assert abs(loss - ref.item()) < 1e-12 * abs(ref.item()), (loss, ref.item())
        ours, _ = to_llama2c(cfg, grads)  # gradients permute as their weights do
        for k, v in leaves.items():
            assert np.abs(v.grad.numpy()).max() > 0, k
            assert rel_err(ours[k], v.grad.numpy()) < 1e-10, k
        assert len(grads) == len(t)


@test
def llama_lora_gradients_equal_the_llama2c_reference():
    for cfg, t in llama2c_models():
        tokens, targets = batch(cfg, 2)
        r, alpha, L = 3, 5.0, cfg["num_hidden_layers"]
        adapters = H.random_lora(cfg, 7, r)
        loss, grads = H.lora_loss_and_grads(cfg, t, adapters, r, alpha, tokens, targets)
        w, lcfg = to_llama2c(cfg, t)
        heads = {"q_proj": cfg["num_attention_heads"], "k_proj": cfg["num_key_value_heads"]}
        # B's rows are the projection's outputs: they permute with q/k's rows; A's do not
        fix = lambda proj, ab, m: hf_to_pairs(m, heads[proj]) if ab == "B" and proj in heads else m
        stack = lambda src, proj, ab: np.stack([fix(proj, ab, src[H.lora_name(i, proj, ab)]) for i in range(L)])
        A = {LLAMA2C[p]: torch.tensor(stack(adapters, p, "A"), dtype=torch.float64, requires_grad=True)
             for p in H.PROJS}
        B = {LLAMA2C[p]: torch.tensor(stack(adapters, p, "B"), dtype=torch.float64, requires_grad=True)
             for p in H.PROJS}
        base = {k: torch.tensor(v, dtype=torch.float64) for k, v in w.items()}
        ref = torch_loss(base, tokens, targets, lcfg, cfg["tie_word_embeddings"],
                         lora={"scale": alpha / r, "A": A, "B": B})
        ref.backward()
        assert abs(loss - ref.item()) < 1e-12 * abs(ref.item())
        for p in H.PROJS:
            for ab, ref_t in (("A", A), ("B", B)):
                theirs = ref_t[LLAMA2C[p]].grad.numpy()
                assert np.abs(theirs).max() > 0, (p, ab)
                assert rel_err(stack(grads, p, ab), theirs) < 1e-10, (p, ab)


def llama3_scalar(f, s):
    """The llama3 rule for one inverse frequency, as the Llama 3.1 release describes it."""
    wavelen = 2 * math.pi / f
    if wavelen < s["original_max_position_embeddings"] / s["high_freq_factor"]:
        return f
    if wavelen > s["original_max_position_embeddings"] / s["low_freq_factor"]:
        return f / s["factor"]
    smooth = (s["original_max_position_embeddings"] / wavelen - s["low_freq_factor"]) / \
        (s["high_freq_factor"] - s["low_freq_factor"])
    return (1 - smooth) * f / s["factor"] + smooth * f


def llamacpp_rope_factors(freqs, s):
    """convert_hf_to_gguf.py's rope_freqs tensor: llama.cpp divides each frequency by its factor."""
    lo, hi = s["original_max_position_embeddings"] / s["low_freq_factor"], \
        s["original_max_position_embeddings"] / s["high_freq_factor"]
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < hi:
            out.append(1.0)
        elif wavelen > lo:
            out.append(s["factor"])
        else:
            smooth = (s["original_max_position_embeddings"] / wavelen - s["low_freq_factor"]) / \
                (s["high_freq_factor"] - s["low_freq_factor"])
            out.append(1 / ((1 - smooth) / s["factor"] + smooth))
    return np.array(out)


@test
def llama3_rope_scaling_equals_the_published_formula_and_llamacpp_factors():
    cfg = H.make_config("llama3.2-1b")
    s = cfg["rope_scaling"]
    inv = H.rope_inv_freq(cfg).numpy()
    base = np.array([500000.0 ** (-2 * i / 64) for i in range(32)])
    assert inv.shape == (32,)
    # Llama 3.2's bands: i < 15 kept (wavelength < 2048), 15..17 smoothed, > 17 divided by 32
    assert rel_err(inv[:15], base[:15]) < 1e-15
    assert rel_err(inv[18:], base[18:] / 32) < 1e-15
    for i in (0, 14, 15, 16, 17, 18, 31):
        assert abs(inv[i] - llama3_scalar(base[i], s)) <= 1e-15 * base[i], i
    # i = 16 by hand: f = 500000^-0.5 = 1.41421356e-3, wavelength 2 pi / f = 4442.8829, smooth =
    # (8192 / 4442.8829 - 1) / 3 = 0.2812837, f * ((1 - smooth) / 32 + smooth) = f * 0.30374358 = 4.295568e-4
    assert abs(inv[16] - 4.295568e-4) < 1e-6 * 4.3e-4, inv[16]
    assert abs(inv[15] / base[15] - 1 / 32) > 1e-3 and abs(inv[15] / base[15] - 1) > 1e-3  # smoothed, really
    assert rel_err(inv, base / llamacpp_rope_factors(base, s)) < 1e-14
    # and the tiny llama3 family's scaling shows within 40 positions
    cfg, t = H.random_model("llama3", 5)
    plain = dict(cfg, rope_scaling=None)
    tokens = np.arange(40) % cfg["vocab_size"]
    assert rel_err(H.logits(plain, t, tokens), H.logits(cfg, t, tokens)) > 1e-2


def numpy_incremental(cfg, t, tokens):
    """Logits one position at a time with a KV cache: a second implementation, independent of hf_ref's
    (RoPE as a complex rotation, loops over heads, biases and norms wherever the checkpoint has them)."""
    t = {k: np.asarray(v, np.float64) for k, v in t.items()}
    nh, nkv, eps = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["rms_norm_eps"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // nh
    inv = np.array([cfg["rope_theta"] ** (-2 * i / hd) for i in range(hd // 2)])
    if cfg.get("rope_scaling"):
        inv = np.array([llama3_scalar(f, cfg["rope_scaling"]) for f in inv])
    rms = lambda x, w: x / math.sqrt(np.mean(x * x) + eps) * w

    def lin(x, name):
        return t[name + ".weight"] @ x + t.get(name + ".bias", 0.0)

    def rope(v, pos):
        z = (v[:hd // 2] + 1j * v[hd // 2:]) * np.exp(1j * pos * inv)
        return np.concatenate([z.real, z.imag])

    keys = [[] for _ in range(cfg["num_hidden_layers"])]
    values = [[] for _ in range(cfg["num_hidden_layers"])]
    out = []
    for pos, tok in enumerate(tokens):
        x = t["model.embed_tokens.weight"][tok].copy()
        for l in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{l}."
            h = rms(x, t[p + "input_layernorm.weight"])
            q = lin(h, p + "self_attn.q_proj").reshape(nh, hd)
            k = lin(h, p + "self_attn.k_proj").reshape(nkv, hd)
            v = lin(h, p + "self_attn.v_proj").reshape(nkv, hd)
            if p + "self_attn.q_norm.weight" in t:
                q = np.stack([rms(row, t[p + "self_attn.q_norm.weight"]) for row in q])
                k = np.stack([rms(row, t[p + "self_attn.k_norm.weight"]) for row in k])
            keys[l].append(np.stack([rope(row, pos) for row in k]))
            values[l].append(v)
            o = np.zeros((nh, hd))
            for head in range(nh):
                kv = head // (nh // nkv)
                qh = rope(q[head], pos)
                scores = np.array([qh @ keys[l][s][kv] / math.sqrt(hd) for s in range(pos + 1)])
                prob = np.exp(scores - scores.max())
                prob /= prob.sum()
                o[head] = sum(prob[s] * values[l][s][kv] for s in range(pos + 1))
            x = x + lin(o.reshape(-1), p + "self_attn.o_proj")
            h = rms(x, t[p + "post_attention_layernorm.weight"])
            gate = lin(h, p + "mlp.gate_proj")
            x = x + lin(gate / (1 + np.exp(-gate)) * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
        head_w = t.get("lm_head.weight", t["model.embed_tokens.weight"])
        out.append(head_w @ rms(x, t["model.norm.weight"]))
    return np.array(out)


@test
def every_family_equals_an_incremental_numpy_implementation():
    models = [H.random_model(fam, 11) for fam in FAMILIES]
    models.append(H.random_model("llama", 12, attention_bias=True, mlp_bias=True))  # every bias llama may have
    assert sum(k.endswith(".bias") for k in models[-1][1]) == 2 * 7
    for cfg, t in models:
        fam = cfg["model_type"]
        tokens = np.random.default_rng(1).integers(0, cfg["vocab_size"], 12)
        err = rel_err(H.logits(cfg, t, tokens), numpy_incremental(cfg, t, tokens))
        assert err < 1e-12, (fam, err)
    # with a batch, each row is its own sequence
    cfg, t = H.random_model("qwen3", 2)
    tokens, _ = batch(cfg, 3, B=3, T=7)
    both = H.logits(cfg, t, tokens)
    for b in range(3):
        assert rel_err(both[b], numpy_incremental(cfg, t, tokens[b])) < 1e-12


@test
def qwen3_norms_are_per_head_before_rope_and_matter():
    cfg, t = H.random_model("qwen3", 6, rms_norm_eps=1e-14)
    hd, D = cfg["head_dim"], cfg["hidden_size"]
    assert hd * cfg["num_attention_heads"] != D  # head_dim from the config, not hidden / heads
    assert t["model.layers.0.self_attn.q_proj.weight"].shape == (cfg["num_attention_heads"] * hd, D)
    assert t["model.layers.0.self_attn.o_proj.weight"].shape == (D, cfg["num_attention_heads"] * hd)
    assert not any(k.endswith(".bias") for k in t)
    tokens = np.arange(10) * 7 % cfg["vocab_size"]
    base = H.logits(cfg, t, tokens)
    # one head's q rows (or one kv head's k rows) scaled: the per-head norm takes it back out
    for proj in ("q_proj", "k_proj"):
        s = dict(t)
        w = s[f"model.layers.1.self_attn.{proj}.weight"].copy()
        w[hd:2 * hd] *= 4  # exact in float32
        s[f"model.layers.1.self_attn.{proj}.weight"] = w
        assert rel_err(H.logits(cfg, s, tokens), base) < 1e-10, proj
        # a norm over all of q (or none) would not: the same change without the norms alters the output
        no_norm = dict(cfg, model_type="qwen2")
        strip = lambda d: {k: v for k, v in d.items() if "_norm." not in k}
        bias = {f"model.layers.{i}.self_attn.{p}.bias": np.zeros(t[f"model.layers.{i}.self_attn.{p}.weight"].shape[0])
                for i in range(2) for p in ("q_proj", "k_proj", "v_proj")}
        assert rel_err(H.logits(no_norm, {**strip(s), **bias}, tokens),
                       H.logits(no_norm, {**strip(t), **bias}, tokens)) > 1e-3
    for norm in ("q_norm", "k_norm"):
        s = dict(t)
        s[f"model.layers.0.self_attn.{norm}.weight"] = t[f"model.layers.0.self_attn.{norm}.weight"][::-1].copy()
        assert rel_err(H.logits(cfg, s, tokens), base) > 1e-3, norm


@test
def qwen2_has_qkv_biases_that_each_matter():
    cfg, t = H.random_model("qwen2", 8)
    assert "attention_bias" not in cfg and "head_dim" not in cfg  # as Qwen2.5's config.json
    biases = sorted(k for k in t if k.endswith(".bias"))
    assert biases == sorted(f"model.layers.{i}.self_attn.{p}_proj.bias" for i in range(2) for p in "qkv"), biases
    tokens = np.arange(9) * 5 % cfg["vocab_size"]
    base = H.logits(cfg, t, tokens)
    for name in biases[:3]:
        s = dict(t, **{name: np.zeros_like(t[name])})
        assert rel_err(H.logits(cfg, s, tokens), base) > 1e-4, name


def finite_difference_check(f, leaves, grads, seed, picks=2):
    """Central differences of f at `picks` random entries of every leaf against autograd's gradient."""
    g = np.random.default_rng(seed)
    h = 1e-5
    for name, arr in leaves.items():
        for _ in range(picks):
            idx = tuple(g.integers(0, n) for n in arr.shape)
            plus, minus = dict(leaves), dict(leaves)
            for d, sign in ((plus, 1), (minus, -1)):
                d[name] = np.array(arr, np.float64)
                d[name][idx] += sign * h
            numeric = (f(plus) - f(minus)) / (2 * h)
            scale = max(np.abs(grads[name]).max(), 1e-8)
            assert abs(numeric - grads[name][idx]) < 1e-6 * scale, (name, idx, numeric, grads[name][idx])


@test
def gradients_equal_finite_differences():
    for seed, fam in enumerate(("llama3", "smollm2", "qwen2", "qwen3")):
        cfg, t = H.random_model(fam, 20 + seed, num_hidden_layers=1)
        tokens, targets = batch(cfg, seed, B=2, T=6, masked=True)
        _, grads = H.loss_and_grads(cfg, t, tokens, targets)
        finite_difference_check(lambda p: H.loss(cfg, p, tokens, targets), t, grads, seed)
        r, alpha = 2, 3.0
        ad = H.random_lora(cfg, seed, r)
        _, lg = H.lora_loss_and_grads(cfg, t, ad, r, alpha, tokens, targets)
        finite_difference_check(lambda a: H.loss(cfg, t, tokens, targets, a, r, alpha), ad, lg, seed)


@test
def loss_is_the_mean_over_unmasked_targets():
    cfg, t = H.random_model("qwen3", 9)
    tokens, targets = batch(cfg, 4, masked=True)
    lg = H.logits(cfg, t, tokens)
    logp = lg - lg.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    keep = targets >= 0
    want = -np.mean(np.take_along_axis(logp, np.where(keep, targets, 0)[..., None], -1)[..., 0][keep])
    assert abs(H.loss(cfg, t, tokens, targets) - want) < 1e-12
    loss, grads = H.loss_and_grads(cfg, t, tokens, targets)
    assert abs(loss - want) < 1e-12 and keep.sum() < keep.size
    try:
        H.loss(cfg, t, tokens, np.full_like(targets, -1))
        raise AssertionError("every target masked was accepted")
    except ValueError:
        pass


@test
def lora_equals_weights_merged_by_hand():
    cfg, t = H.random_model("qwen2", 12)
    r, alpha = 4, 12.0
    ad = H.random_lora(cfg, 3, r, targets=("q_proj", "v_proj", "down_proj"), layers=[1])
    tokens = np.arange(8) * 3 % cfg["vocab_size"]
    merged = dict(t)
    for proj in ("q_proj", "v_proj", "down_proj"):
        name = H.proj_name(1, proj) + ".weight"
        merged[name] = t[name] + 3.0 * (ad[H.lora_name(1, proj, "B")] @ ad[H.lora_name(1, proj, "A")])  # 12 / 4
    with_lora = H.logits(cfg, t, tokens, ad, r, alpha)
    assert rel_err(with_lora, H.logits(cfg, merged, tokens)) < 1e-6  # merged in float32 above
    assert rel_err(with_lora, H.logits(cfg, H.merge_lora(cfg, t, ad, r, alpha), tokens)) < 1e-12
    zero_b = {k: (v * 0 if "lora_B" in k else v) for k, v in ad.items()}
    assert rel_err(H.logits(cfg, t, tokens, zero_b, r, alpha), H.logits(cfg, t, tokens)) == 0


@test
def bf16_rounds_to_nearest_even():
    bits = np.array([0x3F800000, 0x3F808000, 0x3F818000, 0x3F808001, 0x3F80FFFF, 0xBF808000, 0xBF818001,
                     0x7F7FFFFF, 0x7F800000, 0xFF800000, 0x00000001, 0x80000000, 0x7FC00001, 0x7F800001], np.uint32)
    want = [0x3F80, 0x3F80, 0x3F82, 0x3F81, 0x3F81, 0xBF80, 0xBF82, 0x7F80, 0x7F80, 0xFF80, 0x0000, 0x8000]
    got = H.to_bf16(bits.view(np.float32))
    assert [int(x) for x in got[:12]] == want, [hex(x) for x in got]
    assert all(np.isnan(H.from_bf16(got[12:])))  # a NaN whose payload is in the low bits stays NaN
    x = np.random.default_rng(0).standard_normal(100000).astype(np.float32) * np.float32(3.7)
    x[:1000] = (np.arange(1000, dtype=np.uint32) * 0x10000 + 0x3F008000).view(np.float32)  # every tie
    torch_bits = torch.tensor(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(H.to_bf16(x), torch_bits)
    assert np.array_equal(H.stored_values({"a": x}, "f16")["a"], torch.tensor(x).half().float().numpy())


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        size = os.path.getsize(path)
    return n, header, size


@test
def hf_directories_written_and_read_back():
    cfg, t = H.random_model("llama3", 1, tie_word_embeddings=False)
    d = tmpdir()
    one = os.path.join(d, "f32")
    assert H.write_hf_dir(one, cfg, t, "f32") is not None
    assert sorted(os.listdir(one)) == ["config.json", "model.safetensors"]
    n, header, size = read_header(os.path.join(one, "model.safetensors"))
    assert n % 8 == 0 and header.pop("__metadata__") == {"format": "pt"}
    end = 0
    for name, shape in H.tensor_shapes(cfg).items():  # every tensor, contiguous, F32
        e = header[name]
        assert e["dtype"] == "F32" and tuple(e["shape"]) == shape and e["data_offsets"][0] == end, name
        end = e["data_offsets"][1]
    assert size == 8 + n + end and len(header) == len(t)
    cfg2, back = H.read_hf_dir(one)
    assert cfg2 == dict(cfg, torch_dtype="float32")
    assert all(np.array_equal(back[k], t[k]) for k in t) and set(back) == set(t)
    for k in ("rope_scaling", "rope_theta", "head_dim", "attention_bias", "mlp_bias", "tie_word_embeddings"):
        assert k in cfg2, k
    assert cfg2["architectures"] == ["LlamaForCausalLM"] and cfg2["rope_scaling"]["rope_type"] == "llama3"

    shard = os.path.join(d, "bf16")
    stored = H.write_hf_dir(shard, cfg, t, "bf16", shards=3)
    files = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert sorted(os.listdir(shard)) == ["config.json", *files, "model.safetensors.index.json"]
    with open(os.path.join(shard, "model.safetensors.index.json")) as f:
        index = json.load(f)
    assert set(index["weight_map"]) == set(t) and set(index["weight_map"].values()) == set(files)
    assert index["metadata"]["total_size"] == sum(v.size * 2 for v in t.values())
    for fname in files:
        _, header, _ = read_header(os.path.join(shard, fname))
        header.pop("__metadata__")
        assert header and all(e["dtype"] == "BF16" for e in header.values())
        assert all(index["weight_map"][k] == fname for k in header)
    cfg3, back = H.read_hf_dir(shard)
    assert cfg3["torch_dtype"] == "bfloat16"
    assert all(np.array_equal(back[k], stored[k]) for k in t)
    assert 0 < max(rel_err(stored[k], t[k]) for k in t) < 2 ** -8
    ad = H.random_lora(cfg, 1, 2, targets=("q_proj", "up_proj"))
    H.write_peft_dir(os.path.join(d, "peft"), ad, 2, 4.0)
    with open(os.path.join(d, "peft", "adapter_config.json")) as f:
        ac = json.load(f)
    assert (ac["r"], ac["lora_alpha"], ac["target_modules"], ac["peft_type"]) == (2, 4.0, ["q_proj", "up_proj"], "LORA")
    back, _ = H.read_safetensors(os.path.join(d, "peft", "adapter_model.safetensors"))
    assert back.keys() == ad.keys() and back[H.lora_name(0, "up_proj", "B")].shape == (cfg["intermediate_size"], 2)


@test
def configs_carry_each_familys_keys():
    for fam, arch, present, absent in (
            ("llama", "LlamaForCausalLM", ("attention_bias", "head_dim", "rope_scaling"), ("q_norm",)),
            ("qwen2", "Qwen2ForCausalLM", ("sliding_window", "use_sliding_window"), ("attention_bias", "head_dim")),
            ("qwen3", "Qwen3ForCausalLM", ("attention_bias", "head_dim", "use_sliding_window"), ())):
        cfg = H.make_config(fam)
        assert cfg["architectures"] == [arch] and cfg["model_type"] == fam
        assert all(k in cfg for k in present) and not any(k in cfg for k in absent), fam
    smol = H.make_config("smollm2")
    assert (smol["num_attention_heads"], smol["num_key_value_heads"], smol["tie_word_embeddings"]) == (9, 3, True)
    big = H.make_config("qwen2.5-0.5b")
    assert (big["hidden_size"], big["num_hidden_layers"], big["vocab_size"]) == (896, 24, 151936)
    params = sum(math.prod(s) for s in H.tensor_shapes(H.make_config("llama3.2-1b")).values())
    assert params == 1235814400, params  # Llama-3.2-1B's published parameter count
    params = sum(math.prod(s) for s in H.tensor_shapes(big).values())
    assert params == 494032768, params  # Qwen2.5-0.5B's


@test
def cli_writes_the_random_model():
    out = os.path.join(tmpdir(), "q3")
    tok = tmpdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        with open(os.path.join(tok, name), "w") as f:
            f.write('{"%s": 1}' % name)
    r = subprocess.run([sys.executable, os.path.join(HERE, "hf_ref.py"), "write", "--family", "qwen3", "--seed", "1",
                        "--dtype", "bf16", "--shards", "2", "--tokenizer", tok, out], capture_output=True, text=True,
                       check=True)
    assert json.loads(r.stdout)["shards"] == 2
    for name in ("tokenizer.json", "tokenizer_config.json"):
        with open(os.path.join(out, name)) as f:
            assert json.load(f) == {name: 1}
    cfg, back = H.read_hf_dir(out)
    want_cfg, t = H.random_model("qwen3", 1)
    assert cfg == dict(want_cfg, torch_dtype="bfloat16")
    stored = H.stored_values(t, "bf16")
    assert set(back) == set(t) and all(np.array_equal(back[k], stored[k]) for k in t)
    small = os.path.join(tmpdir(), "p")
    subprocess.run([sys.executable, os.path.join(HERE, "hf_ref.py"), "write", "--preset", "qwen2.5-0.5b", "--layers",
                    "1", "--vocab", "300", "--hidden", "112", "--intermediate", "64", small],
                   check=True, capture_output=True)
    cfg, back = H.read_hf_dir(small)
    assert (cfg["num_attention_heads"], cfg["rope_theta"], cfg["max_window_layers"]) == (14, 1e6, 1)
    assert back["model.layers.0.self_attn.k_proj.bias"].shape == (16,)  # 2 kv heads of 112 / 14
    r = subprocess.run([sys.executable, os.path.join(HERE, "hf_ref.py"), "write", "--heads", "5", small],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "heads" in r.stderr


@test
def refuses_what_it_does_not_compute():
    cfg, t = H.random_model("qwen2", 1)
    tokens = [1, 2, 3]
    for bad, mention in ((dict(cfg, model_type="mistral"), "model_type"),
                         (dict(cfg, use_sliding_window=True), "sliding"),
                         (dict(cfg, rope_scaling={"rope_type": "yarn", "factor": 4.0}), "yarn"),
                         (dict(cfg, hidden_act="gelu"), "gelu")):
        try:
            H.logits(bad, t, tokens)
            raise AssertionError(f"accepted {mention}")
        except ValueError as e:
            assert mention in str(e), e
    ad = H.random_lora(cfg, 1, 2, targets=("k_proj",))
    ad[H.lora_name(0, "k_proj", "B")] = np.zeros((cfg["hidden_size"], 2), np.float32)  # q's shape, not k's
    try:
        H.logits(cfg, t, tokens, ad, 2, 4.0)
        raise AssertionError("accepted a misshapen adapter")
    except ValueError as e:
        assert "k_proj" in str(e), e
    # transformers 5 writes rope_parameters: the same model
    v5 = {k: v for k, v in cfg.items() if k != "rope_theta"}
    v5["rope_parameters"] = {"rope_type": "default", "rope_theta": cfg["rope_theta"]}
    assert rel_err(H.logits(v5, t, tokens), H.logits(cfg, t, tokens)) == 0
    try:
        H.logits(cfg, t, [1, cfg["vocab_size"]])
        raise AssertionError("accepted a token id past the vocabulary")
    except ValueError as e:
        assert "vocab_size" in str(e), e
    extra = dict(t, **{"model.layers.0.self_attn.o_proj.bias": np.zeros(cfg["hidden_size"], np.float32)})
    missing = {k: v for k, v in t.items() if k != "model.layers.1.self_attn.v_proj.bias"}
    for tensors, mention in ((extra, "o_proj.bias"), (missing, "v_proj.bias")):
        try:
            H.logits(cfg, tensors, tokens)
            raise AssertionError(f"accepted {mention}")
        except ValueError as e:
            assert mention in str(e), e


if __name__ == "__main__":
    run_all()
