"""Makes the seed corpora of tests/fuzz/corpus/<harness>/ with the tool itself
(build/neuralforge): a tiny model trained for two steps (dim 8, one layer,
a 16-piece vocabulary), its checkpoints (full and LoRA) and its exports
(llama2.c v0 and v1, GGUF, safetensors), a v2 (Q8_0) file made from the v1
one, the 16-piece tokenizer.bin, an ingest directory's manifest.json, and
small texts, records and configs. Every seed is a few KB at most.

Run from the repository root after `make`: /usr/bin/python3 tests/fuzz/make_seeds.py
It replaces the generated seeds (seed_*); the regression inputs (crash_*,
hostile_*) and the checkpoints of older versions (compat_v1_*: written by a
version-1 build, kept to show they still load) beside them are kept. Qwen 2
and Qwen 3 checkpoints (biases; q/k norms with head_dim apart from dim /
heads) fill the model block of version 2."""
import glob
import json
import os
import struct
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NF = os.path.join(ROOT, "build", "neuralforge")
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
PIECES = ["<unk>", "\n<s>\n", "\n</s>\n", " ", "a", "b", "c", " a", "ab", "abc", "\u2581", "<0x41>", "<0xFF>",
          " the", "\u00e9", "<0x0A>"]


def nf(*args):
    r = subprocess.run([NF] + [str(a) for a in args], capture_output=True)
    if r.returncode != 0:
        sys.exit(f"neuralforge {' '.join(map(str, args))} failed:\n{r.stdout.decode()}{r.stderr.decode()}")


def tokenizer_bin():
    out = struct.pack("<i", 8)
    for i, piece in enumerate(PIECES):
        b = piece.encode()
        out += struct.pack("<fi", -float(i), len(b)) + b
    return out


def q8_from_v1(v1, group=4):
    """llama2.c's export version 2 from a version 1 file: the norms stay fp32,
    every matrix becomes int8 values then one fp32 scale per group."""
    dim, hidden, layers, heads, kv_heads, vocab, seq = struct.unpack_from("<7i", v1, 8)
    shared = v1[36]
    kv = dim // heads * kv_heads
    floats = struct.unpack_from(f"<{(len(v1) - 256) // 4}f", v1, 256)
    norms = (2 * layers + 1) * dim
    header = bytearray(v1[:256])
    header[4:8] = struct.pack("<i", 2)
    header[37:41] = struct.pack("<i", group)
    out = bytes(header) + struct.pack(f"<{norms}f", *floats[:norms])
    pos = norms
    sizes = [vocab * dim] + [dim * dim] * layers + [kv * dim] * layers * 2 + [dim * dim] * layers + \
            [hidden * dim] * layers * 3 + ([] if shared else [vocab * dim])
    for n in sizes:
        w = floats[pos:pos + n]
        pos += n
        q, scales = [], []
        for g in range(0, n, group):
            block = w[g:g + group]
            scale = max(abs(x) for x in block) / 127.0 or 1.0
            scales.append(scale)
            q += [max(-127, min(127, round(x / scale))) for x in block]
        out += struct.pack(f"<{n}b", *q) + struct.pack(f"<{len(scales)}f", *scales)
    assert pos == len(floats)
    return out


def main():
    tmp = tempfile.mkdtemp(prefix="nf_seeds_")
    seeds = {}  # harness -> {name: bytes}
    add = lambda harness, name, data: seeds.setdefault(harness, {}).__setitem__(name, data)

    tok = os.path.join(tmp, "tok16.bin")
    open(tok, "wb").write(tokenizer_bin())
    add("tokenizer", "tok16.bin", tokenizer_bin())
    data = os.path.join(tmp, "tokens.bin")
    open(data, "wb").write(struct.pack("<512H", *[(i * 7 + i // 5) % 16 for i in range(512)]))

    shape = ["--dim", 8, "--hidden-dim", 16, "--n-layers", 1, "--n-heads", 2, "--n-kv-heads", 1,
             "--vocab-size", 16, "--seq-len", 8]
    ckpt = os.path.join(tmp, "full.ckpt")
    nf("train", "--init", *shape, "--data", data, "--steps", 2, "--batch", 2, "--val-every", 0, "--ckpt", ckpt,
       "--tokenizer", tok, "--threads", 1)
    sep = os.path.join(tmp, "sep.ckpt")
    nf("train", "--init", *shape, "--separate-classifier", "--data", data, "--steps", 1, "--batch", 1,
       "--val-every", 0, "--ckpt", sep, "--threads", 1)
    add("checkpoint", "full.ckpt", open(ckpt, "rb").read())
    for arch in ("qwen2", "qwen3"):
        qwen = os.path.join(tmp, arch + ".ckpt")
        nf("train", "--init", *shape, "--arch", arch, "--head-dim", 6, "--data", data, "--steps", 1, "--batch", 1,
           "--val-every", 0, "--ckpt", qwen, "--threads", 1)
        add("checkpoint", arch + ".ckpt", open(qwen, "rb").read())

    for fmt, name in [("llama2c", "v0.bin"), ("llama2c-v1", "v1.bin")]:
        for src, suffix in [(ckpt, ""), (sep, "_separate")]:
            out = os.path.join(tmp, fmt + suffix)
            nf("export", "--ckpt", src, "--format", fmt, "--output", out)
            add("model", name.replace(".bin", suffix + ".bin"), open(out, "rb").read())
    add("model", "v2.bin", q8_from_v1(open(os.path.join(tmp, "llama2c-v1"), "rb").read()))
    add("model", "v2_separate.bin", q8_from_v1(open(os.path.join(tmp, "llama2c-v1_separate"), "rb").read()))

    v0 = os.path.join(tmp, "llama2c")
    lora = os.path.join(tmp, "lora.ckpt")
    nf("train", "--model", v0, "--lora-rank", 2, "--lora-targets", "wq,w2", "--data", data, "--steps", 1,
       "--batch", 1, "--val-every", 0, "--ckpt", lora, "--threads", 1)
    add("checkpoint", "lora.ckpt", open(lora, "rb").read())

    for dtype in ("f32", "q8_0"):
        out = os.path.join(tmp, f"m_{dtype}.gguf")
        nf("export", "--ckpt", ckpt, "--format", "gguf", "--dtype", dtype, "--output", out)
        add("gguf", f"{dtype}.gguf", open(out, "rb").read())
    hf = os.path.join(tmp, "hf")
    nf("export", "--ckpt", ckpt, "--format", "safetensors", "--output", hf)
    for path in glob.glob(os.path.join(hf, "*.safetensors")):
        add("safetensors", os.path.basename(path), open(path, "rb").read())
    add("hf_config", "config.json", open(os.path.join(hf, "config.json"), "rb").read())
    sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
    import hf_ref  # the keys of real configs: Llama 3 (llama3 scaling), SmolLM2, Qwen 2.5, Qwen 3
    for family in ("llama3", "smollm2", "qwen2", "qwen3"):
        add("hf_config", f"{family}.json", json.dumps(hf_ref.make_config(family), indent=2).encode())

    src = os.path.join(tmp, "src")
    os.makedirs(src)
    open(os.path.join(src, "a.txt"), "w").write("Once upon a time.\n<|endoftext|>\nThe end.\n")
    open(os.path.join(src, "b.jsonl"), "w").write('{"prompt": "Q?", "completion": "A."}\n')
    ing = os.path.join(tmp, "ingested")
    nf("ingest", "--source", src, "--output", ing, "--tokenizer", tok)
    add("manifest", "manifest.json", open(os.path.join(ing, "manifest.json"), "rb").read())

    # records: the first byte picks the kind (0 text, 1 csv, 2 jsonl), / 3 % 3 the split, / 9 % 2 the chat
    # template (llama2, chatml)
    add("records", "text_eot.txt", b"\x00Once upon a time.\n<|endoftext|>\nThe end.\n  <|endoftext|>  \n")
    add("records", "text_blank.txt", b"\x03First paragraph\nstill first.\n\n\t\nSecond.\n")
    add("records", "text_none.txt", b"\x06All one document\n\nwith blank lines.\n")
    add("records", "rows.csv", b"\x01prompt,completion\n\"Q, quoted\",\"A \"\"x\"\"\"\r\nq2,a2\n")
    add("records", "text.csv", b"\x01text,other\nhello,1\n\"multi\nline\",2\n")
    add("records", "columns.csv", b"\x01name,age\nann,3\n")
    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi "},
                         {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
                         {"role": "assistant", "content": "Bye."}]}
    add("records", "mixed.jsonl", b"\x02" + "\n".join([
        json.dumps({"text": "A story \u00e9\u2581."}), json.dumps({"prompt": "Q", "completion": "A"}),
        json.dumps(chat), "", json.dumps({"text": "   "})]).encode() + b"\n")
    add("records", "chatml.jsonl", b"\x0b" + "\n".join([json.dumps(chat), json.dumps({"messages": [
        {"role": "user", "content": "<|im_end|>"}, {"role": "assistant", "content": "\nHi"}]})]).encode() + b"\n")

    add("json", "config.json", json.dumps({"steps": 10, "lr": 3e-4, "init": True, "data": ["a", "b"],
                                           "schedule": "linear"}).encode())
    add("json", "strings.json", b'["a\\u00e9\\ud83d\\ude00\\n\\"", "\\u0000", -0.0e+10, 1E400, null, false, {}]')
    add("json", "nested.json", b'{"a": [[[{"b": [1, 2, {"c": {}}]}]]], "d": "e"}')
    add("config", "config.json", json.dumps({"model": "m.bin", "steps": 10, "lr": 3e-4, "init": True,
                                             "data": ["a", "b"], "schedule": "linear", "seed": 42}).encode())
    add("config", "list_as_string.json", b'{"data": "one", "dropout": 0.5}')
    add("encode", "story.txt", b"Once upon a time, there was a little girl named Lily.\n")
    add("encode", "mixed.txt", "caf\u00e9 \u2581\u2581 <0x41> \u4e2d\u6587 \U0001f600".encode() + b"\xff\xc3 \x00\n")
    add("encode", "empty.txt", b"")
    # token files (src/tokenfile.h): the header with each width, and a legacy headerless one
    def token_file(ids, width, vocab):
        head = (b"\xff\xffNFTOK\0" + struct.pack("<IIQI", 1, width, len(ids), vocab)).ljust(1024, b"\0")
        return head + struct.pack(f"<{len(ids)}{'I' if width == 4 else 'H'}", *ids)
    add("tokenfile", "w2.bin", token_file([1, 300, 7, 65535, 2], 2, 65536))
    add("tokenfile", "w4.bin", token_file([1, 151935, 70000, 3], 4, 151936))
    add("tokenfile", "legacy.bin", struct.pack("<5H", 1, 300, 7, 400, 2))

    for harness, files in seeds.items():
        d = os.path.join(CORPUS, harness)
        os.makedirs(d, exist_ok=True)
        for old in glob.glob(os.path.join(d, "seed_*")):
            os.remove(old)
        for name, data in files.items():
            assert len(data) <= 16384, (harness, name, len(data))
            open(os.path.join(d, "seed_" + name), "wb").write(data)
    print(" ".join(f"{h}:{len(f)}" for h, f in sorted(seeds.items())))
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
