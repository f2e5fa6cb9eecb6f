"""`train --init` builds every family NeuralForge computes (llama, qwen2's
q/k/v biases, qwen3's q/k norms with head_dim apart from dim / heads, RoPE
base and RMSNorm epsilon): the shape reaches the init message, version-3
checkpoints keep it (a resumed run continues exactly), version-1 checkpoints
still load, and what llama2.c's files cannot hold is refused by name. The
computations themselves are checked against PyTorch in test_hf_reference.py."""
import os

import numpy as np

from harness import assert_error, run, run_all, shared, test, tmpdir

FUZZ_SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "corpus", "checkpoint")


def token_file(seed=1, n=20000):
    path = os.path.join(tmpdir(), "d.bin")
    np.random.default_rng(seed).integers(0, 512, n).astype("<u2").tofile(path)
    return path


def init_args(arch, extra=()):
    return ["train", "--init", "--arch", arch, "--dim", 32, "--n-layers", 2, "--n-heads", 4, "--n-kv-heads", 2,
            "--seq-len", 64, "--tokenizer", shared("tok512.bin"), "--batch", 2, "--seq", 32, "--val-every", 0,
            "--lr", 3e-3, *extra]


@test
def each_family_reaches_the_init_message_with_its_defaults():
    data = token_file()
    for arch, bias, norm, theta, eps in (("llama", False, False, 10000, 1e-5), ("qwen2", True, False, 1e6, 1e-6),
                                         ("qwen3", False, True, 1e6, 1e-6)):
        r = run(init_args(arch, ["--head-dim", 16, "--data", data, "--steps", 2]))
        assert r.rc == 0, r.stdout
        c = r.one("init")["config"]
        assert (c["arch"], c["qkv_bias"], c["qk_norm"], c["head_size"]) == (arch, bias, norm, 16), c
        assert abs(c["rope_theta"] - theta) < 1e-3 * theta and abs(c["rms_norm_eps"] - eps) < 1e-3 * eps, c
        assert c["vocab_size"] == 512  # no --vocab-size: the tokenizer's
        assert all(np.isfinite(m["loss"]) for m in r.of_type("step"))
    r = run(init_args("qwen3", ["--rope-theta", 5e5, "--rms-norm-eps", 1e-5, "--data", data, "--steps", 1]))
    c = r.one("init")["config"]
    assert c["rope_theta"] == 5e5 and abs(c["rms_norm_eps"] - 1e-5) < 1e-10, c


@test
def a_resumed_qwen_run_continues_exactly_through_a_version_4_checkpoint():
    data = token_file(2)
    for arch in ("qwen2", "qwen3"):
        d = tmpdir()
        straight = run(init_args(arch, ["--head-dim", 16, "--data", data, "--steps", 6, "--ckpt", f"{d}/a.ckpt"]))
        assert straight.rc == 0, straight.stdout
        # the same run re-executing itself from its checkpoint after step 3
        part = run(init_args(arch, ["--head-dim", 16, "--data", data, "--steps", 6, "--ckpt", f"{d}/c.ckpt",
                                    "--restart-every", 3]))
        assert part.rc == 0, part.stdout
        assert [m["resume_step"] for m in part.of_type("init")] == [0, 3], part.of_type("init")
        losses = lambda r: [m["loss"] for m in r.of_type("step")]
        assert losses(part)[-3:] == losses(straight)[-3:], (arch, losses(part), losses(straight))
        assert open(f"{d}/a.ckpt", "rb").read()[8:12] == b"\x04\x00\x00\x00"  # version 4


@test
def version_1_and_2_checkpoints_still_load():
    """Written by builds of those versions (version 2: FNV checksums, before XXH3)."""
    for version in (1, 2):
        d = tmpdir()
        seed = os.path.join(FUZZ_SEEDS, f"compat_v{version}_full.ckpt")
        assert open(seed, "rb").read()[8:12] == bytes([version, 0, 0, 0])
        r = run(["export", "--ckpt", seed, "--format", "llama2c", "--output", f"{d}/m.bin"])
        assert r.rc == 0, r.stdout
        assert run(["info", "--model", f"{d}/m.bin"]).one("info")["value"]["config"]["arch"] == "llama"


@test
def what_the_flags_and_llama2c_files_cannot_take_is_refused_by_name():
    data = token_file(3)
    assert_error(run(["train", "--model", shared("stories260K.bin"), "--dim", 64, "--data", data]), "usage",
                 "--dim needs --init")
    assert_error(run(["train", "--model", shared("stories260K.bin"), "--arch", "qwen3", "--data", data]), "usage",
                 "--arch needs --init")
    assert_error(run(init_args("qwen3", ["--rope-theta", 0.5, "--data", data])), "usage", "--rope-theta")
    assert_error(run(init_args("qwen3", ["--rms-norm-eps", 1e-13, "--data", data])), "usage", "--rms-norm-eps")
    assert_error(run(init_args("qwen4", ["--data", data])), "usage", "--arch")
    assert_error(run(init_args("llama", ["--head-dim", 15, "--data", data])), "usage", "head size 15 is odd")
    d = tmpdir()
    assert run(init_args("qwen3", ["--head-dim", 16, "--data", data, "--steps", 1, "--ckpt", f"{d}/q.ckpt"])).rc == 0
    for fmt in ("llama2c", "llama2c-v1"):
        assert_error(run(["export", "--ckpt", f"{d}/q.ckpt", "--format", fmt, "--output", f"{d}/q.bin"]), "usage",
                     "cannot hold the qwen3 architecture")


if __name__ == "__main__":
    run_all()
