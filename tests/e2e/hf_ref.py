"""An independent float64 PyTorch reference for the Hugging Face model families
NeuralForge computes, and a writer of random HF model directories.

Written from the semantics of transformers' modeling_llama.py, modeling_qwen2.py,
modeling_qwen3.py and modeling_rope_utils.py (plain torch; transformers is not a
dependency):
- LlamaForCausalLM: pre-norm decoder, RMSNorm (x * rsqrt(mean x^2 + eps) * w),
  rotate-half RoPE on the HF weight layout (q * cos + rotate_half(q) * sin with
  cos/sin = cat(freqs, freqs)), GQA (query head h reads kv head h // (heads / kv)),
  scores scaled by head_dim^-0.5, SwiGLU MLP (down(silu(gate x) * up x)),
  attention_bias (q/k/v/o) and mlp_bias when the config says so, and rope_scaling
  {"rope_type": "llama3", factor, low_freq_factor, high_freq_factor,
  original_max_position_embeddings} (llama3_inv_freq).
- Qwen2ForCausalLM: the same with biases on q/k/v always (none on o), which is
  why Qwen2's config has no attention_bias key.
- Qwen3ForCausalLM: no biases (unless attention_bias), head_dim from the config
  independent of hidden_size / heads, and q_norm / k_norm: an RMSNorm over
  head_dim applied to each head of q and k BEFORE RoPE.
- Tied classifier (tie_word_embeddings: lm_head is model.embed_tokens.weight,
  and the checkpoint has no lm_head.weight) or a separate lm_head.weight.
- The loss is NeuralForge's: cross entropy averaged over the positions whose
  target is >= 0 (a negative target is masked). LoRA follows PEFT:
  y = W x + b + (alpha / r) * B (A x), adapters named as PEFT's
  adapter_model.safetensors names them.
HF computes RoPE's cos/sin tables in float32; this reference computes
everything, RoPE included, in float64 (the values HF approximates, ~1e-7 apart).
Anything outside these semantics (another rope type, sliding-window attention
in use, another activation, a tensor missing or left over) raises ValueError
rather than being computed wrongly. tests/e2e/test_hf_ref.py proves the
reference against llama_ref.py (itself checked against llama2.c), the
published llama3 formula, llama.cpp's rope_freqs factors, an incremental
(KV-cache) numpy implementation and finite differences.

Writing: write_hf_dir (config.json + model.safetensors, or shards with
model.safetensors.index.json; f32, bf16 rounded to nearest even, or f16),
write_peft_dir, read_hf_dir. random_model(family, seed, **config overrides)
makes a model; the CLI writes one, also at real sizes:
  /usr/bin/python3 tests/e2e/hf_ref.py write --family qwen3 --seed 1 --dtype bf16 --shards 2 OUT
  /usr/bin/python3 tests/e2e/hf_ref.py write --preset llama3.2-1b --dtype bf16 OUT
"""
import argparse
import collections
import concurrent.futures
import json
import math
import os
import re
import shutil
import struct
import sys
import zlib

import numpy as np
import torch

# ---------------------------------------------------------------- configurations

# The keys each family's real config.json carries (Llama-3.2-1B, SmolLM2-135M,
# Qwen2.5-0.5B, Qwen3-0.6B), with tiny shapes; random_model overrides them.
_COMMON = dict(attention_dropout=0.0, hidden_act="silu", initializer_range=0.02, use_cache=True,
               transformers_version="4.51.0", torch_dtype="float32")
_BASE = {
    "llama": dict(_COMMON, architectures=["LlamaForCausalLM"], model_type="llama", attention_bias=False,
                  mlp_bias=False, pretraining_tp=1, bos_token_id=1, eos_token_id=2, hidden_size=48,
                  intermediate_size=100, num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=2,
                  head_dim=8, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
                  rope_scaling=None, tie_word_embeddings=False, vocab_size=97),
    "qwen2": dict(_COMMON, architectures=["Qwen2ForCausalLM"], model_type="qwen2", bos_token_id=1, eos_token_id=2,
                  hidden_size=48, intermediate_size=88, num_hidden_layers=2, num_attention_heads=6,
                  num_key_value_heads=2, max_position_embeddings=256, max_window_layers=2, rms_norm_eps=1e-6,
                  rope_theta=1000000.0, sliding_window=256, use_sliding_window=False, tie_word_embeddings=True,
                  vocab_size=101),
    "qwen3": dict(_COMMON, architectures=["Qwen3ForCausalLM"], model_type="qwen3", attention_bias=False,
                  bos_token_id=1, eos_token_id=2, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                  max_window_layers=2, rms_norm_eps=1e-6, rope_scaling=None, rope_theta=1000000.0,
                  sliding_window=None, use_sliding_window=False, tie_word_embeddings=True, vocab_size=103),
}
# llama3 scaling shrunk to tiny positions: with head_dim 16 and theta 500000 the
# wavelengths 6.3, 32.6, 169, ... fall in all three of its bands (< 16 kept,
# 16..64 smoothed, > 64 divided by the factor), so a test of 40 positions sees it.
_TINY_LLAMA3 = dict(rope_theta=500000.0, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                    rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                      original_max_position_embeddings=64))
_FAMILIES = {
    "llama": ("llama", {}),
    "llama3": ("llama", _TINY_LLAMA3),
    # SmolLM2 is LlamaForCausalLM with 9 heads of 3 kv heads, tied, theta 100000
    "smollm2": ("llama", dict(hidden_size=72, num_attention_heads=9, num_key_value_heads=3, head_dim=8,
                              rope_theta=100000.0, tie_word_embeddings=True)),
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {}),
}
# Real shapes (the CLI's --preset), for the memory and speed benchmarks.
PRESETS = {
    "llama3.2-1b": ("llama", dict(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
        num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0,
        rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192),
        max_position_embeddings=131072, rms_norm_eps=1e-5, bos_token_id=128000, eos_token_id=128001)),
    "qwen2.5-0.5b": ("qwen2", dict(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
        vocab_size=151936, tie_word_embeddings=True, rope_theta=1000000.0, max_position_embeddings=32768,
        sliding_window=32768, max_window_layers=24, rms_norm_eps=1e-6, bos_token_id=151643, eos_token_id=151643)),
    "qwen3-0.6b": ("qwen3", dict(
        hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
        head_dim=128, vocab_size=151936, tie_word_embeddings=True, rope_theta=1000000.0,
        max_position_embeddings=40960, max_window_layers=28, rms_norm_eps=1e-6, bos_token_id=151643,
        eos_token_id=151645)),
    "smollm2-135m": ("llama", dict(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        head_dim=64, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0, max_position_embeddings=8192,
        rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)),
}
PROJS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def proj_name(layer, proj):
    """A projection's HF module path: model.layers.{layer}.self_attn.q_proj, ... .mlp.down_proj."""
    return f"model.layers.{layer}.{'self_attn' if proj in PROJS[:4] else 'mlp'}.{proj}"


def make_config(family, **overrides):
    """The config dict HF would write for `family` (llama, llama3, smollm2, qwen2, qwen3, or a --preset name),
    with HF-named keys overridden."""
    model_type, extra = PRESETS.get(family) or _FAMILIES[family]
    cfg = json.loads(json.dumps(_BASE[model_type]))  # a deep copy
    cfg.update(json.loads(json.dumps(extra)))
    cfg.update(overrides)
    if "max_window_layers" in cfg:  # Qwen's configs name every layer (sliding windows are off anyway)
        cfg["max_window_layers"] = cfg["num_hidden_layers"]
    check_config(cfg)
    return cfg


def head_dim(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def kv_heads(cfg):
    return cfg.get("num_key_value_heads") or cfg["num_attention_heads"]  # HF's default: no GQA


def norm_eps(cfg):
    return cfg.get("rms_norm_eps", 1e-6)  # the default of all three config classes


def rope(cfg):
    """(theta, llama3 scaling dict or None): from rope_theta and rope_scaling (older "type" key too) as the
    Hub's configs write them, or from transformers 5's rope_parameters; another rope type is refused."""
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or params
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in ("llama3", "default"):
        raise ValueError(f"rope scaling {kind!r} is not computed here")
    return params.get("rope_theta", cfg.get("rope_theta", 10000.0)), scaling if kind == "llama3" else None


def check_config(cfg):
    """Refuses what this reference does not compute (ValueError), so nothing is computed wrongly."""
    if cfg.get("model_type") not in _BASE:
        raise ValueError(f"unknown model_type {cfg.get('model_type')!r}")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {cfg['hidden_act']!r}")
    if cfg.get("use_sliding_window"):
        raise ValueError("sliding-window attention in use")
    rope(cfg)
    if cfg["num_attention_heads"] % kv_heads(cfg) or head_dim(cfg) % 2:
        raise ValueError("heads must be a multiple of kv heads and head_dim even")


def tensor_shapes(cfg):
    """Every tensor of the checkpoint, HF name -> shape, in HF's order: which biases and norms exist follows
    each family's modeling code (Qwen2: q/k/v biases always; llama/qwen3: q/k/v/o with attention_bias;
    llama: mlp biases with mlp_bias; qwen3: q_norm/k_norm)."""
    D, I, V, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], head_dim(cfg)
    Q, KV = cfg["num_attention_heads"] * hd, kv_heads(cfg) * hd
    mt = cfg["model_type"]
    attn_bias = ("q_proj", "k_proj", "v_proj") if mt == "qwen2" else \
        ("q_proj", "k_proj", "v_proj", "o_proj") if cfg.get("attention_bias") else ()
    mlp_bias = ("gate_proj", "up_proj", "down_proj") if mt == "llama" and cfg.get("mlp_bias") else ()
    out = {"model.embed_tokens.weight": (V, D)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = (D,)
        for proj, (o, n) in zip(PROJS, ((Q, D), (KV, D), (KV, D), (D, Q), (I, D), (I, D), (D, I))):
            out[proj_name(i, proj) + ".weight"] = (o, n)
            if proj in attn_bias or proj in mlp_bias:
                out[proj_name(i, proj) + ".bias"] = (o,)
        if mt == "qwen3":
            out[p + "self_attn.q_norm.weight"] = (hd,)
            out[p + "self_attn.k_norm.weight"] = (hd,)
        out[p + "post_attention_layernorm.weight"] = (D,)
    out["model.norm.weight"] = (D,)
    if not cfg.get("tie_word_embeddings", False):
        out["lm_head.weight"] = (V, D)
    return out


_CHUNK = 1 << 22  # elements made or converted at once: bounds memory, and the unit of the writer's threads


def _tensor_rng(seed, name, chunk=0):
    # one stream per tensor and chunk: a value does not depend on which other tensors are made, on sharding,
    # or on the thread that makes it
    return np.random.default_rng([seed, zlib.crc32(name.encode()), chunk])


def _random_chunk(seed, name, shape, chunk):
    """Chunk `chunk` (_CHUNK elements, the last shorter) of a random tensor, float32: uniform with the spread
    of weights N(0, 1/fan_in) (activations stay O(1) at any size; uniform because it is made twice as fast as
    normal, which matters at 1B parameters), the embedding's 1/hidden (tied logits O(1) too); norm weights
    1 +- 0.17 (not all ones, so a norm applied wrongly shows); biases +- 0.17 (non-zero)."""
    n = int(np.prod(shape, dtype=np.int64))
    x = _tensor_rng(seed, name, chunk).random(min(_CHUNK, n - chunk * _CHUNK), dtype=np.float32)
    std = 0.1 if name.endswith("norm.weight") or name.endswith(".bias") else 1 / math.sqrt(shape[1])
    x -= np.float32(0.5)
    x *= np.float32(std * math.sqrt(12))  # uniform on (-a, a) has variance a^2 / 3
    if name.endswith("norm.weight"):
        x += np.float32(1)
    return x


def random_tensor(seed, name, shape):
    """A random tensor of the checkpoint (its values described at _random_chunk)."""
    n = int(np.prod(shape, dtype=np.int64))
    return np.concatenate([_random_chunk(seed, name, shape, c) for c in range(-(-n // _CHUNK))]).reshape(shape)


def lazy_random(seed, shapes):
    """name -> (shape, chunk -> values) for write_hf_dir: a big model made chunk by chunk while it is written,
    never whole in memory, with the values random_tensor gives."""
    return {n: (s, lambda c, n=n, s=s: _random_chunk(seed, n, s, c)) for n, s in shapes.items()}


def random_model(family, seed=0, **overrides):
    """(config, {HF name: float32 array}) of a random model; family: llama (no scaling, theta 10000), llama3
    (llama3 rope scaling), smollm2, qwen2, qwen3 or a PRESETS name; overrides: HF config keys."""
    cfg = make_config(family, **overrides)
    return cfg, {n: random_tensor(seed, n, s) for n, s in tensor_shapes(cfg).items()}


# ---------------------------------------------------------------- safetensors

_DT = {"f32": ("F32", "<f4", "float32"), "bf16": ("BF16", "<u2", "bfloat16"), "f16": ("F16", "<f2", "float16")}


def to_bf16(x):
    """float32 -> bfloat16 bits (uint16): the top half, rounded to nearest even; NaN stays a (quiet) NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    out = ((u + (0x7FFF + ((u >> 16) & 1))) >> 16).astype(np.uint16)  # no overflow below the NaNs' bit patterns
    nan = np.isnan(x)
    if nan.any():
        out[nan] = (u[nan] >> 16).astype(np.uint16) | 0x40
    return out


def from_bf16(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _encode(x, dtype):
    x = np.asarray(x, dtype=np.float32)
    return to_bf16(x) if dtype == "bf16" else x.astype(_DT[dtype][1])


def _decode(raw, st_dtype, shape):
    if st_dtype == "BF16":
        return from_bf16(np.frombuffer(raw, "<u2")).reshape(shape)
    np_dtype = {"F32": "<f4", "F16": "<f2", "F64": "<f8"}[st_dtype]
    return np.frombuffer(raw, np_dtype).astype(np.float32).reshape(shape)


def _chunks(t):
    """A tensor's element count and chunk maker: an array, or (shape, chunk -> flat values)."""
    if isinstance(t, tuple):
        return int(np.prod(t[0], dtype=np.int64)), t[1]
    flat = np.asarray(t).reshape(-1)
    return flat.size, lambda c: flat[c * _CHUNK:(c + 1) * _CHUNK]


def _encoded(tensors, dtype):
    """Every tensor's bytes in order, chunk by chunk, made and converted by a few threads (numpy releases
    the GIL) a bounded distance ahead of the writer."""
    workers = min(8, os.cpu_count() or 1)
    jobs = ((make, c) for n, make in map(_chunks, tensors.values()) for c in range(-(-n // _CHUNK)))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        pending = collections.deque()
        for make, c in jobs:
            pending.append(pool.submit(lambda make=make, c=c: _encode(make(c), dtype)))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def write_safetensors(path, tensors, dtype="f32", metadata=None):
    """A safetensors file: u64 header length, the JSON header (name -> dtype, shape, data_offsets; padded with
    spaces to 8 bytes as HF's writer does), then the data. tensors: name -> array, or -> (shape, chunk ->
    values) (lazy_random). Returns the bytes of tensor data."""
    st, _, _ = _DT[dtype]
    width = 4 if dtype == "f32" else 2
    header, offset = {"__metadata__": metadata or {"format": "pt"}}, 0
    for name, t in tensors.items():
        shape = tuple(t[0]) if isinstance(t, tuple) else t.shape
        n = int(np.prod(shape, dtype=np.int64)) * width
        header[name] = {"dtype": st, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for data in _encoded(tensors, dtype):
            data.tofile(f)
    os.replace(tmp, path)
    return offset


def read_safetensors(path):
    """name -> float32 array (f32, bf16, f16 or f64 decoded), and the header's __metadata__."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    return {k: _decode(data[v["data_offsets"][0]:v["data_offsets"][1]], v["dtype"], v["shape"])
            for k, v in header.items()}, meta


def stored_values(tensors, dtype):
    """What a tensor reads back as after being written in dtype (the values a loader computes with)."""
    if dtype == "f32":
        return {k: np.asarray(v, np.float32) for k, v in tensors.items()}
    if dtype == "bf16":
        return {k: from_bf16(to_bf16(v)).reshape(np.shape(v)) for k, v in tensors.items()}
    return {k: np.asarray(v, np.float32).astype(np.float16).astype(np.float32) for k, v in tensors.items()}


def write_hf_dir(path, config, tensors, dtype="f32", shards=1):
    """An HF model directory: config.json and model.safetensors, or (shards > 1) model-0000i-of-0000n
    .safetensors split by size in tensor order plus model.safetensors.index.json ({"metadata": {"total_size"},
    "weight_map": name -> file}). tensors: name -> array or (shape, chunk -> values) (lazy_random). Returns the
    values as stored (float32; rounded for bf16/f16) when every tensor was an array, else None."""
    if dtype not in _DT or shards < 1:
        raise ValueError(f"dtype {dtype!r} / shards {shards}")
    os.makedirs(path, exist_ok=True)
    cfg = dict(config, torch_dtype=_DT[dtype][2])
    names = list(tensors)
    sizes = [int(np.prod(t[0] if isinstance(t, tuple) else t.shape, dtype=np.int64)) for t in tensors.values()]
    if shards > len(names):
        raise ValueError(f"{shards} shards for {len(names)} tensors")
    # in order, a new shard where the running size passes k/shards of the total, or where each tensor left
    # must take a shard of its own
    total, groups, acc, k = sum(sizes), [[] for _ in range(shards)], 0, 0
    for i, (name, n) in enumerate(zip(names, sizes)):
        groups[k].append(name)
        acc += n
        left = len(names) - i - 1
        if k < shards - 1 and (acc * shards >= (k + 1) * total or left == shards - 1 - k):
            k += 1
    if shards == 1:
        write_safetensors(os.path.join(path, "model.safetensors"), tensors, dtype)
    else:
        weight_map, total_bytes = {}, 0
        for i, group in enumerate(groups):
            fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            total_bytes += write_safetensors(os.path.join(path, fname), {n: tensors[n] for n in group}, dtype)
            weight_map.update({n: fname for n in group})
        index = {"metadata": {"total_size": total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        _write_json(os.path.join(path, "model.safetensors.index.json"), index)
    _write_json(os.path.join(path, "config.json"), cfg)
    if any(isinstance(t, tuple) for t in tensors.values()):
        return None
    return stored_values(tensors, dtype)


def _write_json(path, obj):
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)


def read_hf_dir(path):
    """(config, {name: float32 array}) of an HF model directory (single file or sharded with an index)."""
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for fname in files:
        tensors.update(read_safetensors(os.path.join(path, fname))[0])
    return cfg, tensors


# ---------------------------------------------------------------- LoRA (PEFT)

_LORA = re.compile(r"base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+_proj)\.lora_([AB])\.weight")


def hf_rows_to_pairs(w, heads):
    """Rows of a q/k projection (or its bias or norm) from HF's rotate-half order (x[i], x[i + half]) to
    llama2.c's adjacent pairs (x[2i], x[2i + 1]), head by head: llama_interop.c's hf_permute_rows."""
    rows = w.shape[0]
    hs = rows // heads
    return w.reshape(heads, 2, hs // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def lora_name(layer, proj, ab):
    """PEFT's name of a projection's lora_A or lora_B."""
    return f"base_model.model.{proj_name(layer, proj)}.lora_{ab}.weight"


def random_lora(config, seed, rank, targets=PROJS, layers=None):
    """PEFT-named adapters for `targets` of every layer (or of `layers`): A (r, in) and B (out, r), both
    random (PEFT starts B at zero, which would leave A's gradient zero and test nothing)."""
    shapes = tensor_shapes(config)
    out = {}
    for i in range(config["num_hidden_layers"]) if layers is None else layers:
        for proj in targets:
            o, n = shapes[proj_name(i, proj) + ".weight"]
            for ab, shape, s in (("A", (rank, n), n ** -0.5), ("B", (o, rank), 0.3)):
                name = lora_name(i, proj, ab)
                out[name] = _tensor_rng(seed, name).standard_normal(shape, dtype=np.float32) * np.float32(s)
    return out


def write_peft_dir(path, adapters, rank, alpha, base_model="", dtype="f32"):
    """PEFT's adapter directory: adapter_model.safetensors and adapter_config.json."""
    os.makedirs(path, exist_ok=True)
    targets = sorted({_LORA.fullmatch(n).group(3) for n in adapters})
    write_safetensors(os.path.join(path, "adapter_model.safetensors"), adapters, dtype)
    _write_json(os.path.join(path, "adapter_config.json"), dict(
        peft_type="LORA", task_type="CAUSAL_LM", r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0,
        bias="none", fan_in_fan_out=False, use_rslora=False, base_model_name_or_path=base_model,
        inference_mode=True))
    return stored_values(adapters, dtype)


def merge_lora(config, tensors, adapters, rank, alpha):
    """The base tensors with W += (alpha / r) * B A merged in (float64)."""
    out = {k: np.asarray(v, np.float64) for k, v in tensors.items()}
    for (layer, proj), (a, b) in _parse_lora(adapters, config).items():
        out[proj_name(layer, proj) + ".weight"] += alpha / rank * (np.asarray(b, np.float64) @ a)
    return out


def _parse_lora(adapters, config):
    pairs = {}
    for name, t in adapters.items():
        m = _LORA.fullmatch(name)
        if not m or m.group(3) not in PROJS or int(m.group(1)) >= config["num_hidden_layers"]:
            raise ValueError(f"not a LoRA adapter of this model: {name}")
        pairs.setdefault((int(m.group(1)), m.group(3)), {})[m.group(4)] = t
    shapes = tensor_shapes(config)
    for (layer, proj), p in pairs.items():
        if len(p) != 2:
            raise ValueError(f"layer {layer} {proj}: lora_A and lora_B go together")
        out, n = shapes[proj_name(layer, proj) + ".weight"]
        a, b = tuple(p["A"].shape), tuple(p["B"].shape)
        if len(a) != 2 or a != (a[0], n) or b != (out, a[0]):
            raise ValueError(f"layer {layer} {proj}: lora_A {a} and lora_B {b} for a ({out}, {n}) weight")
    return {k: (p["A"], p["B"]) for k, p in pairs.items()}


# ---------------------------------------------------------------- the model


def llama3_inv_freq(inv_freq, scaling):
    """modeling_rope_utils' llama3 rule: wavelengths 2 pi / f below original / high_freq_factor are kept,
    those above original / low_freq_factor divided by factor, those between interpolated with
    s = (original / wavelen - low) / (high - low): f * ((1 - s) / factor + s)."""
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    orig = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    s = (orig / wavelen - low) / (high - low)
    smoothed = inv_freq * ((1 - s) / factor + s)
    return torch.where(wavelen < orig / high, inv_freq, torch.where(wavelen > orig / low, inv_freq / factor, smoothed))


def rope_inv_freq(cfg):
    """The inverse frequencies HF's rotary embedding uses (float64), scaled for rope_type llama3."""
    hd = head_dim(cfg)
    theta, scaling = rope(cfg)
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    return llama3_inv_freq(inv, scaling) if scaling else inv


def _rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), -1)


def _forward(cfg, P, tokens, lora=None):
    """Logits (B, T, V) of tokens (B, T). P: HF name -> float64 tensor; lora: (scale, {(layer, proj): (A, B)})."""
    check_config(cfg)
    want = tensor_shapes(cfg)
    if set(P) != set(want):
        raise ValueError(f"tensors missing {sorted(set(want) - set(P))}, left over {sorted(set(P) - set(want))}")
    for n, s in want.items():
        if tuple(P[n].shape) != s:
            raise ValueError(f"{n}: shape {tuple(P[n].shape)}, expected {s}")
    B, T = tokens.shape
    if T == 0 or tokens.min() < 0 or tokens.max() >= cfg["vocab_size"]:
        raise ValueError(f"tokens must be 1 or more ids below vocab_size {cfg['vocab_size']}")
    nh, nkv, hd, eps = cfg["num_attention_heads"], kv_heads(cfg), head_dim(cfg), norm_eps(cfg)
    scale, pairs = lora if lora else (0.0, {})

    def linear(x, layer, proj):
        name = proj_name(layer, proj) + "."
        y = x @ P[name + "weight"].T
        if name + "bias" in P:
            y = y + P[name + "bias"]
        if (layer, proj) in pairs:
            a, b = pairs[(layer, proj)]
            y = y + scale * ((x @ a.T) @ b.T)
        return y

    ang = torch.outer(torch.arange(T, dtype=torch.float64), rope_inv_freq(cfg))
    cos, sin = torch.cat((ang, ang), -1).cos()[:, None, :], torch.cat((ang, ang), -1).sin()[:, None, :]
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    x = P["model.embed_tokens.weight"][tokens]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = _rms(x, P[p + "input_layernorm.weight"], eps)
        q = linear(h, i, "q_proj").view(B, T, nh, hd)
        k = linear(h, i, "k_proj").view(B, T, nkv, hd)
        v = linear(h, i, "v_proj").view(B, T, nkv, hd)
        if cfg["model_type"] == "qwen3":  # per head, over head_dim, before RoPE
            q = _rms(q, P[p + "self_attn.q_norm.weight"], eps)
            k = _rms(k, P[p + "self_attn.k_norm.weight"], eps)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        k, v = k.repeat_interleave(nh // nkv, 2), v.repeat_interleave(nh // nkv, 2)
        att = (torch.einsum("bqhd,bkhd->bhqk", q, k) * hd ** -0.5 + mask).softmax(-1)
        o = torch.einsum("bhqk,bkhd->bqhd", att, v).reshape(B, T, nh * hd)
        x = x + linear(o, i, "o_proj")
        h = _rms(x, P[p + "post_attention_layernorm.weight"], eps)
        g = torch.nn.functional.silu(linear(h, i, "gate_proj")) * linear(h, i, "up_proj")
        x = x + linear(g, i, "down_proj")
    x = _rms(x, P["model.norm.weight"], eps)
    head = P["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings", False) else P["lm_head.weight"]
    return x @ head.T


def _batch(tokens):
    t = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    return (t[None], True) if t.dim() == 1 else (t, False)


def _leaves(arrays, grad):
    return {k: torch.tensor(np.asarray(v), dtype=torch.float64, requires_grad=grad) for k, v in arrays.items()}


def _lora_spec(config, adapters, rank, alpha, grad=False):
    leaves = _leaves(adapters, grad)
    return leaves, (alpha / rank, _parse_lora(leaves, config))


def logits(config, tensors, tokens, adapters=None, rank=None, alpha=None):
    """Float64 logits: (T, V) for a sequence, (B, T, V) for a batch; with adapters, through LoRA."""
    t, single = _batch(tokens)
    lora = _lora_spec(config, adapters, rank, alpha)[1] if adapters else None
    with torch.no_grad():
        out = _forward(config, _leaves(tensors, False), t, lora).numpy()
    return out[0] if single else out


def _loss(out, targets):
    """Cross entropy averaged over the targets >= 0 (NeuralForge's masking)."""
    tg = torch.as_tensor(np.asarray(targets), dtype=torch.long).reshape(out.shape[:-1])
    keep = tg >= 0
    if not keep.any():
        raise ValueError("every target is masked")
    logp = out.log_softmax(-1)[keep]
    return -logp.gather(-1, tg[keep][:, None]).mean()


def loss(config, tensors, tokens, targets, adapters=None, rank=None, alpha=None):
    t, _ = _batch(tokens)
    lora = _lora_spec(config, adapters, rank, alpha)[1] if adapters else None
    with torch.no_grad():
        return _loss(_forward(config, _leaves(tensors, False), t, lora), targets).item()


def loss_and_grads(config, tensors, tokens, targets):
    """(loss, {HF name: float64 gradient}) of every tensor; a tied embedding's gradient has both uses."""
    P = _leaves(tensors, True)
    t, _ = _batch(tokens)
    value = _loss(_forward(config, P, t), targets)
    value.backward()
    return value.item(), {k: v.grad.numpy() for k, v in P.items()}


def lora_loss_and_grads(config, tensors, adapters, rank, alpha, tokens, targets):
    """(loss, {PEFT adapter name: float64 gradient}) with the base frozen: y += (alpha / r) * B (A x)."""
    leaves, lora = _lora_spec(config, adapters, rank, alpha, grad=True)
    t, _ = _batch(tokens)
    value = _loss(_forward(config, _leaves(tensors, False), t, lora), targets)
    value.backward()
    return value.item(), {k: v.grad.numpy() for k, v in leaves.items()}


# ---------------------------------------------------------------- CLI


def _cli_write(args):
    family = args.preset or args.family
    overrides = {}
    for key, val in (("hidden_size", args.hidden), ("intermediate_size", args.intermediate),
                     ("num_hidden_layers", args.layers), ("num_attention_heads", args.heads),
                     ("num_key_value_heads", args.kv_heads), ("head_dim", args.head_dim),
                     ("vocab_size", args.vocab), ("rope_theta", args.rope_theta),
                     ("max_position_embeddings", args.max_pos)):
        if val is not None:
            overrides[key] = val
    if args.tied is not None:
        overrides["tie_word_embeddings"] = args.tied
    cfg = make_config(family, **overrides)
    shapes = tensor_shapes(cfg)
    write_hf_dir(args.out, cfg, lazy_random(args.seed, shapes), args.dtype, args.shards)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if args.tokenizer and os.path.exists(os.path.join(args.tokenizer, name)):
            shutil.copyfile(os.path.join(args.tokenizer, name), os.path.join(args.out, name))
    params = sum(int(np.prod(s)) for s in shapes.values())
    print(json.dumps(dict(out=args.out, model_type=cfg["model_type"], params=params, dtype=args.dtype,
                          shards=args.shards)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write a random HF model directory")
    w.add_argument("out")
    w.add_argument("--family", choices=sorted(_FAMILIES), default="llama")
    w.add_argument("--preset", choices=sorted(PRESETS), help="a real model's shape (overrides --family)")
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--dtype", choices=sorted(_DT), default="f32")
    w.add_argument("--shards", type=int, default=1)
    w.add_argument("--tokenizer", help="a directory whose tokenizer.json / tokenizer_config.json are copied")
    for flag in ("hidden", "intermediate", "layers", "heads", "kv-heads", "head-dim", "vocab", "max-pos"):
        w.add_argument("--" + flag, type=int)
    w.add_argument("--rope-theta", type=float)
    w.add_argument("--tied", type=lambda s: {"1": True, "0": False}[s], help="1: tied classifier, 0: separate")
    args = ap.parse_args(argv)
    if args.shards < 1:
        ap.error("--shards must be at least 1")
    try:
        _cli_write(args)
    except ValueError as e:
        print(f"hf_ref: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
