"""Training's loss and the gradient of every parameter against PyTorch
autograd (float64, model written in the test): a tiny GQA model with a
separate classifier, and one with a shared classifier."""
import os
import subprocess

import numpy as np
import torch

from harness import PROBE, run_all, test, tmpdir
from llama_ref import CFG, ORDER, header7, random_weights, torch_loss, write_v0

def nf_grads(path, tokens, targets):
    out = os.path.join(tmpdir(), "grads.f32")
    B, T = tokens.shape
    args = [B, T, *tokens.ravel(), *targets.ravel()]
    subprocess.run([PROBE, "grads", path, out, *map(str, args)], check=True)
    data = np.fromfile(out, dtype=np.float32)
    return float(data[0]), data[1:]


def check(shared, seed, B=3, T=11, seq_len=None):
    cfg = dict(CFG, seq_len=seq_len or CFG["seq_len"])
    w = random_weights(seed, cfg)
    path = os.path.join(tmpdir(), "m.bin")
    if shared:
        del w["wcls"]
        hs = cfg["dim"] // cfg["n_heads"]
        with open(path, "wb") as f:
            f.write(header7(cfg, cfg["vocab_size"]))
            for k in ORDER[:-1]:
                f.write(w[k].tobytes())
            f.write(np.zeros(cfg["seq_len"] * hs, np.float32).tobytes())
    else:
        write_v0(path, w, cfg)
    g = np.random.default_rng(seed + 100)
    tokens = g.integers(0, cfg["vocab_size"], (B, T))
    targets = g.integers(0, cfg["vocab_size"], (B, T))
    loss, grads = nf_grads(path, tokens, targets)

    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in w.items()}
    ref = torch_loss(t, tokens, targets, cfg, shared)
    ref.backward()
    assert abs(loss - ref.item()) / abs(ref.item()) < 1e-5, (loss, ref.item())
    offset = 0
    for k in ORDER:
        if k not in w:
            continue
        n = w[k].size
        ours, theirs = grads[offset:offset + n], t[k].grad.numpy().ravel()
        offset += n
        err = np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30)
        assert err < 1e-4, f"{k}: relative error {err:.2e}"
        assert np.abs(theirs).max() > 0, k  # the reference gradient is not trivially zero
    assert offset == grads.size


@test
def gradients_match_pytorch_separate_classifier():
    check(shared=False, seed=5)


@test
def gradients_match_pytorch_shared_classifier():
    check(shared=True, seed=6)


@test
def gradients_match_pytorch_over_several_attention_tiles():
    # attention works in tiles of 132 query rows: 300 positions make two whole tiles and a partial one
    check(shared=False, seed=7, B=2, T=300, seq_len=310)


if __name__ == "__main__":
    run_all()
