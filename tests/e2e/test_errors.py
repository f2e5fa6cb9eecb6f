"""Bad input gets one clear `error` message and a non-zero exit, never a crash:
truncated, forged and empty model and tokenizer files, missing files and
out-of-range flags. Every case also runs under the ASan/UBSan build, whose
stderr must hold no sanitizer report."""
import os
import struct

from harness import NF, NF_ASAN, assert_error, run, run_all, shared, test, tmpdir

BINARIES = [NF, NF_ASAN]


def check(args, code=None, mention=None, stdin=b""):
    for binary in BINARIES:
        r = run(args, binary=binary, stdin=stdin)
        assert_error(r, code, mention)
        report = r.stderr.decode("utf-8", "replace")
        assert "Sanitizer" not in report and "runtime error" not in report, report


def write(name, data):
    path = os.path.join(tmpdir(), name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def gen(model, tok):
    return ["generate", "--model", model, "--tokenizer", tok, "--max-tokens", "4"]


def broken_models():
    real = open(shared("stories260K.bin"), "rb").read()
    v1 = open(shared("stories260K_v1.bin"), "rb").read()
    q80 = open(shared("stories260K_q80.bin"), "rb").read()
    hdr = lambda *f: struct.pack("7i", *f)
    return {
        "empty": b"",
        "short": b"\x40\x00\x00",
        "truncated_v0": real[:-4],
        "truncated_half": real[: len(real) // 2],
        "trailing_bytes": real + b"\0\0\0\0",
        "zero_dim": hdr(0, 172, 5, 8, 4, 512, 512) + real[28:],
        "negative_layers": hdr(64, 172, -5, 8, 4, 512, 512) + real[28:],
        "huge_dims": hdr(65536, 262144, 1024, 64, 64, 4000000, 1 << 20),
        "forged_huge_seq_len": hdr(64, 172, 5, 8, 4, 512, 1 << 20) + real[28:],
        "kv_heads_not_dividing": hdr(64, 172, 5, 8, 3, 512, 512) + real[28:],
        "heads_not_dividing_dim": hdr(64, 172, 5, 7, 7, 512, 512) + real[28:],
        "v1_truncated_header": v1[:100],
        "v1_unknown_version": v1[:4] + struct.pack("i", 9) + v1[8:],
        "v1_bad_flag": v1[:36] + b"\x07" + v1[37:],
        "v1_truncated": v1[:-1000],
        "v2_zero_group": q80[:37] + struct.pack("i", 0) + q80[41:],
        "v2_group_not_dividing_dim": q80[:37] + struct.pack("i", 48) + q80[41:],
        "v2_truncated": q80[:-1],
        "random_garbage": bytes(range(256)) * 64,
    }


@test
def broken_model_files_are_refused():
    tok = shared("tok512.bin")
    for name, data in broken_models().items():
        path = write(name + ".bin", data)
        check(gen(path, tok), code="bad_model")
        check(["info", "--model", path], code="bad_model")


def broken_tokenizers():
    real = open(shared("tok512.bin"), "rb").read()
    return {
        "empty": b"",
        "two_bytes": b"\x07\x00",
        "truncated_in_piece": real[:-3],
        "truncated_in_record_header": real[:4 + 8 + 5 + 4],
        "zero_max_len": struct.pack("i", 0) + real[4:],
        "huge_max_len": struct.pack("i", 1 << 30) + real[4:],
        "negative_piece_len": real[:4] + struct.pack("fi", 0.0, -5) + real[12:],
        "piece_longer_than_max": real[:4] + struct.pack("fi", 0.0, 100) + real[12:],
        "nan_score": real[:4] + struct.pack("fi", float("nan"), 5) + real[12:],
        "two_pieces": struct.pack("i", 7) + struct.pack("fi", 0.0, 1) + b"a" + struct.pack("fi", 0.0, 1) + b"b",
    }


@test
def broken_tokenizer_files_are_refused():
    model = shared("stories260K.bin")
    for name, data in broken_tokenizers().items():
        path = write(name + ".bin", data)
        check(gen(model, path), code="bad_tokenizer")
        check(["info", "--tokenizer", path], code="bad_tokenizer")
        check(["tokenize", "--input", shared("tinyshakespeare.txt"), "--output",
               os.path.join(tmpdir(), "o.bin"), "--tokenizer", path], code="bad_tokenizer")


@test
def tokenizer_that_does_not_fit_the_model_is_refused():
    check(gen(shared("stories260K.bin"), shared("llama2_tokenizer.bin")), code="bad_tokenizer", mention="512")


@test
def missing_files_are_refused():
    missing = "/nonexistent/dir/file.bin"
    check(gen(missing, shared("tok512.bin")), code="io", mention=missing)
    check(gen(shared("stories260K.bin"), missing), code="io", mention=missing)
    check(["tokenize", "--input", missing, "--output", os.path.join(tmpdir(), "o.bin"),
           "--tokenizer", shared("tok512.bin")], code="io")
    check(["tokenize", "--input", shared("tinyshakespeare.txt"), "--output", "/nonexistent/dir/o.bin",
           "--tokenizer", shared("tok512.bin")], code="io")
    check(["info", "--model", tmpdir()], code="io", mention="not a Hugging Face model directory")


@test
def out_of_range_and_malformed_flags_name_the_flag():
    base = gen(shared("stories260K.bin"), shared("tok512.bin"))
    cases = [
        (["--temperature", "-1"], "--temperature"),
        (["--temperature", "abc"], "--temperature"),
        (["--temperature", "nan"], "--temperature"),
        (["--top-p", "0"], "--top-p"),
        (["--top-p", "1.5"], "--top-p"),
        (["--top-k", "-3"], "--top-k"),
        (["--max-tokens", "0"], "--max-tokens"),
        (["--max-tokens", "99999999999999999999999"], "--max-tokens"),
        (["--max-tokens", "12x"], "--max-tokens"),
        (["--seed", "-1"], "--seed"),
        (["--bogus", "1"], "--bogus"),
        (["--text=yes"], "--text"),
        (["--prompt"], "--prompt"),
        (["stray"], "stray"),
    ]
    for extra, flag in cases:
        check(base + extra, code="usage", mention=flag)
    check(["tokenize", "--input", "a", "--output", "b", "--tokenizer", "c", "--split", "paragraph"],
          code="usage", mention="--split")
    check(["frobnicate"], code="usage", mention="frobnicate")
    check([], code="usage")
    check(["generate", "--model", shared("stories260K.bin")], code="usage", mention="--tokenizer")
    check(["info"], code="usage")


@test
def usage_errors_exit_2_other_errors_exit_1():
    assert run(["generate", "--bogus"]).rc == 2
    assert run(["info", "--model", "/nonexistent"]).rc == 1


@test
def prompt_longer_than_the_context_is_refused():
    prompt = ("once upon a time " * 400).encode()
    check(["generate", "--model", shared("stories260K.bin"), "--tokenizer", shared("tok512.bin")],
          code="usage", mention="context", stdin=prompt)


@test
def failed_tokenize_leaves_no_output_file():
    d = tmpdir()
    out = os.path.join(d, "o.bin")
    bad_tok = write("bad.bin", b"")
    run(["tokenize", "--input", shared("tinyshakespeare.txt"), "--output", out, "--tokenizer", bad_tok])
    assert os.listdir(d) == [], os.listdir(d)


@test
def hostile_paths_cannot_break_the_ndjson_line():
    path = 'x"},{"type":"done"}\n\u2028\x01.bin'
    r = run(["info", "--model", path])
    assert r.rc == 1
    err = r.one("error")
    assert err["code"] == "io" and path in err["message"]
    assert r.stdout.count(b"\n") == 1 and r.stdout.endswith(b"\n")
    assert "\u2028".encode() not in r.stdout  # escaped, so line-splitting readers stay safe


@test
def help_goes_to_stderr_and_exits_0():
    for cmd in ("generate", "info", "tokenize"):
        r = run([cmd, "--help"], ndjson=False)
        assert r.rc == 0 and r.stdout == b"" and b"usage: neuralforge " + cmd.encode() in r.stderr


if __name__ == "__main__":
    run_all()
