"""The tokenizer against SentencePiece (Debian python3-sentencepiece with the
Llama 2 tokenizer.model): the same ids on real corpora and on a text with
accents, CJK, emoji, tabs, newlines and control bytes; decode(encode(x)) == x;
and `tokenize` yields SentencePiece's ids for every TinyStories story."""
import os
import subprocess

import numpy as np
import sentencepiece as spm

from harness import PROBE, read_tokens, run, run_all, shared, test, tmpdir

HARD_TEXT = (
    "Héllo wörld — café, naïve façade. Ærøskøbing!\n"
    "日本語のテキストと中文字符，한국어도。\n"
    "Emoji: 😀🎉👍🏽 and 🇫🇷 flags\n"
    "\tTabs\tand  double  spaces   and trailing   \n"
    "\n\nblank lines above\r\nCRLF line\n"
    "control: \x01\x02\x07\x1b[0m\x7f end\n"
    " leading space, unicode spaces:\u00a0\u2003|\n"
    "numbers 1234567890 3.14159 and symbols ~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./\n"
    "<s> </s> <unk> <0x0A> are just text here\n"
)


def sp_model():
    return spm.SentencePieceProcessor(model_file=shared("llama2_tokenizer.model"))


def nf_encode(text, tokenizer):
    d = tmpdir()
    src, out = os.path.join(d, "in.txt"), os.path.join(d, "out.i32")
    with open(src, "wb") as f:
        f.write(text.encode("utf-8"))
    subprocess.run([PROBE, "encode", tokenizer, src, out], check=True)
    return np.fromfile(out, dtype=np.int32).tolist()


def nf_decode(ids, tokenizer):
    d = tmpdir()
    src, out = os.path.join(d, "ids.i32"), os.path.join(d, "out.txt")
    np.asarray(ids, dtype=np.int32).tofile(src)
    subprocess.run([PROBE, "decode", tokenizer, src, out], check=True)
    return open(out, "rb").read().decode("utf-8")


def assert_same_ids(text):
    sp = sp_model()
    tok = shared("llama2_tokenizer.bin")
    expected = sp.encode(text)
    got = nf_encode(text, tok)
    if got != expected:
        first = next(i for i in range(min(len(got), len(expected))) if got[i] != expected[i]) \
            if any(a != b for a, b in zip(got, expected)) else min(len(got), len(expected))
        raise AssertionError(f"ids differ at {first}: ours {got[first:first + 8]} vs sentencepiece "
                             f"{expected[first:first + 8]} (lengths {len(got)} / {len(expected)})")
    decoded = nf_decode(got, tok)
    assert decoded == sp.decode(expected)
    assert decoded == text
    return len(got)


@test
def hard_text_matches_sentencepiece():
    assert_same_ids(HARD_TEXT)


@test
def each_line_of_hard_text_matches_sentencepiece():
    for line in HARD_TEXT.splitlines(keepends=True):
        assert_same_ids(line)


@test
def tinyshakespeare_matches_sentencepiece():
    text = open(shared("tinyshakespeare.txt"), encoding="utf-8").read()
    n = assert_same_ids(text)
    print(f"  {n} ids")


@test
def tinystories_train_matches_sentencepiece():
    text = open(shared("tinystories_train_2MiB.txt"), "rb").read().decode("utf-8", "replace")
    assert_same_ids(text)


@test
def tinystories_valid_with_mojibake_matches_sentencepiece():
    text = open(shared("tinystories_valid_sample.txt"), encoding="utf-8").read()
    assert_same_ids(text)


@test
def every_single_byte_character_round_trips():
    text = "".join(chr(c) for c in range(1, 128)) + "\u00ff\u0100\uffff\U0001f600"
    assert_same_ids(text)


def stories(path):
    """Split as `tokenize --split eot` does: at <|endoftext|> lines, strip ASCII whitespace, skip empty."""
    raw = open(path, "rb").read()
    docs, current = [], []
    for line in raw.split(b"\n"):
        if line.strip(b" \t\r\n\v\f") == b"<|endoftext|>":
            docs.append(b"\n".join(current))
            current = []
        else:
            current.append(line)
    docs.append(b"\n".join(current))
    return [d.strip(b" \t\r\n\v\f") for d in docs if d.strip(b" \t\r\n\v\f")]


@test
def tokenize_command_yields_sentencepiece_ids_for_every_story():
    src = shared("tinystories_train_2MiB.txt")
    out = os.path.join(tmpdir(), "train.bin")
    r = run(["tokenize", "--input", src, "--output", out, "--tokenizer", shared("llama2_tokenizer.bin")])
    assert r.rc == 0, r.stderr
    msg = r.one("tokenize")
    ids = read_tokens(out)
    assert msg["tokens"] == len(ids)
    assert msg["bytes"] == os.path.getsize(src)
    assert msg["input"] == src and msg["output"] == out
    sp = sp_model()
    docs = stories(src)
    expected = []
    for d in docs:
        expected += [sp.bos_id()] + sp.encode(d.decode("utf-8", "replace"))
    assert msg["documents"] == len(docs) > 2000
    assert ids == expected


@test
def tokenize_blank_and_none_split_modes():
    d = tmpdir()
    src = os.path.join(d, "t.txt")
    with open(src, "w") as f:
        f.write("First doc line one.\nline two.\n\n\n  Second doc.\n \t\nThird\n")
    tok = shared("llama2_tokenizer.bin")
    sp = sp_model()
    for split, docs in (("blank", ["First doc line one.\nline two.", "Second doc.", "Third"]),
                        ("none", [open(src).read().strip()]),
                        ("eot", [open(src).read().strip()])):
        out = os.path.join(d, split + ".bin")
        r = run(["tokenize", "--input", src, "--output", out, "--tokenizer", tok, "--split", split])
        assert r.rc == 0
        assert r.one("tokenize")["documents"] == len(docs)
        expected = []
        for doc in docs:
            expected += [1] + sp.encode(doc)
        assert read_tokens(out) == expected, split


@test
def tokenize_two_megabytes_is_fast_enough_to_be_linear():
    # Not a timing assertion: a quadratic encoder would take minutes on this
    # single 2 MB document, so the generous timeout catches it.
    d = tmpdir()
    src = os.path.join(d, "one.txt")
    with open(src, "wb") as f:
        f.write(open(shared("tinystories_train_2MiB.txt"), "rb").read().replace(b"<|endoftext|>", b""))
    r = run(["tokenize", "--input", src, "--output", os.path.join(d, "o.bin"), "--tokenizer",
             shared("llama2_tokenizer.bin"), "--split", "none"], timeout=60)
    assert r.rc == 0
    assert r.one("tokenize")["documents"] == 1


@test
def builtin_byte_vocabulary_needs_no_file():
    info = run(["info", "--tokenizer", "builtin:bytes"]).one("info")["value"]
    assert info["vocab_size"] == 259 and info["byte_pieces"] == 256
    text = "Hi é\tthere\n"
    ids = nf_encode(text, "builtin:bytes")
    assert ids == [b + 3 for b in (" " + text).encode("utf-8")]  # the dummy-prefix space, then every byte
    assert nf_decode(ids, "builtin:bytes") == text


if __name__ == "__main__":
    run_all()
