"""NeuralForge against the independent PyTorch reference of the Hugging Face
model families (hf_ref.py, float64): for a random small model of each family,
written as an HF directory (fp32) and loaded directly by NeuralForge,
- the logits of the KV-cached inference pass (nf_probe logits) are within
  1e-5 relative of the reference;
- the training pass's loss and the gradient of every tensor (nf_probe
  grads-hf: export's HF names and row order) are within 1e-4;
- LoRA on every projection: the adapters' gradients (nf_probe lora-grads-hf:
  PEFT's names and row order) are within 1e-4.
The families: Llama 3 with llama3 RoPE scaling (untied), Qwen 2.5 (q/k/v
biases, tied), Qwen 3 (q/k norms, head_dim != hidden / heads, tied) and
SmolLM2's shape (9 heads of 3 kv heads, tied, theta 100000)."""
import os
import subprocess

import numpy as np

import hf_ref as H
from harness import PROBE, run_all, test, tmpdir

# NeuralForge's LoRA targets in its adapter layout's order (lora.h), as PEFT names them
NF_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj", "up_proj")


def rel_err(ours, ref):
    ref = np.asarray(ref, np.float64)
    return float(np.abs(np.asarray(ours, np.float64) - ref).max() / max(np.abs(ref).max(), 1e-300))


def model_dir(family, seed):
    cfg, tensors = H.random_model(family, seed)
    d = os.path.join(tmpdir(), family)
    H.write_hf_dir(d, cfg, tensors, "f32")
    return cfg, tensors, d


def batch(cfg, seed, B=2, T=12):
    g = np.random.default_rng(seed)
    tokens = g.integers(0, cfg["vocab_size"], (B, T))
    targets = g.integers(0, cfg["vocab_size"], (B, T))
    targets[0, :3] = -1  # a masked prompt, as instruction data has
    return tokens, targets


def probe(*args):
    r = subprocess.run([PROBE, *map(str, args)], capture_output=True)
    assert r.returncode == 0, r.stderr.decode()


def check_logits(family, seed):
    cfg, tensors, d = model_dir(family, seed)
    tokens = np.random.default_rng(seed).integers(0, cfg["vocab_size"], 40)  # llama3's tiny scaling bands need 40
    out = os.path.join(tmpdir(), "logits.f32")
    probe("logits", d, out, *tokens)
    ours = np.fromfile(out, np.float32).reshape(len(tokens), cfg["vocab_size"])
    ref = H.logits(cfg, tensors, tokens[None, :])[0]
    err = rel_err(ours, ref)
    assert err < 1e-5, f"{family}: logits relative error {err:.2e}"


def check_gradients(family, seed):
    cfg, tensors, d = model_dir(family, seed)
    tokens, targets = batch(cfg, seed)
    out = os.path.join(tmpdir(), "grads")
    probe("grads-hf", d, out, *tokens.shape, *tokens.ravel(), *targets.ravel())
    loss = float(open(os.path.join(out, "loss.txt")).read())
    _, grads = H.read_hf_dir(out)
    ref_loss, ref = H.loss_and_grads(cfg, tensors, tokens, targets)
    assert abs(loss - ref_loss) / abs(ref_loss) < 1e-5, (family, loss, ref_loss)
    assert sorted(grads) == sorted(ref), f"{family}: tensors differ: {set(grads) ^ set(ref)}"
    for name, g in ref.items():
        assert np.abs(g).max() > 0, name  # the reference gradient is not trivially zero
        err = rel_err(grads[name], g)
        assert err < 1e-4, f"{family} {name}: gradient relative error {err:.2e}"


def nf_adapters(cfg, adapters):
    """PEFT adapters (HF rows) in NeuralForge's adapter layout: per target, A (L, r, in) then B (L, out, r),
    B's rows of q and k in llama2.c's pair order."""
    L, parts = cfg["num_hidden_layers"], []
    heads = {"q_proj": cfg["num_attention_heads"], "k_proj": H.kv_heads(cfg)}
    for proj in NF_TARGETS:
        parts.append(np.stack([adapters[H.lora_name(i, proj, "A")] for i in range(L)]))
        b = [adapters[H.lora_name(i, proj, "B")] for i in range(L)]
        if proj in heads:
            b = [H.hf_rows_to_pairs(x, heads[proj]) for x in b]
        parts.append(np.stack(b))
    return np.concatenate([p.ravel() for p in parts]).astype(np.float32)


def check_lora_gradients(family, seed, rank=4, alpha=8.0):
    cfg, tensors, d = model_dir(family, seed)
    adapters = H.random_lora(cfg, seed, rank)
    flat = os.path.join(tmpdir(), "adapters.f32")
    nf_adapters(cfg, adapters).tofile(flat)
    tokens, targets = batch(cfg, seed)
    out = os.path.join(tmpdir(), "lora_grads")
    probe("lora-grads-hf", d, flat, out, rank, alpha, 127, *tokens.shape, *tokens.ravel(), *targets.ravel())
    loss = float(open(os.path.join(out, "loss.txt")).read())
    grads = H.read_safetensors(os.path.join(out, "adapter_model.safetensors"))[0]
    ref_loss, ref = H.lora_loss_and_grads(cfg, tensors, adapters, rank, alpha, tokens, targets)
    assert abs(loss - ref_loss) / abs(ref_loss) < 1e-5, (family, loss, ref_loss)
    assert sorted(grads) == sorted(ref), f"{family}: adapters differ: {set(grads) ^ set(ref)}"
    for name, g in ref.items():
        err = rel_err(grads[name], g)
        assert err < 1e-4, f"{family} {name}: LoRA gradient relative error {err:.2e}"


for family, seed in (("llama3", 1), ("qwen2", 2), ("qwen3", 3), ("smollm2", 4)):
    for kind, check in (("logits", check_logits), ("gradients", check_gradients),
                        ("lora_gradients", check_lora_gradients)):
        def case(family=family, seed=seed, check=check):
            check(family, seed)
        case.__name__ = f"{family}_{kind}_match_the_pytorch_reference"
        test(case)

if __name__ == "__main__":
    run_all()
