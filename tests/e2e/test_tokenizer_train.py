"""`neuralforge tokenizer-train`: the tokenizer it learns from Tiny Shakespeare
at vocab 512 has exactly 512 pieces in llama2.c's layout; its merges are the
ones a plain reference BPE (below, over the same word counts) learns; it
round-trips Shakespeare, a mixed accents/CJK/emoji text and random bytes,
invalid UTF-8 and U+2581 included, byte for byte; it compresses Shakespeare to well under one token a
byte; llama2.c's run.c encoding (re-implemented here) gives the same ids;
runs are deterministic; and bad input gets one error line and the right exit
status."""
import collections
import os
import random
import struct
import subprocess

from harness import NF, NF_ASAN, PROBE, assert_error, read_tokens, run, run_all, shared, test, tmpdir

HARD_TEXT = (
    "Héllo wörld — café, naïve façade. Ærøskøbing!\n"
    "日本語のテキストと中文字符，한국어도。\n"
    "Emoji: 😀🎉👍🏽 and 🇫🇷 flags\n"
    "\tTabs\tand  double  spaces   and trailing   \n"
    "\n\nblank lines above\r\nCRLF line\n"
    "control: \x01\x02\x07\x1b[0m\x7f end\n"
    " leading space, unicode spaces:\u00a0\u2003|\u2581|\n"
    "numbers 1234567890 3.14159 and symbols ~!@#$%^&*()_+{}|:\"<>?`-=[]\\;',./\n"
    "<s> </s> <unk> <0x0A> are just text here\n"
)


def write(data, name="in.txt"):
    path = os.path.join(tmpdir(), name)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def train(inputs, vocab, out=None, extra=(), binary=NF):
    out = out or os.path.join(tmpdir(), "tok.bin")
    args = ["tokenizer-train"]
    for path in inputs:
        args += ["--input", path]
    r = run(args + ["--vocab-size", vocab, "--output", out] + list(extra), binary=binary, timeout=300)
    return r, out


def read_tokenizer(path):
    """(max_token_length, [(score, bytes)]) of a llama2.c tokenizer.bin."""
    data = open(path, "rb").read()
    (mtl,) = struct.unpack_from("<i", data, 0)
    pieces, o = [], 4
    while o < len(data):
        score, n = struct.unpack_from("<fi", data, o)
        pieces.append((score, data[o + 8:o + 8 + n]))
        o += 8 + n
    return mtl, pieces


def encode(tokenizer, data):
    src, out = write(data), os.path.join(tmpdir(), "ids.i32")
    subprocess.run([PROBE, "encode", tokenizer, src, out], check=True)
    raw = open(out, "rb").read()
    return list(struct.unpack(f"<{len(raw) // 4}i", raw))


def decode(tokenizer, ids):
    src, out = os.path.join(tmpdir(), "ids.i32"), os.path.join(tmpdir(), "out.txt")
    with open(src, "wb") as f:
        f.write(struct.pack(f"<{len(ids)}i", *ids))
    subprocess.run([PROBE, "decode", tokenizer, src, out], check=True)
    return open(out, "rb").read()


def lead_len(b):
    return 1 if b < 0x80 else 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4 if b & 0xF8 == 0xF0 else 0


_trained = {}


def shakespeare_512():
    """The tokenizer trained on tinyshakespeare.txt at vocab 512 (trained once per test run)."""
    if "512" not in _trained:
        r, out = train([shared("tinyshakespeare.txt")], 512)
        assert r.rc == 0, r.stderr
        _trained["512"] = (r, out)
    return _trained["512"]


# ---- a reference BPE: the rules of tokenizer_train.h, written plainly (ASCII text only) ----

def char_class(ch):
    if ch == " ":
        return "space"
    if ord(ch) < 0x20 or ch == "\x7f":
        return "control"
    if ch.isdigit():
        return "digit"
    if ch.isalpha():
        return "letter"
    return "punct"


def word_counts(text):
    counts = collections.Counter()
    word, cls, spaces = "", None, 1  # the dummy prefix

    def add_spaces(k):
        if k >= 256:
            counts[" " * 256] += k // 256
        if k % 256:
            counts[" " * (k % 256)] += 1

    for ch in text:
        k = char_class(ch)
        if k == "space":
            if word:
                counts[word] += 1
            word, spaces = "", spaces + 1
            continue
        if spaces:
            if spaces > 1:
                add_spaces(spaces - 1)
            word, cls, spaces = " " + ch, k, 0
            continue
        if word and (cls != k or len(word) + 1 > 256):
            counts[word] += 1
            word = ""
        word, cls = word + ch, k
    if word:
        counts[word] += 1
    if spaces:
        add_spaces(spaces)
    return counts


def reference_bpe(text, vocab_size):
    assert text.isascii()
    counts = word_counts(text)
    chars = collections.Counter()
    for w, c in counts.items():
        for ch in w:
            chars[ch] += c
    pieces = [ch for ch, _ in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0].encode()))]
    kept = [p for p in pieces if p == " "] + [p for p in pieces if p != " "][:vocab_size - 259 - 1]
    pieces = [p for p in pieces if p in kept]
    ids = {p: 259 + i for i, p in enumerate(pieces)}
    words = [([ids[ch] for ch in w], c) for w, c in counts.items()]
    forbidden = set()
    while 259 + len(pieces) < vocab_size:
        pairs = collections.Counter()
        for syms, c in words:
            for pair in zip(syms, syms[1:]):
                pairs[pair] += c
        best = min((p for p, n in pairs.items() if n >= 2 and p not in forbidden),
                   key=lambda p: (-pairs[p], p), default=None)
        if best is None:
            break
        a, b = best
        merged = pieces[a - 259] + pieces[b - 259]
        if len(merged) > 16:
            forbidden.add(best)
            continue
        if merged not in ids:
            ids[merged] = 259 + len(pieces)
            pieces.append(merged)
        c = ids[merged]
        for k, (syms, n) in enumerate(words):
            out, i = [], 0
            while i < len(syms):
                if i + 1 < len(syms) and syms[i] == a and syms[i + 1] == b:
                    out.append(c)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            words[k] = (out, n)
    # the final ids: pieces of spaces only go after the other merges
    n_chars = len(kept)
    merges = pieces[n_chars:]
    pieces = pieces[:n_chars] + [p for p in merges if p.strip(" ")] + [p for p in merges if not p.strip(" ")]
    return [p.encode() for p in pieces]


def runc_encode(pieces, scores, text):
    """llama2.c run.c's encode() (dummy prefix, characters, byte fallback +3,
    then the best-scoring merge, leftmost on ties), for valid UTF-8 text."""
    lookup = {}
    for i, p in enumerate(pieces):
        lookup.setdefault(p, i)
    tokens = [lookup[b" "]] if text else []
    for ch in text:
        b = ch.encode()
        tokens += [lookup[b]] if b in lookup else [x + 3 for x in b]
    while True:
        best, best_score, best_idx = -1, -1e10, -1
        for i in range(len(tokens) - 1):
            j = lookup.get(pieces[tokens[i]] + pieces[tokens[i + 1]], -1)
            if j != -1 and scores[j] > best_score:
                best, best_score, best_idx = j, scores[j], i
        if best_idx == -1:
            return tokens
        tokens[best_idx:best_idx + 2] = [best]


# ---- tests ----------------------------------------------------------------------------------

@test
def shakespeare_at_512_has_exactly_512_pieces_in_llama2c_layout():
    r, out = shakespeare_512()
    msg = r.one("tokenizer_train")
    assert list(msg) == ["type", "inputs", "bytes", "vocab_size", "target", "merges", "characters", "words",
                         "output", "ms"], msg
    assert msg["inputs"] == [shared("tinyshakespeare.txt")] and msg["output"] == out
    assert msg["bytes"] == os.path.getsize(shared("tinyshakespeare.txt"))
    assert msg["vocab_size"] == msg["target"] == 512
    assert msg["characters"] == 65 and msg["merges"] == 512 - 259 - 65, msg
    mtl, pieces = read_tokenizer(out)
    assert len(pieces) == 512
    assert mtl == max(len(p) for _, p in pieces)
    assert pieces[:3] == [(0.0, b"<unk>"), (0.0, b"\n<s>\n"), (0.0, b"\n</s>\n")]
    assert pieces[3:259] == [(0.0, b"<0x%02X>" % i) for i in range(256)]
    assert [s for s, _ in pieces[259:]] == [-float(i) for i in range(512 - 259)]
    # then the characters, most frequent first (the dummy prefix counts as one more space) ...
    text = open(shared("tinyshakespeare.txt"), "rb").read().decode()
    freq = collections.Counter(text) + collections.Counter(" ")
    chars = [ch.encode() for ch, _ in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0].encode()))]
    assert [p for _, p in pieces[259:259 + 65]] == chars
    # ... then the merges: a space only ever leads a piece, and no piece is there twice
    for _, p in pieces[259 + 65:]:
        assert len(p) >= 2 and b" " not in p.lstrip(b" "), p
    assert len({p for _, p in pieces}) == 512
    info = run(["info", "--tokenizer", out]).one("info")["value"]
    assert info["vocab_size"] == 512 and info["byte_pieces"] == 256 and info["max_token_length"] == mtl, info


@test
def merges_match_a_reference_bpe():
    text = open(shared("tinyshakespeare.txt"), "rb").read()[:300_000].decode()
    src = write(text)
    r, out = train([src], 420)
    assert r.rc == 0, r.stderr
    _, pieces = read_tokenizer(out)
    ours = [p for _, p in pieces[259:]]
    ref = reference_bpe(text, 420)
    assert len(ref) == 420 - 259
    first = next((i for i, (a, b) in enumerate(zip(ours, ref)) if a != b), None)
    assert ours == ref, f"piece {259 + first}: ours {ours[first:first + 5]} reference {ref[first:first + 5]}"


@test
def shakespeare_round_trips_and_compresses():
    _, tok = shakespeare_512()
    data = open(shared("tinyshakespeare.txt"), "rb").read()
    ids = encode(tok, data)
    assert decode(tok, ids) == data
    assert all(0 <= i < 512 for i in ids)
    ratio = len(ids) / len(data)
    # measured 0.544; SentencePiece BPE (512, byte fallback) trained on the same text gives 0.558,
    # the TinyStories tok512.bin 0.619; bytes alone would be 1.0
    baseline = len(encode(shared("tok512.bin"), data)) / len(data)
    print(f"  {len(ids)} tokens for {len(data)} bytes: {ratio:.3f} tokens/byte (tok512.bin: {baseline:.3f})")
    assert ratio < 0.56 and ratio < baseline - 0.05, ratio
    # the merges are used: every one of the 188 appears, most of them often
    used = collections.Counter(i for i in ids if i >= 259 + 65)
    assert len(used) >= 0.95 * 188, len(used)
    assert sum(used.values()) > 0.5 * len(ids)
    assert not any(3 <= i < 259 for i in ids)  # Shakespeare is ASCII: no byte fallback


@test
def random_and_invalid_bytes_round_trip_byte_for_byte():
    _, tok = shakespeare_512()
    rng = random.Random(1234)
    cases = [
        bytes(range(256)),
        bytes(range(255, -1, -1)) * 2,
        b"\x80\xbf\x80 lone continuation bytes \xbf",
        b"truncated \xe2\x82 and \xf0\x9f\x98 and \xc3",
        b"NUL\x00in the\x00\x00middle\x00",
        b"overlong \xc0\xaf \xe0\x80\xaf surrogate \xed\xa0\x80 too big \xf4\x90\x80\x80 \xf8\xff",
        b"\xe2\x96\x81 U+2581 is kept \xe2\x96\x81\xe2\x96\x81",
        b" leading space",
        b"   three leading and trailing   ",
        b"a",
    ]
    cases += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))) for _ in range(12)]
    cases += [bytes(rng.choice(b" \n\xc3\xa9\x80\xe4\xb8\xadthe") for _ in range(2000))]
    for data in cases:
        ids = encode(tok, data)
        assert all(0 <= i < 512 for i in ids)
        back = decode(tok, ids)
        assert back == data, (data[:60], back[:60])


@test
def mixed_scripts_round_trip_and_train():
    _, tok = shakespeare_512()
    data = HARD_TEXT.encode()
    assert decode(tok, encode(tok, data)) == data
    no_u2581 = HARD_TEXT.replace("\u2581", "").encode()
    assert decode(tok, encode(tok, no_u2581)) == no_u2581
    # a tokenizer trained on mixed scripts too: CJK and emoji become pieces, and merge
    text = (HARD_TEXT * 200).encode()
    verse = open(shared("tinyshakespeare.txt"), "rb").read()[:50_000]
    r, mixed = train([write(text), write(verse)], 700)
    assert r.rc == 0, r.stderr
    _, pieces = read_tokenizer(mixed)
    have = {p for _, p in pieces}
    for piece in ("日", "😀", "é", "\u2003"):
        assert piece.encode() in have, piece
    assert any(len(p.decode("utf-8", "replace")) >= 2 and all(ord(c) > 0x3000 for c in p.decode("utf-8", "replace"))
               for p in have if not p.startswith(b"<")), "no CJK merge"
    for data in (text, no_u2581, "ひらがな and Ærø mixed 👍🏽".encode()):
        ids = encode(mixed, data)
        assert decode(mixed, ids) == data
        assert all(0 <= i < 700 for i in ids)


@test
def llama2c_run_c_encoding_gives_the_same_ids():
    _, tok = shakespeare_512()
    _, pieces = read_tokenizer(tok)
    scores, strings = [s for s, _ in pieces], [p for _, p in pieces]
    assert strings[259] == b" "  # run.c looks the dummy prefix up as " "
    text = open(shared("tinyshakespeare.txt"), encoding="utf-8").read()[5000:7000]
    for sample in (text, HARD_TEXT.replace("\u2581", "")):
        assert runc_encode(strings, scores, sample) == encode(tok, sample.encode())


@test
def deterministic_and_independent_of_input_order():
    _, first = shakespeare_512()
    r, again = train([shared("tinyshakespeare.txt")], 512)
    assert r.rc == 0
    assert open(first, "rb").read() == open(again, "rb").read()
    a, b = shared("tinyshakespeare.txt"), shared("tinystories_valid_sample.txt")
    r1, ab = train([a, b], 1000)
    r2, ba = train([b, a], 1000)
    assert r1.rc == 0 and r2.rc == 0
    assert open(ab, "rb").read() == open(ba, "rb").read()
    msg = r1.one("tokenizer_train")
    assert msg["inputs"] == [a, b] and msg["bytes"] == os.path.getsize(a) + os.path.getsize(b)


@test
def progress_messages_and_speed():
    r, _ = shakespeare_512()
    progress = r.of_type("tokenizer_train_progress")
    final = r.one("tokenizer_train")
    assert r.messages[-1] is final
    assert 2 <= len(progress) <= 101
    assert all(list(m) == ["type", "merges", "vocab_size", "target"] for m in progress)
    assert progress[0]["merges"] == 0 and progress[0]["vocab_size"] == 259 + 65
    assert all(a["merges"] < b["merges"] for a, b in zip(progress, progress[1:]))
    assert progress[-1]["merges"] == final["merges"] and progress[-1]["vocab_size"] == 512
    assert all(m["target"] == 512 for m in progress)
    print(f"  trained in {final['ms']} ms")
    assert final["ms"] < 5000, final  # measured ~50 ms: a loop over the raw text per merge would take minutes
    assert r.stderr.count(b"\r") == 0  # progress on stderr only when it is a terminal


@test
def small_text_stops_early_and_says_so():
    src = write("the cat sat on the mat. " * 20)
    r, out = train([src], 5000)
    assert r.rc == 0, r.stderr
    msg = r.one("tokenizer_train")
    assert msg["target"] == 5000 and msg["vocab_size"] < 300, msg
    assert msg["vocab_size"] == 259 + msg["characters"] + msg["merges"]
    assert len(read_tokenizer(out)[1]) == msg["vocab_size"]
    assert b"stopped at" in r.stderr
    ids = encode(out, b"the cat sat on the mat.")
    assert len(ids) == 7  # " the", " cat", " sat", " on", " the", " mat", "."


@test
def trained_tokenizer_works_with_tokenize():
    _, tok = shakespeare_512()
    out = os.path.join(tmpdir(), "x.bin")
    r = run(["tokenize", "--input", shared("tinyshakespeare.txt"), "--output", out, "--tokenizer", tok,
             "--split", "blank"])
    assert r.rc == 0
    n = r.one("tokenize")["tokens"]
    assert n == len(read_tokens(out)) and n < 690766  # tok512.bin: 690766


@test
def bad_input_is_one_error_line():
    good = write("some text to train on\n")
    empty = write(b"", "empty.txt")
    d = tmpdir()
    out = os.path.join(d, "tok.bin")
    huge = os.path.join(d, "huge.txt")
    with open(huge, "wb") as f:
        f.truncate((1 << 30) + 1)  # sparse: nothing is read before the size check
    cases = [
        ([], "usage", "--input"),
        (["--vocab-size", 512, "--output", out], "usage", "--input"),
        (["--input", good, "--output", out], "usage", "--vocab-size"),
        (["--input", good, "--vocab-size", 512], "usage", "--output"),
        (["--input", good, "--vocab-size", 259, "--output", out], "usage", "--vocab-size"),
        (["--input", good, "--vocab-size", 65537, "--output", out], "usage", "--vocab-size"),
        (["--input", good, "--vocab-size", "5x", "--output", out], "usage", "--vocab-size"),
        (["--input", good, "--vocab-size", 512, "--output", out, "--character-coverage", 0.1], "usage",
         "--character-coverage"),
        (["--input", good, "--vocab-size", 512, "--output", out, "--vocab-size", 600], "usage", "--vocab-size"),
        (["--input", good, "--vocab-size", 512, "--output", out, "--bogus", 1], "usage", "--bogus"),
        (["--input", empty, "--vocab-size", 512, "--output", out], "bad_data", "empty"),
        (["--input", empty, "--input", empty, "--vocab-size", 512, "--output", out], "bad_data", "empty"),
        (["--input", huge, "--vocab-size", 512, "--output", out], "bad_data", "1 GiB"),
        (["--input", os.path.join(d, "missing.txt"), "--vocab-size", 512, "--output", out], "io", "missing.txt"),
        (["--input", good, "--input", d, "--vocab-size", 512, "--output", out], "io", "not a regular file"),
        (["--input", good, "--vocab-size", 512, "--output", os.path.join(d, "no", "dir", "t.bin")], "io", None),
    ]
    for binary in (NF, NF_ASAN):
        for args, code, mention in cases:
            r = run(["tokenizer-train"] + args, binary=binary)
            assert_error(r, code, mention)
            assert r.rc == (2 if code == "usage" else 1), (args, r.rc)
            assert len(r.messages) == 1, (args, r.messages)
            report = r.stderr.decode("utf-8", "replace")
            assert "Sanitizer" not in report and "runtime error" not in report, report
    assert sorted(os.listdir(d)) == ["huge.txt"]  # no output, no temporary file left
    # a failed run leaves an existing output file alone
    with open(out, "wb") as f:
        f.write(b"keep")
    assert_error(run(["tokenizer-train", "--input", empty, "--vocab-size", 300, "--output", out]), "bad_data")
    assert open(out, "rb").read() == b"keep"
    assert run(["tokenizer-train", "--help"]).rc == 0


if __name__ == "__main__":
    run_all()
