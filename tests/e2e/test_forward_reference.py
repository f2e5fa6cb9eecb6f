"""The forward pass against an independent PyTorch reference (written here,
in float64): a random GQA model with a separate classifier, saved by this
test in llama2.c's v0, v1 and v2 (Q8_0) layouts, must give the same logits at
every position of a sequence (for Q8_0, with the reference's product inputs
quantized per group as the engine quantizes them)."""
import os
import subprocess

import numpy as np

from harness import PROBE, run, run_all, test, tmpdir

from llama_ref import CFG, random_weights, torch_logits, write_v0, write_v1, write_v2


def nf_logits(model, tokens):
    out = os.path.join(tmpdir(), "logits.f32")
    subprocess.run([PROBE, "logits", model, out, *map(str, tokens)], check=True)
    return np.fromfile(out, dtype=np.float32).reshape(len(tokens), -1)


def rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


TOKENS = [1, 5, 17, 96, 3, 3, 42, 0, 88, 12, 61, 7, 29, 50, 2, 33]


@test
def v0_logits_match_pytorch_reference():
    w = random_weights(0)
    path = os.path.join(tmpdir(), "m.bin")
    write_v0(path, w)
    err = rel_err(nf_logits(path, TOKENS), torch_logits(w, TOKENS))
    print(f"  max relative error {err:.2e}")
    assert err < 1e-4, err


@test
def v1_logits_match_pytorch_reference():
    w = random_weights(1)
    path = os.path.join(tmpdir(), "m.bin")
    write_v1(path, w)
    err = rel_err(nf_logits(path, TOKENS), torch_logits(w, TOKENS))
    assert err < 1e-4, err


@test
def v2_q8_logits_match_pytorch_on_dequantized_weights():
    # group size 16 with hidden_dim 100: rows of w2 straddle quantization groups, so
    # w2 multiplies fp32 activations and the other products quantized ones
    w = random_weights(2)
    path = os.path.join(tmpdir(), "m.bin")
    deq = write_v2(path, w, 16)
    L = CFG["n_layers"]
    wd = dict(w)
    wd["emb"] = deq[0]
    for i, k in enumerate(("wq", "wk", "wv", "wo", "w1", "w2", "w3")):
        wd[k] = np.stack(deq[1 + i * L: 1 + (i + 1) * L])
    wd["wcls"] = deq[-1]
    err = rel_err(nf_logits(path, TOKENS), torch_logits(wd, TOKENS, act_gs=16))
    print(f"  max relative error {err:.2e}")
    assert err < 1e-4, err
    # and close to the unquantized model
    assert rel_err(nf_logits(path, TOKENS), torch_logits(w, TOKENS)) < 0.05


@test
def v2_with_group_size_not_a_multiple_of_four_loads():
    w = random_weights(3)
    path = os.path.join(tmpdir(), "m.bin")
    write_v2(path, w, 6)  # dim 48 = 8 groups of 6; scales land unaligned in the file
    r = run(["info", "--model", path])
    assert r.rc == 0
    assert r.one("info")["value"]["group_size"] == 6
    assert np.isfinite(nf_logits(path, TOKENS[:4])).all()


@test
def info_reports_separate_classifier_and_params():
    w = random_weights(0)
    path = os.path.join(tmpdir(), "m.bin")
    write_v0(path, w)
    v = run(["info", "--model", path]).one("info")["value"]
    assert v["config"]["shared_classifier"] is False
    assert v["params"] == sum(a.size for a in w.values())
    assert v["format"] == "llama2c-v0"


if __name__ == "__main__":
    run_all()
