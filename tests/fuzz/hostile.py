"""Hand-made hostile files, run through the CLI as a user would meet them
(`info`, `eval`, `generate`, `train`, `import`, `ingest`): sizes of 2^63,
dimension products that overflow 64 bits, offsets and lengths past the end,
nesting 10^6 deep, truncations, forged counts. Every one must end in one
clean NDJSON `error` line and a non-zero exit: no crash, no sanitizer
report, no hang, no huge allocation (the normal build runs under a 4 GiB
address-space limit, and `out_of_memory` is not an accepted answer).

The inputs are built from the seeds of tests/fuzz/corpus (a 16-piece
vocabulary, a dim-8 model): no shared data needed.

  /usr/bin/python3 tests/fuzz/hostile.py           prints the table of docs/reliability.md
  tests/e2e/test_hostile_files.py                  asserts every case (both builds)
"""
import atexit
import ctypes
import json
import os
import re
import resource
import shutil
import struct
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NF = os.path.join(ROOT, "build", "neuralforge")
NF_ASAN = os.path.join(ROOT, "build", "asan", "neuralforge")
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
U63 = 1 << 63
U64_MAX = (1 << 64) - 1


def seed(harness, name):
    with open(os.path.join(CORPUS, harness, "seed_" + name), "rb") as f:
        return f.read()


def fnv_words(data):
    """checkpoint.c's checksum before version 3: FNV-1a over little-endian 64-bit words, the tail zero-padded."""
    h = 0xcbf29ce484222325
    data = data + b"\0" * (-len(data) % 8)
    for i in range(0, len(data), 8):
        h = ((h ^ struct.unpack_from("<Q", data, i)[0]) * 0x100000001b3) & U64_MAX
    return h


def xxh3_64(data):
    """checkpoint.c's checksum from version 3 on: XXH3-64, seed 0 (the system's libxxhash)."""
    lib = ctypes.CDLL("libxxhash.so.0")
    lib.XXH3_64bits.restype = ctypes.c_uint64
    lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    return lib.XXH3_64bits(data, len(data))


def resum(ckpt):
    """The checkpoint with the checksum of the version it says it is (FNV before version 3)."""
    body = ckpt[:-8]
    version = struct.unpack_from("<I", body, 8)[0]
    return body + struct.pack("<Q", (fnv_words if version < 3 else xxh3_64)(body))


def patch(data, offset, fmt, *values):
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, *values)
    return bytes(b)


def gguf(n_tensors, n_kv, body=b"", version=3):
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv) + body


def gstr(s):
    s = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(s)) + s


def st(header, data=b""):
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def deep(n):
    return b"[" * n + b"]" * n


class Env:
    """Scratch files the commands around a hostile file need."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="nf_hostile_")
        atexit.register(shutil.rmtree, self.dir, True)  # removed when the process exits
        self.tok = self.write("tok16.bin", seed("tokenizer", "tok16.bin"))
        self.model = self.write("v1.bin", seed("model", "v1.bin"))
        self.tokens = self.write("tokens.bin", struct.pack("<256H", *[i % 16 for i in range(256)]))
        hf = os.path.join(self.dir, "hf")
        r = subprocess.run([NF, "export", "--model", self.model, "--format", "safetensors", "--output", hf],
                           capture_output=True)
        assert r.returncode == 0, r.stdout
        with open(os.path.join(hf, "config.json"), "rb") as f:
            self.hf_config = f.read()
        self.n = 0

    def write(self, name, data):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def fresh(self, name):
        self.n += 1
        d = os.path.join(self.dir, f"case{self.n}")
        os.makedirs(d)
        return os.path.join(d, name)


# Each case: (name, what it is, kind, bytes). The kind says which commands read it.
def cases():
    v0, v1, v2 = seed("model", "v0.bin"), seed("model", "v1.bin"), seed("model", "v2.bin")
    ck, lora = seed("checkpoint", "full.ckpt"), seed("checkpoint", "lora.ckpt")
    tok = seed("tokenizer", "tok16.bin")
    manifest = json.loads(seed("manifest", "manifest.json"))
    big = 2 ** 31 - 1
    c = []
    # ---- model files
    c += [("model_v0_dims_int32_max", "v0 header: every dimension 2^31-1", "model",
           struct.pack("<7i", *[big] * 7) + v0[28:]),
          ("model_v0_product_overflow", "v0: the largest dims the bounds accept (2.8e14 bytes of weights)", "model",
           struct.pack("<7i", 65536, 262144, 1024, 2048, 2048, 1 << 22, 1 << 20)),
          ("model_v0_vocab_int32_min", "v0: vocab_size -2^31 (negation overflows)", "model",
           struct.pack("<7i", 8, 16, 1, 2, 1, -(2 ** 31), 8) + v0[28:]),
          ("model_v0_truncated", "v0 cut 1 byte short", "model", v0[:-1]),
          ("model_v0_header_only", "v0: 28-byte header, no weights", "model", v0[:28]),
          ("model_v1_negative_vocab", "v1: vocab_size -16", "model", patch(v1, 28, "<i", -16)),
          ("model_v1_shared_flag_2", "v1: shared-classifier byte 2", "model", patch(v1, 36, "<B", 2)),
          ("model_v1_truncated_header", "v1: 100 of 256 header bytes", "model", v1[:100]),
          ("model_v2_group_int32_max", "v2: group size 2^31-1", "model", patch(v2, 37, "<i", big)),
          ("model_v2_group_negative", "v2: group size -4", "model", patch(v2, 37, "<i", -4)),
          ("model_v2_trailing", "v2 with 4 extra bytes", "model", v2 + b"\0" * 4),
          ("model_ak42_version_2^31", "ak42 magic, version 2^31-1", "model", patch(v1, 4, "<i", big))]
    # ---- GGUF
    c += [("gguf_n_tensors_2^63", "GGUF: 2^63 tensors", "gguf", gguf(U63, 0)),
          ("gguf_n_kv_u64_max", "GGUF: 2^64-1 keys", "gguf", gguf(0, U64_MAX)),
          ("gguf_key_len_2^63", "GGUF: a key of length 2^63", "gguf",
           gguf(0, 1, struct.pack("<Q", U63) + b"k" * 16)),
          ("gguf_array_2^63", "GGUF: an array of 2^63 uint64", "gguf",
           gguf(0, 1, gstr("a") + struct.pack("<IIQ", 9, 10, U63))),
          ("gguf_string_array_len_2^63", "GGUF: a string array whose element is 2^63 long", "gguf",
           gguf(0, 1, gstr("a") + struct.pack("<IIQQ", 9, 8, 1, U63))),
          ("gguf_nested_arrays", "GGUF: arrays of arrays, 100000 deep", "gguf",
           gguf(0, 1, gstr("a") + struct.pack("<IIQ", 9, 9, 1) * 100000)),
          ("gguf_dims_overflow", "GGUF: a tensor of 2^32 x 2^32 x 2^32 x 2^32", "gguf",
           gguf(1, 0, gstr("t") + struct.pack("<I4QIQ", 4, *[1 << 32] * 4, 0, 0))),
          ("gguf_offset_2^63", "GGUF: a tensor at offset 2^63", "gguf",
           gguf(1, 0, gstr("t") + struct.pack("<IQIQ", 1, 8, 0, U63))),
          ("gguf_offset_past_end", "GGUF: a 32-float tensor at offset 32 of a 64-byte data section", "gguf",
           gguf(1, 0, gstr("t") + struct.pack("<IQIQ", 1, 32, 0, 32)).ljust(96, b"\0")),
          ("gguf_alignment_3", "GGUF: general.alignment 3", "gguf",
           gguf(0, 1, gstr("general.alignment") + struct.pack("<II", 4, 3))),
          ("gguf_five_dims", "GGUF: a tensor with 5 dimensions", "gguf",
           gguf(1, 0, gstr("t") + struct.pack("<I5QIQ", 5, 1, 1, 1, 1, 1, 0, 0))),
          ("gguf_version_1", "GGUF version 1", "gguf", gguf(0, 0, version=1)),
          ("gguf_empty", "an empty file given as GGUF", "gguf", b""),
          ("gguf_truncated_seed", "the f32 GGUF seed cut in half", "gguf",
           seed("gguf", "f32.gguf")[:len(seed("gguf", "f32.gguf")) // 2])]
    # ---- safetensors (in a Hugging Face directory with a valid config.json)
    t = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
    c += [("st_header_len_2^63", "safetensors: header length 2^63", "safetensors",
           struct.pack("<Q", U63) + b"{}"),
          ("st_header_past_end", "safetensors: header length 1000 in a 20-byte file", "safetensors",
           struct.pack("<Q", 1000) + b"{}" + b" " * 10),
          ("st_offsets_past_end", "safetensors: data_offsets [0, 2^63]", "safetensors",
           st({"t": dict(t, data_offsets=[0, U63])}, b"\0" * 16)),
          ("st_offsets_reversed", "safetensors: data_offsets [16, 0]", "safetensors",
           st({"t": dict(t, data_offsets=[16, 0])}, b"\0" * 16)),
          ("st_shape_overflow", "safetensors: shape [2^32, 2^32, 2^32] (product overflows)", "safetensors",
           st({"t": dict(t, shape=[1 << 32] * 3)}, b"\0" * 16)),
          ("st_shape_negative", "safetensors: shape [-1, 4]", "safetensors",
           st({"t": dict(t, shape=[-1, 4])}, b"\0" * 16)),
          ("st_shape_bytes_mismatch", "safetensors: shape [4, 4] over 16 bytes", "safetensors",
           st({"t": dict(t, shape=[4, 4])}, b"\0" * 16)),
          ("st_header_depth_10^6", "safetensors: a header nested 10^6 deep", "safetensors", st(deep(10 ** 6))),
          ("st_header_not_object", "safetensors: header `[]`", "safetensors", st(b"[]")),
          ("st_truncated_seed", "the safetensors seed cut 1 byte short", "safetensors",
           seed("safetensors", "model.safetensors")[:-1])]
    # ---- checkpoints (forged fields carry a correct checksum, so they reach the field checks)
    c += [("ckpt_n_params_2^63", "checkpoint: n_params 2^63", "checkpoint", resum(patch(ck, 104, "<Q", U63))),
          ("ckpt_options_len_u32_max", "checkpoint: options length 2^32-1", "checkpoint",
           resum(patch(ck, 112, "<I", 2 ** 32 - 1))),
          ("ckpt_dims_int32_max", "checkpoint: every dimension 2^31-1", "checkpoint",
           resum(patch(ck, 16, "<7i", *[big] * 7))),
          ("ckpt_bad_checksum", "checkpoint: one weight byte flipped", "checkpoint",
           patch(ck, 600, "<B", ck[600] ^ 0xFF)),
          ("ckpt_truncated", "checkpoint cut 1 KiB short", "checkpoint", ck[:-1024]),
          ("ckpt_version_9", "checkpoint: version 9", "checkpoint", resum(patch(ck, 8, "<I", 9))),
          ("ckpt_lora_rank_int32_max", "LoRA checkpoint: rank 2^31-1", "checkpoint",
           resum(patch(lora, 184 + struct.unpack_from("<I", lora, 112)[0], "<i", big))),
          ("ckpt_lora_path_len_u32_max", "LoRA checkpoint: base path length 2^32-1", "checkpoint",
           resum(patch(lora, 184 + struct.unpack_from("<I", lora, 112)[0] + 20, "<I", 2 ** 32 - 1))),
          # the version-2 model block (offset 120): head_dim, architecture, flags, RoPE base
          ("ckpt_head_dim_int32_max", "checkpoint: head_dim 2^31-1", "checkpoint", resum(patch(ck, 120, "<i", big))),
          ("ckpt_arch_7", "checkpoint: architecture 7", "checkpoint", resum(patch(ck, 124, "<I", 7))),
          ("ckpt_flags_all_set", "checkpoint: every flag bit set", "checkpoint", resum(patch(ck, 128, "<I", 2 ** 32 - 1))),
          ("ckpt_rope_theta_nan", "checkpoint: RoPE base NaN", "checkpoint",
           resum(patch(ck, 132, "<f", float("nan")))),
          ("ckpt_rope_scaling_9", "checkpoint: RoPE scaling type 9", "checkpoint", resum(patch(ck, 140, "<I", 9)))]
    # ---- tokenizer.bin
    c += [("tok_max_len_int32_max", "tokenizer: max_token_length 2^31-1", "tokenizer",
           patch(tok, 0, "<i", big)),
          ("tok_piece_len_negative", "tokenizer: a piece of length -1", "tokenizer",
           tok[:4] + struct.pack("<fi", 0.0, -1) + tok[12:]),
          ("tok_piece_len_int32_max", "tokenizer: a piece of length 2^31-1", "tokenizer",
           tok[:4] + struct.pack("<fi", 0.0, big) + tok[12:]),
          ("tok_truncated", "tokenizer cut inside its last piece", "tokenizer", tok[:-2]),
          ("tok_inf_score", "tokenizer: a score of +inf", "tokenizer",
           tok[:4] + struct.pack("<f", float("inf")) + tok[8:])]
    # ---- --config
    c += [("config_depth_10^6", "--config nested 10^6 deep", "config", deep(10 ** 6)),
          ("config_steps_2^63", "--config steps 2^63", "config", b'{"steps": 9223372036854775808}'),
          ("config_number_1e999999", "--config lr 1e999999", "config", b'{"lr": 1e999999}'),
          ("config_lone_surrogate", "--config a key with a lone \\ud800", "config", b'{"\\ud800": 1}'),
          ("config_truncated", "--config cut inside a string", "config", b'{"steps": 1, "ckpt": "ab'),
          ("config_nul_in_key", "--config a key with a NUL byte", "config", b'{"bogus\\u0000steps": 1}')]
    # ---- ingest sources (one file in an otherwise empty --source)
    c += [("jsonl_depth_10^6", "a .jsonl line nested 10^6 deep", "ingest:a.jsonl", b'{"text": ' + deep(10 ** 6) + b"}\n"),
          ("jsonl_not_object", "a .jsonl line that is an array", "ingest:a.jsonl", b"[1, 2]\n"),
          ("jsonl_text_number", "a .jsonl record whose text is a number", "ingest:a.jsonl", b'{"text": 5}\n'),
          ("jsonl_chat_wrong_order", "a chat starting with the assistant", "ingest:a.jsonl",
           b'{"messages": [{"role": "assistant", "content": "x"}]}\n'),
          ("jsonl_truncated", "a .jsonl record cut mid-string", "ingest:a.jsonl", b'{"text": "abc'),
          ("csv_unterminated_quote", "a .csv with an unterminated quote", "ingest:a.csv", b'text\n"abc\n'),
          ("csv_no_rows_ragged", "a .csv row with more fields than the header", "ingest:a.csv", b"text\na,b,c\n")]
    # ---- manifest.json of a --data directory
    m = lambda **kw: json.dumps(dict(manifest, **kw)).encode()
    shard = manifest["shards"][0]
    c += [("manifest_tokens_2^63", "manifest: a shard of 2^63 tokens", "manifest",
           m(shards=[dict(shard, tokens=U63)], tokens=U63)),
          ("manifest_shard_escapes", "manifest: shard file ../../etc/passwd", "manifest",
           m(shards=[dict(shard, file="../../etc/passwd")])),
          ("manifest_totals_wrong", "manifest: totals that do not add up", "manifest", m(tokens=1)),
          ("manifest_depth_10^6", "manifest nested 10^6 deep", "manifest", deep(10 ** 6)),
          ("manifest_version_3", "manifest: version 3", "manifest", m(version=3)),
          ("manifest_token_width_3", "manifest: version 2 with token_width 3", "manifest",
           m(version=2, token_width=3)),
          ("manifest_missing_shard", "manifest naming a shard that is not there", "manifest", m())]
    # ---- token data
    c += [("tokens_odd_size", "token data of 3 bytes", "tokens", b"\1\0\2"),
          ("tokens_id_past_vocab", "token data with id 65535 (vocabulary 16)", "tokens",
           struct.pack("<64H", *[65535] * 64))]
    # ---- token files with a header (src/tokenfile.h)
    def th(count, width=2, version=1):
        return (b"\xff\xffNFTOK\0" + struct.pack("<IIQI", version, width, count, 0)).ljust(1024, b"\0")

    ones = struct.pack("<64I", *[1] * 64)
    c += [("tokens_header_truncated", "token file: a header cut at 100 bytes", "tokens", th(64, 4)[:100]),
          ("tokens_header_bad_magic", "token file: FF FF 'N' 'F' then a wrong magic", "tokens",
           b"\xff\xffNFxxxx" + th(64, 4)[8:] + ones),
          ("tokens_header_version_9", "token file: header version 9", "tokens", th(64, 4, 9) + ones),
          ("tokens_header_width_3", "token file: token width 3", "tokens", th(64, 3) + ones),
          ("tokens_header_width_2^32-1", "token file: token width 2^32-1", "tokens", th(64, 2 ** 32 - 1) + ones),
          ("tokens_header_count_2^63", "token file: a count of 2^63 ids", "tokens", th(U63, 4) + ones),
          ("tokens_header_count_wraps", "token file: count * 4 wraps to the size", "tokens",
           th((1 << 62) + 64, 4) + ones),
          ("tokens_header_count_short", "token file: a count one short of the size", "tokens", th(63, 4) + ones),
          ("tokens_header_reserved", "token file: a non-zero reserved byte", "tokens",
           th(64, 4)[:1000] + b"\1" + th(64, 4)[1001:] + ones),
          ("tokens_width4_id_2^32-1", "token file: width 4, id 2^32-1", "tokens",
           th(64, 4) + struct.pack("<64I", *[2 ** 32 - 1] * 64))]
    return c


def commands(env, kind, data):
    """The command lines that read a file of this kind."""
    if kind.startswith("ingest:"):
        src = os.path.dirname(env.fresh("x"))
        with open(os.path.join(src, kind.split(":")[1]), "wb") as f:
            f.write(data)
        return [["ingest", "--source", src, "--output", os.path.join(env.dir, f"out{env.n}"), "--tokenizer", env.tok]]
    if kind == "safetensors":
        path = env.fresh("model.safetensors")
        with open(path, "wb") as f:
            f.write(data)
        with open(os.path.join(os.path.dirname(path), "config.json"), "wb") as f:
            f.write(env.hf_config)
        return [["import", "--input", os.path.dirname(path), "--output", path + ".bin"]]
    if kind == "manifest":
        path = env.fresh("manifest.json")
        with open(path, "wb") as f:
            f.write(data)
        d = os.path.dirname(path)
        return [["eval", "--model", env.model, "--data", d],
                ["train", "--model", env.model, "--data", d, "--steps", "1", "--ckpt", os.path.join(d, "o.ckpt")]]
    path = env.fresh({"gguf": "model.gguf", "config": "config.json"}.get(kind, "file.bin"))
    with open(path, "wb") as f:
        f.write(data)
    out = path + ".out"
    return {
        "model": [["info", "--model", path], ["generate", "--model", path, "--tokenizer", env.tok, "--max-tokens", "2"],
                  ["eval", "--model", path, "--data", env.tokens]],
        "gguf": [["import", "--input", path, "--output", out]],
        "checkpoint": [["eval", "--ckpt", path, "--data", env.tokens],
                       ["generate", "--ckpt", path, "--tokenizer", env.tok, "--max-tokens", "2"],
                       ["train", "--resume", "--ckpt", path, "--data", env.tokens]],
        "tokenizer": [["info", "--tokenizer", path],
                      ["generate", "--model", env.model, "--tokenizer", path, "--max-tokens", "2"]],
        "config": [["train", "--config", path, "--init", "--data", env.tokens, "--ckpt", out]],
        "tokens": [["eval", "--model", env.model, "--data", path],
                   ["train", "--model", env.model, "--data", path, "--steps", "1", "--ckpt", out]],
    }[kind]


def limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def run_one(binary, argv, timeout=120):
    """(rc, messages, stderr): stdout must be NDJSON."""
    asan = binary == NF_ASAN
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1") if asan else None
    p = subprocess.run([binary] + argv, capture_output=True, timeout=timeout, env=env,
                       preexec_fn=None if asan else limit_memory)
    lines = [json.loads(line) for line in p.stdout.decode("utf-8").splitlines() if line]
    return p.returncode, lines, p.stderr.decode("utf-8", "replace")


def check(binary, argv):
    """Returns the error message; raises AssertionError unless the run ended in one clean error."""
    rc, msgs, stderr = run_one(binary, argv)
    assert "Sanitizer" not in stderr and "runtime error" not in stderr, stderr[-3000:]
    errors = [m for m in msgs if m["type"] == "error"]
    assert rc in (1, 2), f"exit {rc}: {msgs} {stderr[-500:]}"
    assert len(errors) == 1 and msgs[-1] is errors[0], msgs
    e = errors[0]
    assert e["code"] != "out_of_memory", e
    assert "\n" not in e["message"], e
    return e


def table():
    """One row per file: the commands that read it, and what they answered
    (one row per distinct answer where the commands differ)."""
    env = Env()
    print("| file | commands | exit | code | message |")
    print("|---|---|---|---|---|")
    for name, what, kind, data in cases():
        answers = {}
        for argv in commands(env, kind, data):
            rc, msgs, _ = run_one(NF, argv)
            e = msgs[-1] if msgs else {"code": "?", "message": "(no output)"}
            msg = re.sub(r"case\d+/", "", e.get("message", "").replace(env.dir + "/", ""))
            msg = msg if len(msg) <= 120 else msg[:117] + "..."
            answers.setdefault((rc, e.get("code"), msg), []).append(argv[0])
        for (rc, code, msg), cmds in answers.items():
            used = ", ".join(f"`{c}`" for c in cmds)
            print(f"| {what} ({len(data):,} B) | {used} | {rc} | `{code}` | {msg.replace('|', '/')} |")


if __name__ == "__main__":
    table()
