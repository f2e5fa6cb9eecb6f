"""LoRA fine-tuning as a user runs it: adapter and input gradients against a
PyTorch reference, step 0 equal to the base model, merged export equal to
the base plus adapters, exact resume (with dropout), tiny adapter
checkpoints, generation and info with adapters, and the errors."""
import json
import os
import subprocess

import numpy as np
import torch

import struct

from harness import (PROBE, assert_error, base_checksum_pieces, checkpoint_as_version, lora_base_checksum_at, run,
                     run_all, run_interrupted, shared, test, tmpdir, xxh3_64)
from llama_ref import CFG, random_weights, torch_loss, write_v0

TARGETS = ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]


def target_dims(cfg, name):
    D, H, KV = cfg["dim"], cfg["hidden_dim"], cfg["dim"] // cfg["n_heads"] * cfg["n_kv_heads"]
    return {"wq": (D, D), "wk": (D, KV), "wv": (D, KV), "wo": (D, D), "w1": (D, H), "w2": (H, D), "w3": (D, H)}[name]


def lora_grads_check(mask, train_norms, seed):
    """nf_probe lora-grads against torch autograd on random adapters (B nonzero)."""
    cfg = dict(CFG)
    w = random_weights(seed, cfg)
    d = tmpdir()
    model = os.path.join(d, "m.bin")
    write_v0(model, w, cfg)
    g = np.random.default_rng(seed + 1)
    r, alpha, L, D = 4, 6.0, cfg["n_layers"], cfg["dim"]
    A, Bm, flat = {}, {}, []
    for i, name in enumerate(TARGETS):
        if not mask & (1 << i):
            continue
        fan_in, out = target_dims(cfg, name)
        A[name] = g.uniform(-1, 1, (L, r, fan_in)).astype(np.float32) / np.sqrt(fan_in)
        Bm[name] = (g.standard_normal((L, out, r)) * 0.1).astype(np.float32)
        flat += [A[name], Bm[name]]
    norms = {}
    if train_norms:
        norms = {"rms_att": (1 + 0.1 * g.standard_normal((L, D))).astype(np.float32),
                 "rms_ffn": (1 + 0.1 * g.standard_normal((L, D))).astype(np.float32),
                 "rms_final": (1 + 0.1 * g.standard_normal(D)).astype(np.float32)}
        flat += [norms["rms_att"], norms["rms_ffn"], norms["rms_final"]]
    adapters = os.path.join(d, "a.f32")
    np.concatenate([x.ravel() for x in flat]).astype(np.float32).tofile(adapters)
    Bsz, T = 2, 9
    tokens = g.integers(0, cfg["vocab_size"], (Bsz, T))
    targets = g.integers(0, cfg["vocab_size"], (Bsz, T))
    out = os.path.join(d, "g.f32")
    subprocess.run([PROBE, "lora-grads", model, adapters, out, str(r), str(alpha), str(mask), str(int(train_norms)),
                    str(Bsz), str(T), *map(str, tokens.ravel()), *map(str, targets.ravel())], check=True)
    data = np.fromfile(out, dtype=np.float32)
    n = sum(x.size for x in flat)
    loss, grads, dx = float(data[0]), data[1:1 + n], data[1 + n:].reshape(Bsz, T, D)

    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in w.items()}  # frozen: no grad
    leaf = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)
    tA = {k: leaf(v) for k, v in A.items()}
    tB = {k: leaf(v) for k, v in Bm.items()}
    tn = {k: leaf(v) for k, v in norms.items()}
    x0 = t["emb"][torch.tensor(tokens)].clone().requires_grad_(True)
    spec = {"scale": alpha / r, "A": tA, "B": tB}
    if train_norms:
        spec["norms"] = tn
    ref = torch_loss(t, tokens, targets, cfg, shared=False, lora=spec, x0=x0)
    ref.backward()
    assert abs(loss - ref.item()) / abs(ref.item()) < 1e-5, (loss, ref.item())
    refs = []
    for name in A:
        refs += [(name + ".A", tA[name].grad), (name + ".B", tB[name].grad)]
    for k in ("rms_att", "rms_ffn", "rms_final") if train_norms else ():
        refs.append((k, tn[k].grad))
    offset = 0
    for label, theirs in refs:
        theirs = theirs.numpy().ravel()
        ours = grads[offset:offset + theirs.size]
        offset += theirs.size
        err = np.abs(ours - theirs).max() / np.abs(theirs).max()
        assert np.abs(theirs).max() > 0, label
        assert err < 1e-4, f"{label}: relative error {err:.2e}"
    assert offset == n
    theirs = x0.grad.numpy()
    err = np.abs(dx - theirs).max() / np.abs(theirs).max()
    assert err < 1e-4, f"input gradient: relative error {err:.2e}"
    print(f"  mask {mask:3d} norms {train_norms}: {len(refs)} tensors + input gradient within 1e-4")


@test
def adapter_and_input_gradients_match_pytorch():
    lora_grads_check(0b0001111, False, 11)  # the default: attention projections
    lora_grads_check(0b1111111, True, 12)   # every projection, norms trained too


_cache = {}


def stories_data():
    if "ts" not in _cache:
        out = os.path.join(tmpdir(), "ts.bin")
        assert run(["tokenize", "--input", shared("tinystories_train_2MiB.txt"), "--output", out,
                    "--tokenizer", shared("tok512.bin")]).rc == 0
        _cache["ts"] = out
    return _cache["ts"]


def lora_args(ckpt, steps=12, extra=()):
    return ["train", "--model", shared("stories260K.bin"), "--data", stories_data(), "--lora-rank", 4,
            "--lora-alpha", 8, "--steps", steps, "--batch", 4, "--seq", 64, "--lr", 5e-3, "--warmup", 2,
            "--val-split", 0.05, "--val-every", 4, "--val-batches", 2, "--ckpt", ckpt, *extra]


@test
def step_zero_equals_the_base_model_and_the_base_stays_frozen():
    d = tmpdir()
    ckpt = os.path.join(d, "l.ckpt")
    full = run(["train", "--model", shared("stories260K.bin"), "--data", stories_data(), "--steps", 1,
                "--batch", 4, "--seq", 64, "--val-split", 0.05, "--val-every", 0])
    lora = run(lora_args(ckpt, extra=["--lora-targets", "q,k,v,o,gate,down,up"]))
    assert lora.rc == 0, lora.stdout
    # B = 0 at the start, so the first micro-batch sees exactly the base model
    assert lora.of_type("batch")[0]["loss"] == full.of_type("batch")[0]["loss"]
    init = lora.one("init")
    info = lora.one("info")
    assert info["key"] == "lora" and info["value"]["targets"] == TARGETS and info["value"]["rank"] == 4
    assert info["value"]["scale"] == 2.0 and init["params"] == info["value"]["params"]
    assert init["frozen_params"] == full.one("init")["params"]
    # the loss moved, and only the adapters did: merged minus base has rank <= 4 per projection
    merged = os.path.join(d, "merged.bin")
    assert run(["export", "--ckpt", ckpt, "--output", merged]).rc == 0
    cfg = dict(dim=64, hidden_dim=172, n_layers=5, n_heads=8, n_kv_heads=4, vocab_size=512)
    base = np.fromfile(shared("stories260K.bin"), dtype=np.float32)[7:]
    new = np.fromfile(merged, dtype=np.float32)[7:]
    V, D, L = cfg["vocab_size"], cfg["dim"], cfg["n_layers"]
    assert np.array_equal(base[:V * D], new[:V * D])  # embedding untouched
    wq = slice(V * D + L * D, V * D + L * D + D * D)  # layer 0 wq
    delta = (new[wq] - base[wq]).reshape(D, D)
    sv = np.linalg.svd(delta.astype(np.float64), compute_uv=False)
    assert sv[3] > 1e-2 * sv[0] and sv[4] < 1e-4 * sv[0], sv[:6]  # rank 4, up to fp32 rounding


@test
def bf16_lora_trains_on_the_rounded_base_and_tracks_fp32():
    # under --dtype bf16 the frozen base is rounded once and kept; the run must stay with fp32's
    d = tmpdir()
    fp32 = run(lora_args(os.path.join(d, "a.ckpt"), steps=24))
    bf16 = run(lora_args(os.path.join(d, "b.ckpt"), steps=24, extra=["--dtype", "bf16"]))
    assert fp32.rc == 0 and bf16.rc == 0, bf16.stdout
    assert bf16.of_type("batch")[0]["loss"] != fp32.of_type("batch")[0]["loss"]  # the bf16 products ran
    a, b = fp32.of_type("val")[-1]["val_loss"], bf16.of_type("val")[-1]["val_loss"]
    print(f"  val loss after 24 steps: fp32 {a:.5f}, bf16 {b:.5f} ({100 * (b / a - 1):+.3f}%)")
    assert abs(b / a - 1) < 0.01


@test
def merged_export_logits_equal_base_plus_adapters():
    d = tmpdir()
    ckpt = os.path.join(d, "l.ckpt")
    r = run(lora_args(ckpt, extra=["--lora-targets", "wq,wv,w2", "--lora-train-norms"]))
    assert r.rc == 0
    merged = os.path.join(d, "merged.bin")
    assert run(["export", "--model", shared("stories260K.bin"), "--lora", ckpt, "--output", merged]).rc == 0
    tokens = ["1", "403", "407", "261", "378", "77", "9", "300"]
    a, b, c = (os.path.join(d, x) for x in ("a.f32", "b.f32", "c.f32"))
    subprocess.run([PROBE, "logits-lora", shared("stories260K.bin"), ckpt, a, *tokens], check=True)
    subprocess.run([PROBE, "logits", merged, b, *tokens], check=True)
    subprocess.run([PROBE, "logits", shared("stories260K.bin"), c, *tokens], check=True)
    unmerged, m, base = (np.fromfile(x, dtype=np.float32) for x in (a, b, c))
    rel = np.linalg.norm(unmerged - m) / np.linalg.norm(m)
    moved = np.linalg.norm(unmerged - base) / np.linalg.norm(base)
    print(f"  merged vs unmerged: {rel:.2e} relative; adapters moved the logits by {moved:.2e}")
    assert rel < 1e-5 and moved > 1e-3
    # the stand-alone checkpoint merges into the base it names, the same way
    again = os.path.join(d, "again.bin")
    assert run(["export", "--ckpt", ckpt, "--output", again]).rc == 0
    assert open(again, "rb").read() == open(merged, "rb").read()
    # generate: unmerged adapters and the merged file give the same greedy text
    gen = ["--tokenizer", shared("tok512.bin"), "--prompt", "Once upon a time", "--temperature", 0,
           "--max-tokens", 40]
    x = run(["generate", "--model", shared("stories260K.bin"), "--lora", ckpt, *gen])
    y = run(["generate", "--model", merged, *gen])
    z = run(["generate", "--model", shared("stories260K.bin"), *gen])
    ids = lambda r: [m["token_id"] for m in r.of_type("token")]
    assert x.rc == 0 and len(ids(x)) == 40 and ids(x) == ids(y), (ids(x), ids(y))
    print(f"  greedy tokens that differ from the base model's: {sum(a != b for a, b in zip(ids(x), ids(z)))} of 40")


@test
def resume_with_dropout_equals_an_uninterrupted_run():
    d = tmpdir()
    full_ckpt, part_ckpt, rs_ckpt = (os.path.join(d, x) for x in ("full.ckpt", "part.ckpt", "rs.ckpt"))
    extra = ["--lora-dropout", 0.1, "--shuffle"]
    full = run(lora_args(full_ckpt, extra=extra))
    assert full.rc == 0
    rc, first = run_interrupted(lora_args(part_ckpt, extra=extra), at_step=3)
    assert rc == 0 and [m for m in first if m["type"] == "done"][0]["reason"] == "interrupted"
    resumed = run(lora_args(part_ckpt, extra=[*extra, "--resume"]))
    assert resumed.rc == 0 and resumed.one("init")["changed_flags"] == []
    restarted = run(lora_args(rs_ckpt, extra=[*extra, "--restart-every", 5]))
    assert restarted.rc == 0 and len(restarted.of_type("restart")) == 2
    losses = lambda ms: {m["step"]: m["loss"] for m in ms if m["type"] == "step"}
    a, b = losses(full.messages), losses(first)
    b.update(losses(resumed.messages))
    assert a == b == losses(restarted.messages) and sorted(a) == list(range(1, 13))
    out = {}
    for name, ck in (("full", full_ckpt), ("part", part_ckpt), ("restarted", rs_ckpt)):
        out[name] = os.path.join(d, name + ".bin")
        assert run(["export", "--ckpt", ck, "--output", out[name]]).rc == 0
    weights = {k: open(v, "rb").read() for k, v in out.items()}
    assert weights["full"] == weights["part"] == weights["restarted"]  # bit for bit


@test
def adapter_checkpoints_are_tiny_and_described_by_info():
    d = tmpdir()
    ckpt = os.path.join(d, "l.ckpt")
    r = run(lora_args(ckpt, steps=2))
    assert r.rc == 0
    n = r.one("info")["value"]["params"]
    L, D, KV, rank = 5, 64, 32, 4
    assert n == L * rank * (D + D) * 2 + L * rank * (D + KV) * 2  # wq, wo: (r,D)+(D,r); wk, wv: (r,D)+(KV,r)
    size = os.path.getsize(ckpt)
    assert size == r.one("checkpoint")["bytes"] and size < 12 * n + 4096
    full = os.path.getsize(shared("stories260K.bin"))
    print(f"  adapter checkpoint {size} bytes for {n} adapter weights; the base model file is {full} bytes")
    info = run(["info", "--lora", ckpt, "--model", shared("stories260K.bin")])
    assert info.rc == 0
    v = [m for m in info.messages if m["key"] == "lora"][0]["value"]
    assert (v["rank"], v["alpha"], v["params"], v["step"]) == (4, 8, n, 2)
    assert os.path.realpath(v["base_path"]) == os.path.realpath(shared("stories260K.bin"))
    assert os.path.isabs(v["base_path"]) and len(v["base_checksum"]) == 16
    assert v["config"]["dim"] == 64 and v["targets"] == ["wq", "wk", "wv", "wo"]
    # a Q8 base cannot be used in place: it is dequantized, and works the same way
    q8 = ["--model", shared("stories260K_q80.bin")]
    q8_ckpt = os.path.join(d, "q8.ckpt")
    r = run(["train", *q8, "--data", stories_data(), "--lora-rank", 2, "--steps", 2, "--batch", 2, "--seq", 32,
             "--val-every", 0, "--ckpt", q8_ckpt])
    assert r.rc == 0 and r.one("init")["frozen_params"] == 260032, r.stdout
    g = run(["generate", *q8, "--lora", q8_ckpt, "--tokenizer", shared("tok512.bin"), "--max-tokens", 5, "--seed", 1])
    assert g.rc == 0 and len(g.of_type("token")) == 5


@test
def older_lora_checkpoints_keep_their_base_checksum():
    """Version 4 ties adapters to their base by the XXH3 digests of its 16 MiB pieces. Checkpoints of versions 3
    (XXH3 of the base's bytes) and 2 (FNV), the same bytes as builds of those versions write them, still export,
    resume and generate on their base; one whose base checksum matches under neither rule of its version is
    refused."""
    d = tmpdir()
    v4, v3, v2, wrong3, wrong2 = (os.path.join(d, x + ".ckpt") for x in ("v4", "v3", "v2", "wrong3", "wrong2"))
    assert run(lora_args(v4, steps=2)).rc == 0
    raw, base = open(v4, "rb").read(), open(shared("stories260K.bin"), "rb").read()
    assert raw[8:12] == b"\x04\x00\x00\x00"
    assert struct.unpack_from("<Q", raw, lora_base_checksum_at(raw))[0] == base_checksum_pieces([base])
    assert struct.unpack_from("<Q", raw, len(raw) - 8)[0] == xxh3_64(raw[:-8])
    for version, path, wrong in ((3, v3, wrong3), (2, v2, wrong2)):
        open(path, "wb").write(checkpoint_as_version(raw, version, base))
        open(wrong, "wb").write(checkpoint_as_version(raw, version))  # version 4's base checksum, read by version's
    merged = {}
    for ck in (v4, v3, v2):
        out = ck + ".bin"
        assert run(["export", "--ckpt", ck, "--output", out]).rc == 0, ck
        merged[ck] = open(out, "rb").read()
    assert merged[v2] == merged[v4] and merged[v3] == merged[v4]
    gen = ["generate", "--model", shared("stories260K.bin"), "--tokenizer", shared("tok512.bin"), "--max-tokens", 3]
    for ck in (v3, v2):
        assert run([*gen, "--lora", ck]).rc == 0, ck
    losses = {}
    for ck in (v4, v3, v2):  # resumed to step 4: the same run, and the new checkpoint is version 4
        r = run(lora_args(ck, steps=4, extra=["--resume"]))
        assert r.rc == 0, r.stdout[-2000:]
        losses[ck] = [m["loss"] for m in r.of_type("step")]
        assert open(ck, "rb").read()[8:12] == b"\x04\x00\x00\x00"
    assert losses[v2] == losses[v4] and losses[v3] == losses[v4] and len(losses[v4]) == 2, losses
    for wrong in (wrong3, wrong2):
        for argv in (["export", "--ckpt", wrong, "--output", os.path.join(d, "w.bin")], [*gen, "--lora", wrong],
                     lora_args(wrong, steps=4, extra=["--resume"])):
            assert_error(run(argv), "bad_checkpoint", "another base model")


@test
def lora_mistakes_are_refused_with_the_reason():
    d = tmpdir()
    ckpt = os.path.join(d, "l.ckpt")
    assert run(lora_args(ckpt, steps=1)).rc == 0
    data = stories_data()
    base = ["train", "--model", shared("stories260K.bin"), "--data", data, "--steps", 1, "--seq", 32]
    for extra, mention in ((["--lora-alpha", 4], "--lora-rank"), (["--lora-train-norms"], "--lora-rank"),
                           (["--lora-rank", 65], "--lora-rank"), (["--lora-rank", 2000], "--lora-rank"),
                           (["--lora-rank", 4, "--lora-targets", "wq,bogus"], "bogus"),
                           (["--lora-rank", 4, "--lora-targets", "128"], "--lora-targets"),
                           (["--lora-rank", 4, "--lora-targets", "q,wq"], "twice"),
                           (["--lora-rank", 4, "--lora-dropout", 1], "--lora-dropout")):
        assert_error(run([*base, *extra]), "usage", mention)
    # values that change nothing are no mistake, in a config file either
    cfg = os.path.join(d, "c.json")
    json.dump({"lora-train-norms": False, "lora-dropout": 0}, open(cfg, "w"))
    assert run([*base, "--config", cfg, "--batch", 1, "--val-every", 0]).rc == 0
    assert_error(run(["train", "--init", "--vocab-size", 512, "--dim", 32, "--n-heads", 4, "--n-layers", 1,
                      "--data", data, "--lora-rank", 4]), "usage", "--model")
    # a LoRA checkpoint is tied to its base, its layout and its kind
    other = os.path.join(d, "other.bin")
    w = random_weights(3, dict(CFG, vocab_size=512))
    write_v0(other, w, dict(CFG, vocab_size=512))
    tok = ["--tokenizer", shared("tok512.bin"), "--max-tokens", 2]
    assert_error(run(["generate", "--model", shared("stories260K_v1.bin"), "--lora", ckpt, *tok]), "bad_checkpoint",
                 "another base")
    assert_error(run(["generate", "--model", other, "--lora", ckpt, *tok]), "bad_checkpoint")
    assert_error(run(["generate", "--ckpt", ckpt, "--lora", ckpt, *tok]), "usage", "--model")
    assert_error(run(lora_args(ckpt, steps=3, extra=["--resume", "--lora-targets", "wq"])), "bad_checkpoint")
    assert_error(run(["train", "--model", shared("stories260K.bin"), "--data", data, "--steps", 3, "--batch", 4,
                      "--seq", 64, "--ckpt", ckpt, "--resume"]), "bad_checkpoint", "LoRA")
    blob = open(ckpt, "rb").read()
    for name, bad in (("truncated", blob[:-40]), ("flipped", blob[:200] + bytes([blob[200] ^ 4]) + blob[201:])):
        path = os.path.join(d, name + ".ckpt")
        open(path, "wb").write(bad)
        assert_error(run(["generate", "--model", shared("stories260K.bin"), "--lora", path, *tok]), "bad_checkpoint")
        assert_error(run(["info", "--lora", path]), "bad_checkpoint")
    full_ckpt = os.path.join(d, "full.ckpt")
    assert run([*base, "--ckpt", full_ckpt]).rc == 0
    assert_error(run(["info", "--lora", full_ckpt]), "usage", "full checkpoint")
    assert_error(run(["generate", "--model", shared("stories260K.bin"), "--lora", full_ckpt, *tok]), "usage")


if __name__ == "__main__":
    run_all()
