"""`neuralforge benchmark`: one `benchmark` message with consistent numbers
for training (full and LoRA) and generation, and its flag errors. Speed
itself is measured by scripts/ and bench/, never asserted here."""
import os

from harness import assert_error, run, run_all, shared, test, tmpdir
from llama_ref import CFG, random_weights, write_v0


@test
def train_benchmark_reports_consistent_numbers():
    r = run(["benchmark", "--train", "--preset", "15M", "--batch", 2, "--seq", 16, "--steps", 2, "--threads", 1])
    assert r.rc == 0, r.stdout
    b = r.one("benchmark")
    assert b["mode"] == "train" and b["model"] == "15M" and b["config"]["dim"] == 288 and b["threads"] == 1
    assert (b["batch"], b["seq"], b["steps"], b["lora_rank"], b["dtype"]) == (2, 16, 2, 0, "fp32")
    assert abs(b["tok_s"] - 2 * 16 / (b["ms_per_step"] / 1000)) < 1e-6 * b["tok_s"]
    assert b["gflops"] > 0 and b["gemm_peak_gflops"] > 0 and abs(b["mfu"] - b["gflops"] / b["gemm_peak_gflops"]) < 1e-6 * b["mfu"]
    lora = run(["benchmark", "--train", "--model", shared("stories260K.bin"), "--batch", 2, "--seq", 32,
                "--steps", 1, "--lora-rank", 4]).one("benchmark")
    assert lora["lora_rank"] == 4 and lora["model"].endswith("stories260K.bin") and lora["params"] == 260032
    bf16 = run(["benchmark", "--train", "--preset", "15M", "--batch", 1, "--seq", 16, "--steps", 1, "--dtype", "bf16"])
    assert bf16.rc == 0 and bf16.one("benchmark")["dtype"] == "bf16"


@test
def generate_benchmark_reports_consistent_numbers():
    r = run(["benchmark", "--generate", "--model", shared("stories260K.bin"), "--prompt-tokens", 8, "--tokens", 16])
    assert r.rc == 0, r.stdout
    b = r.one("benchmark")
    assert b["mode"] == "generate" and (b["prompt_tokens"], b["tokens"]) == (8, 16)
    assert abs(b["tok_s"] * b["ms_per_token"] - 1000) < 1e-6 * 1000 and b["prompt_tok_s"] > 0
    assert b["prompt_first_ms"] > 0
    assert b["memory_read_gbytes_s"] > 0
    reads = b["weight_gbytes_s"] + b["cache_gbytes_s"]
    assert abs(b["bandwidth_use"] - reads / b["memory_read_gbytes_s"]) < 1e-6 * b["bandwidth_use"]
    assert abs(b["weight_gbytes_s"] - 260032 * 4 * b["tok_s"] / 1e9) < 1e-6 * b["weight_gbytes_s"]
    assert b["kv_cache"] == "fp32"
    # tokens at positions 8..23 read 9..24 keys and values: 5 layers, kv_dim 32 (4 kv heads of 8), 4 bytes each
    assert abs(b["cache_gbytes_s"] - 2 * 5 * 32 * 4 * 16.5 * b["tok_s"] / 1e9) < 1e-6 * b["cache_gbytes_s"]
    kv = run(["benchmark", "--generate", "--model", shared("stories260K.bin"), "--prompt-tokens", 300, "--tokens", 16,
              "--kv-cache", "bf16"])
    assert kv.rc == 0, kv.stdout
    k = kv.one("benchmark")
    assert k["kv_cache"] == "bf16"
    assert abs(k["cache_gbytes_s"] - 2 * 5 * 32 * 2 * 308.5 * k["tok_s"] / 1e9) < 1e-6 * k["cache_gbytes_s"]


@test
def defaults_shrink_to_a_short_context():
    model = os.path.join(tmpdir(), "m.bin")
    write_v0(model, random_weights(1, CFG), CFG)  # seq_len 40
    t = run(["benchmark", "--train", "--model", model, "--steps", 1])
    assert t.rc == 0 and t.one("benchmark")["seq"] == 40, t.stdout
    g = run(["benchmark", "--generate", "--model", model]).one("benchmark")
    assert (g["prompt_tokens"], g["tokens"]) == (20, 20)
    assert_error(run(["benchmark", "--train", "--model", model, "--seq", 41]), "usage", "--seq")


@test
def benchmark_flag_mistakes_are_refused():
    for args, mention in ((["--preset", "15M"], "--train"), (["--train", "--generate"], "--train"),
                          (["--train", "--tokens", 5], "--tokens"), (["--generate", "--batch", 2], "--batch"),
                          (["--train", "--preset", "7B"], "--preset"),
                          (["--train", "--preset", "15M", "--model", shared("stories260K.bin")], "--preset"),
                          (["--train", "--preset", "15M", "--seq", 300], "--seq"),
                          (["--generate", "--preset", "15M", "--tokens", 200, "--prompt-tokens", 100], "seq_len"),
                          (["--train", "--threads", -1], "--threads"), (["--generate", "--dtype", "bf16"], "--dtype"),
                          (["--train", "--dtype", "fp16"], "--dtype"), (["--train", "--kv-cache", "bf16"], "--kv-cache"),
                          (["--generate", "--kv-cache", "int8"], "--kv-cache")):
        assert_error(run(["benchmark", *args]), "usage", mention)


@test
def nf_cpu_picks_the_kernel_tier_and_refuses_other_values():
    """NF_CPU=avx2 runs the AVX2 tier (this CI machine has AVX-512, so only
    the variable can choose it); an unknown value is an error naming NF_CPU."""
    args = ["benchmark", "--generate", "--model", shared("stories260K.bin"), "--prompt-tokens", 4, "--tokens", 4]
    tiers = {"baseline": ("portable",), "avx2": ("avx2", "avx2-vnni")}
    for value, kernels in tiers.items():
        r = run(args, env={**os.environ, "NF_CPU": value})
        assert r.rc == 0 and r.one("benchmark")["kernels"] in kernels, (value, r.stdout)
    assert_error(run(args, env={**os.environ, "NF_CPU": "avx3"}), "usage", "NF_CPU")


if __name__ == "__main__":
    run_all()
