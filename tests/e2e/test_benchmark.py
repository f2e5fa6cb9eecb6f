"""`neuralforge benchmark`: one `benchmark` message with consistent numbers
for training (full and LoRA) and generation, and its flag errors. Speed
itself is measured by scripts/ and bench/, never asserted here."""
import os

import hf_ref
from harness import assert_error, run, run_all, shared, test, tmpdir
from llama_ref import CFG, random_weights, write_v0

# The published weight counts (model cards; config_param_count of the preset must give them exactly).
PUBLISHED = {"smollm2-135m": 134_515_008, "qwen2.5-0.5b": 494_032_768, "llama3.2-1b": 1_235_814_400}


def assert_hf_shape(b, preset):
    """The benchmark message's config and weight count are the published model's: its config.json as
    hf_ref.PRESETS writes it, a table of its own."""
    hf, c = hf_ref.make_config(preset), b["config"]
    assert (c["dim"], c["hidden_dim"], c["n_layers"], c["n_heads"], c["n_kv_heads"], c["vocab_size"], c["seq_len"],
            c["head_size"]) == (hf["hidden_size"], hf["intermediate_size"], hf["num_hidden_layers"],
                                hf["num_attention_heads"], hf["num_key_value_heads"], hf["vocab_size"],
                                hf["max_position_embeddings"], hf_ref.head_dim(hf)), (preset, c)
    theta, scaling = hf_ref.rope(hf)
    assert c["arch"] == hf["model_type"] and c["qkv_bias"] == (hf["model_type"] == "qwen2") and not c["qk_norm"]
    assert c["shared_classifier"] == hf["tie_word_embeddings"] and c["rope_theta"] == theta
    assert abs(c["rms_norm_eps"] - hf_ref.norm_eps(hf)) < 1e-12, (preset, c["rms_norm_eps"])
    if scaling is None:
        assert c["rope_scaling"] is None, (preset, c)
    else:
        s = c["rope_scaling"]
        assert (s["type"], s["factor"], s["low_freq_factor"], s["high_freq_factor"], s["original_context"]) == \
            ("llama3", scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"],
             scaling["original_max_position_embeddings"]), (preset, s)
    assert b["params"] == PUBLISHED[preset], (preset, b["params"])


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
    assert 0 < b["memory_read_median_gbytes_s"] <= b["memory_read_gbytes_s"]
    reads = b["weight_gbytes_s"] + b["cache_gbytes_s"]
    assert abs(b["bandwidth_use"] - reads / b["memory_read_gbytes_s"]) < 1e-6 * b["bandwidth_use"]
    # beside each token: a token's products take part of its time, and its cache is at most the last one's (24 rows
    # against the mean 16.5)
    most_cache = b["cache_gbytes_s"] / b["weight_gbytes_s"] * 24 / 16.5
    assert 0 < b["paired_bandwidth_use"] <= b["paired_product_use"] * (1 + most_cache)
    assert abs(b["weight_gbytes_s"] - 260032 * 4 * b["tok_s"] / 1e9) < 1e-6 * b["weight_gbytes_s"]
    assert b["kv_cache"] == "fp32"
    # tokens at positions 8..23 read 9..24 keys and values: 5 layers, kv_dim 32 (4 kv heads of 8), 4 bytes each
    assert abs(b["cache_gbytes_s"] - 2 * 5 * 32 * 4 * 16.5 * b["tok_s"] / 1e9) < 1e-6 * b["cache_gbytes_s"]
    assert_token_parts(b)
    kv = run(["benchmark", "--generate", "--model", shared("stories260K.bin"), "--prompt-tokens", 300, "--tokens", 16,
              "--kv-cache", "bf16"])
    assert kv.rc == 0, kv.stdout
    k = kv.one("benchmark")
    assert k["kv_cache"] == "bf16"
    assert abs(k["cache_gbytes_s"] - 2 * 5 * 32 * 2 * 308.5 * k["tok_s"] / 1e9) < 1e-6 * k["cache_gbytes_s"]
    # q8 of the 15M shape (width 288, no multiple of 64): groups of 32, a float scale each
    q = run(["benchmark", "--generate", "--preset", "15M", "--prompt-tokens", 2, "--tokens", 4, "--quant", "q8"])
    assert q.rc == 0, q.stdout
    m = q.one("benchmark")
    want = m["params"] * (1 + 4 / 32) * m["tok_s"] / 1e9
    assert abs(m["weight_gbytes_s"] - want) < 1e-6 * want, m
    assert_token_parts(m)


def assert_token_parts(b):
    """A generated token's time in its weight products and in its attention: two disjoint parts of the time the
    token took, each with the bytes it reads (the weights, the cache) over that time."""
    products, attention = b["product_ms_per_token"], b["attention_ms_per_token"]
    assert products > 0 and attention > 0 and products + attention <= b["ms_per_token"] * (1 + 1e-9), b
    weight_bytes = b["weight_gbytes_s"] * 1e9 / b["tok_s"]
    assert abs(b["product_gbytes_s"] - weight_bytes / products / 1e6) < 1e-6 * b["product_gbytes_s"], b
    assert b["product_gbytes_s"] > b["weight_gbytes_s"], b
    cache_bytes = b["cache_gbytes_s"] * 1e9 / b["tok_s"]
    assert abs(b["attention_gbytes_s"] - cache_bytes / attention / 1e6) < 1e-6 * b["attention_gbytes_s"], b


@test
def defaults_shrink_to_a_short_context():
    model = os.path.join(tmpdir(), "m.bin")
    write_v0(model, random_weights(1, CFG), CFG)  # seq_len 40
    t = run(["benchmark", "--train", "--model", model, "--steps", 1])
    assert t.rc == 0 and t.one("benchmark")["seq"] == 40, t.stdout
    g = run(["benchmark", "--generate", "--model", model]).one("benchmark")
    assert (g["prompt_tokens"], g["tokens"]) == (20, 20)
    # a separate classifier: a token reads it and one row of the embedding table, not the whole table
    read = g["params"] - (CFG["vocab_size"] - 1) * CFG["dim"]
    assert abs(g["weight_gbytes_s"] - read * 4 * g["tok_s"] / 1e9) < 1e-6 * g["weight_gbytes_s"], g
    assert_error(run(["benchmark", "--train", "--model", model, "--seq", 41]), "usage", "--seq")


@test
def benchmark_flag_mistakes_are_refused():
    for args, mention in ((["--preset", "15M"], "--train"), (["--train", "--generate"], "--train"),
                          (["--train", "--tokens", 5], "--tokens"), (["--generate", "--batch", 2], "--batch"),
                          (["--train", "--preset", "7B"], "--preset"),
                          (["--generate", "--preset", "llama3.2-8b"], "--preset"),
                          (["--train", "--preset", "15M", "--model", shared("stories260K.bin")], "--preset"),
                          (["--train", "--preset", "15M", "--seq", 300], "--seq"),
                          (["--generate", "--preset", "15M", "--tokens", 200, "--prompt-tokens", 100], "seq_len"),
                          (["--train", "--threads", -1], "--threads"), (["--generate", "--dtype", "bf16"], "--dtype"),
                          (["--train", "--dtype", "fp16"], "--dtype"), (["--train", "--kv-cache", "bf16"], "--kv-cache"),
                          (["--generate", "--kv-cache", "int8"], "--kv-cache")):
        assert_error(run(["benchmark", *args]), "usage", mention)


@test
def smollm2_preset_trains_lora_bf16_and_generates_fp32_and_q8():
    """The smallest real shape end to end, very short: LoRA bf16 training (its base held in bf16, as `train`
    holds it), full fine-tuning, and generation with both weight types."""
    base = ["benchmark", "--preset", "smollm2-135m", "--threads", 2]
    lora = run([*base, "--train", "--batch", 1, "--seq", 8, "--steps", 1, "--lora-rank", 8, "--dtype", "bf16"])
    assert lora.rc == 0, lora.stdout
    b = lora.one("benchmark")
    assert_hf_shape(b, "smollm2-135m")
    assert (b["lora_rank"], b["dtype"], b["seq"]) == (8, "bf16", 8) and b["tok_s"] > 0 and b["mfu"] > 0
    # budget.h's estimate: a bf16 base's peak is its fp32 weights while they convert (4 bytes a weight)
    assert 4 * PUBLISHED["smollm2-135m"] < b["memory_estimate_bytes"] < 5 * PUBLISHED["smollm2-135m"], b
    full = run([*base, "--train", "--batch", 1, "--seq", 8, "--steps", 1])
    assert full.rc == 0, full.stdout
    f = full.one("benchmark")
    assert f["lora_rank"] == 0 and f["memory_estimate_bytes"] > 16 * PUBLISHED["smollm2-135m"], f
    for quant, bytes_per_weight in (("none", 4.0), ("q8", 1 + 4 / 64)):
        g = run([*base, "--generate", "--prompt-tokens", 2, "--tokens", 2, "--quant", quant])
        assert g.rc == 0, g.stdout
        m = g.one("benchmark")
        assert_hf_shape(m, "smollm2-135m")
        assert m["quant"] == quant and m["bandwidth_use"] > 0
        want = PUBLISHED["smollm2-135m"] * bytes_per_weight * m["tok_s"] / 1e9
        assert abs(m["weight_gbytes_s"] - want) < 1e-6 * want, (quant, m)


@test
def larger_presets_report_their_published_shapes():
    """Qwen2.5-0.5B (q/k/v biases, theta 1e6) and Llama-3.2-1B (llama3 RoPE scaling): one generated token each,
    for the shape and weight count (the 1B one holds its 4.9 GB of fp32 weights for ~10 s)."""
    for preset in ("qwen2.5-0.5b", "llama3.2-1b"):
        r = run(["benchmark", "--generate", "--preset", preset, "--prompt-tokens", 0, "--tokens", 1], timeout=300)
        assert r.rc == 0, (preset, r.stdout)
        assert_hf_shape(r.one("benchmark"), preset)


@test
def training_that_does_not_fit_max_memory_is_refused_before_it_allocates():
    """budget.h's estimate against --max-memory: the 1B shape's full fine-tuning needs 16 bytes a weight
    (weights, gradients, AdamW's m and v: 18.4 GiB) and is refused under a 16 GiB budget, as LoRA is under a
    tiny one; neither allocates the 4.9 GB model first (the refusal comes at once)."""
    full = run(["benchmark", "--train", "--preset", "llama3.2-1b", "--batch", 1, "--seq", 256, "--max-memory", "16G"])
    assert_error(full, "out_of_memory", "--max-memory")
    assert "weights, gradients and AdamW state 18.4 GiB" in full.one("error")["message"], full.stdout
    lora = run(["benchmark", "--train", "--preset", "llama3.2-1b", "--lora-rank", 8, "--dtype", "bf16",
                "--max-memory", "1G"])
    # 16 bytes for each of 16 layers x rank 8 x (q 2048+2048, k 2048+512, v 2048+512, o 2048+2048) adapter weights
    assert_error(lora, "out_of_memory", "--max-memory")
    assert "weights, gradients and AdamW state 26.0 MiB" in lora.one("error")["message"], lora.stdout
    assert_error(run(["benchmark", "--train", "--max-memory", "lots"]), "usage", "--max-memory")
    assert_error(run(["benchmark", "--generate", "--max-memory", "8G"]), "usage", "--max-memory")


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
