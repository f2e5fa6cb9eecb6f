"""Optimizer steps against torch.optim.AdamW: five steps with gradient
clipping, weight decay (not on norms), warmup and cosine decay, on a fixed
batch, must leave the same weights (1e-5 relative) and report the same
losses, learning rates and gradient norms as PyTorch."""
import math
import os

import numpy as np
import torch

from harness import run, run_all, test, tmpdir
from llama_ref import CFG, ORDER, random_weights, torch_loss, write_v0

STEPS, LR, LR_MIN, WARMUP, WD, CLIP, B1, B2, EPS = 5, 3e-3, 3e-4, 2, 0.1, 0.05, 0.9, 0.95, 1e-8


def lr_at(step):  # the documented schedule: linear warmup, then cosine from LR to LR_MIN
    if step <= WARMUP:
        return LR * step / WARMUP
    progress = (step - WARMUP) / (STEPS - WARMUP)
    return LR_MIN + 0.5 * (1 + math.cos(math.pi * progress)) * (LR - LR_MIN)


def read_v0(path, cfg, shapes):
    data = np.fromfile(path, dtype=np.float32, offset=28)
    out, off = {}, 0
    hs = cfg["dim"] // cfg["n_heads"]
    for k in ORDER[:-1]:
        n = int(np.prod(shapes[k]))
        out[k] = data[off:off + n].reshape(shapes[k])
        off += n
    off += cfg["seq_len"] * hs  # freq_cis
    out["wcls"] = data[off:].reshape(shapes["wcls"])
    return out


def train(model, data, ckpt, extra=()):
    r = run(["train", "--model", model, "--data", data, "--steps", STEPS, "--batch", 2, "--seq", 8,
             "--lr", LR, "--lr-min", LR_MIN, "--warmup", WARMUP, "--lr-schedule", "cosine",
             "--weight-decay", WD, "--grad-clip", CLIP, "--beta1", B1, "--beta2", B2, "--eps", EPS,
             "--ckpt", ckpt, "--val-every", 0, *extra])
    assert r.rc == 0, r.stdout + r.stderr
    return r


@test
def five_adamw_steps_match_torch():
    d = tmpdir()
    cfg = CFG
    w = random_weights(11)
    model, data, ckpt, exported = (os.path.join(d, n) for n in ("m.bin", "d.bin", "c.ckpt", "e.bin"))
    write_v0(model, w)
    # exactly T+1 tokens: every window, so every batch, is the same sequence
    seq = np.random.default_rng(3).integers(0, cfg["vocab_size"], 9).astype("<u2")
    seq.tofile(data)
    r = train(model, data, ckpt)
    steps = r.of_type("step")
    assert [s["step"] for s in steps] == list(range(1, STEPS + 1))
    assert run(["export", "--ckpt", ckpt, "--output", exported]).rc == 0
    ours = read_v0(exported, cfg, {k: v.shape for k, v in w.items()})

    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in w.items()}
    decay = [t[k] for k in ORDER if not k.startswith("rms")]
    no_decay = [t[k] for k in ORDER if k.startswith("rms")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(B1, B2), eps=EPS)
    tokens = np.stack([seq[:-1], seq[:-1]]).astype(np.int64)
    targets = np.stack([seq[1:], seq[1:]]).astype(np.int64)
    for i, s in enumerate(steps, start=1):
        for group in opt.param_groups:
            group["lr"] = lr_at(i)
        opt.zero_grad()
        loss = torch_loss(t, tokens, targets, cfg, shared=False)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_([t[k] for k in ORDER], CLIP)
        opt.step()
        assert abs(s["loss"] - loss.item()) <= 1e-5 * abs(loss.item()), (i, s["loss"], loss.item())
        assert abs(s["lr"] - lr_at(i)) <= 1e-9 + 1e-6 * lr_at(i), (i, s["lr"], lr_at(i))
        assert abs(s["grad_norm"] - norm.item()) <= 1e-4 * norm.item(), (i, s["grad_norm"], norm.item())
        assert norm.item() > CLIP  # clipping really happened
    for k in ORDER:
        ref = t[k].detach().numpy()
        err = np.abs(ours[k] - ref).max() / np.abs(ref).max()
        assert err < 1e-5, f"{k}: {err:.2e}"
        moved = np.abs(ours[k] - w[k]).max()
        assert moved > 1e-4, f"{k} did not change"


@test
def accumulation_equals_a_bigger_batch():
    d = tmpdir()
    w = random_weights(12)
    model, data = os.path.join(d, "m.bin"), os.path.join(d, "d.bin")
    write_v0(model, w)
    np.random.default_rng(4).integers(0, CFG["vocab_size"], 9).astype("<u2").tofile(data)
    big = train(model, data, os.path.join(d, "a.ckpt"))
    acc = run(["train", "--model", model, "--data", data, "--steps", STEPS, "--batch", 1, "--accum", 2,
               "--seq", 8, "--lr", LR, "--lr-min", LR_MIN, "--warmup", WARMUP, "--weight-decay", WD,
               "--grad-clip", CLIP, "--beta1", B1, "--beta2", B2, "--eps", EPS, "--val-every", 0])
    assert len(acc.of_type("batch")) == 2 * STEPS
    for a, b in zip(big.of_type("step"), acc.of_type("step")):
        assert abs(a["loss"] - b["loss"]) < 1e-5 * abs(a["loss"])
        assert abs(a["grad_norm"] - b["grad_norm"]) < 1e-4 * a["grad_norm"]


@test
def schedules_follow_their_formulas():
    d = tmpdir()
    model, data = os.path.join(d, "m.bin"), os.path.join(d, "d.bin")
    write_v0(model, random_weights(13))
    np.random.default_rng(5).integers(0, CFG["vocab_size"], 64).astype("<u2").tofile(data)
    for schedule in ("constant", "linear", "cosine"):
        r = run(["train", "--model", model, "--data", data, "--steps", 10, "--batch", 1, "--seq", 8,
                 "--lr", 1e-3, "--lr-min", 1e-4, "--warmup", 3, "--lr-schedule", schedule, "--val-every", 0])
        lrs = [s["lr"] for s in r.of_type("step")]
        for step, lr in enumerate(lrs, start=1):
            if step <= 3:
                want = 1e-3 * step / 3
            else:
                p = (step - 3) / 7
                want = {"constant": 1e-3, "linear": 1e-3 - 9e-4 * p,
                        "cosine": 1e-4 + 0.5 * (1 + math.cos(math.pi * p)) * 9e-4}[schedule]
            assert abs(lr - want) < 1e-9, (schedule, step, lr, want)


if __name__ == "__main__":
    run_all()
