"""Tiny test harness for the end-to-end tests (run with /usr/bin/python3).

Each test is a function decorated with @test; run_all() runs them in order and
prints "PASS name", "FAIL name" (with the traceback) or "SKIP name: why".
Files from ../shared/data are found with shared(); where that folder is absent
(a user's fresh clone) the test is skipped loudly, but under CI it fails.
"""
import atexit
import ctypes
import http.client
import json
import signal
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# NF_BINARY and NF_PROBE name another build's to test: tests/run_arm64.sh's wrappers that run the aarch64
# build under qemu-aarch64
NF = os.environ.get("NF_BINARY") or os.path.join(ROOT, "build", "neuralforge")
NF_ASAN = os.path.join(ROOT, "build", "asan", "neuralforge")
NF_SERVE = os.environ.get("NF_SERVE_BINARY", NF)  # serve's binary: tests/run_tests.sh also runs serve's tests on ASan's
PROBE = os.environ.get("NF_PROBE") or os.path.join(ROOT, "build", "tests", "nf_probe")
# LD_PRELOAD it with NF_ENOSPC_PATH (a glob) and NF_ENOSPC_AFTER (bytes): a full disk (tests/tools/enospc_shim.c)
ENOSPC_SHIM = os.path.join(ROOT, "build", "tests", "libnf_enospc.so")


def enospc_env(path_glob, after=0, fsync=False):
    """The environment of a process whose writes to files matching path_glob fail with ENOSPC after `after`
    bytes (and whose fsyncs of them fail too, with fsync)."""
    assert os.path.exists(ENOSPC_SHIM), f"{ENOSPC_SHIM} missing: make unit builds it"
    asan = os.environ.get("ASAN_OPTIONS", "")
    return dict(os.environ, LD_PRELOAD=ENOSPC_SHIM, NF_ENOSPC_PATH=path_glob, NF_ENOSPC_AFTER=str(after),
                NF_ENOSPC_FSYNC="1" if fsync else "0",
                ASAN_OPTIONS=(asan + ":" if asan else "") + "verify_asan_link_order=0")
SHARED = os.environ.get("NF_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))

_tests = []


class Skip(Exception):
    pass


def xxh3_64(data):
    """XXH3-64 with seed 0 (checkpoints' checksum from version 3, docs/formats.md), from the system's libxxhash: an
    implementation apart from the tool's use of it."""
    lib = ctypes.CDLL("libxxhash.so.0")
    lib.XXH3_64bits.restype = ctypes.c_uint64
    lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    return lib.XXH3_64bits(data, len(data))


def fnv_words(data):
    """The checksum of checkpoint versions 1 and 2: FNV-1a over little-endian 64-bit words, the tail zero-padded."""
    data = data + b"\0" * (-len(data) % 8)
    h = 0xcbf29ce484222325
    for (w,) in struct.iter_unpack("<Q", data):
        h = ((h ^ w) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


BASE_PIECE_BYTES = 16 << 20


def base_checksum_pieces(files):
    """A LoRA base checksum from version 4 on (docs/formats.md): XXH3-64 of the little-endian XXH3-64 digests of
    each file's 16 MiB pieces, the files (their bytes) in order."""
    digests = b"".join(struct.pack("<Q", xxh3_64(data[at:at + BASE_PIECE_BYTES]))
                       for data in files for at in range(0, len(data), BASE_PIECE_BYTES))
    return xxh3_64(digests)


def lora_base_checksum_at(ckpt):
    """Where a version 2-4 LoRA checkpoint holds its base checksum: 24 bytes into the LoRA block."""
    return 184 + struct.unpack_from("<I", ckpt, 112)[0] + 24


def checkpoint_as_version(ckpt, version, base_bytes=None):
    """A version-4 checkpoint rewritten the way a build of version 2 or 3 writes it (the layout is the same): that
    version, its file checksum (3: XXH3-64, 2: FNV) and, for LoRA (base_bytes: the base model's bytes), its base
    checksum, that hash of the bytes one after another. Without base_bytes the stored base checksum stays."""
    hash_of = {2: fnv_words, 3: xxh3_64}[version]
    b = bytearray(ckpt[:-8])
    assert struct.unpack_from("<I", b, 8)[0] == 4
    struct.pack_into("<I", b, 8, version)
    if base_bytes is not None:
        struct.pack_into("<Q", b, lora_base_checksum_at(b), hash_of(base_bytes))
    return bytes(b) + struct.pack("<Q", hash_of(bytes(b)))


def test(fn):
    _tests.append(fn)
    return fn


def shared(name):
    path = os.path.join(SHARED, name)
    if os.path.exists(path):
        return path
    if os.environ.get("CI"):
        raise AssertionError(f"CI needs {path}, but ../shared/data is missing")
    raise Skip(f"{path} not found (../shared/data absent)")


_scratch = []  # the directories and files tmpdir() and Serve made


def tmpdir():
    """A fresh scratch directory, removed when the test file's process exits (NF_KEEP_TMP=1 keeps them, to look
    at a failure's files): a suite run leaves nothing behind (tests/run_tests.sh checks)."""
    d = tempfile.mkdtemp(prefix="nf_e2e_")
    _scratch.append(d)
    return d


@atexit.register
def _remove_scratch():
    if os.environ.get("NF_KEEP_TMP"):
        return
    for path in _scratch:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)


TOKEN_MAGIC = b"\xff\xffNFTOK\0"  # src/tokenfile.h


def token_header(count, width=2, vocab=0, version=1, magic=TOKEN_MAGIC):
    """The 1024-byte header of a token file (docs/formats.md)."""
    return (magic + struct.pack("<IIQI", version, width, count, vocab)).ljust(1024, b"\0")


def write_tokens(path, ids, width=2, vocab=0, header=True):
    """A token file: the header and ids of `width` bytes, or (header=False) llama2.c's headerless uint16."""
    import numpy as np
    body = np.asarray(ids, dtype="<u4" if width == 4 else "<u2").tobytes()
    with open(path, "wb") as f:
        f.write((token_header(len(ids), width, vocab) if header else b"") + body)


def read_tokens(path, with_header=False):
    """A token file's ids (a list), checking its header; with_header: (ids, (width, count, vocab)) where a
    legacy headerless file gives (2, count, None)."""
    import numpy as np
    raw = open(path, "rb").read()
    if raw[:4] != TOKEN_MAGIC[:4]:
        ids = np.frombuffer(raw, dtype="<u2").tolist()
        return (ids, (2, len(ids), None)) if with_header else ids
    assert raw[:8] == TOKEN_MAGIC and len(raw) >= 1024, raw[:16]
    version, width, count, vocab = struct.unpack_from("<IIQI", raw, 8)
    assert version == 1 and width in (2, 4) and raw[28:1024] == bytes(996), (version, width)
    assert len(raw) == 1024 + count * width, (len(raw), count, width)
    ids = np.frombuffer(raw[1024:], dtype="<u4" if width == 4 else "<u2").tolist()
    assert vocab == 0 or max(ids, default=0) < vocab
    return (ids, (width, count, vocab)) if with_header else ids


class Result:
    def __init__(self, rc, stdout, stderr):
        self.rc, self.stdout, self.stderr = rc, stdout, stderr
        self.messages = []
        for line in stdout.decode("utf-8", "strict").split("\n"):
            if line == "" :
                continue
            msg = json.loads(line)  # every stdout line must be one JSON object
            assert isinstance(msg, dict) and "type" in msg, line
            self.messages.append(msg)

    def of_type(self, t):
        return [m for m in self.messages if m["type"] == t]

    def one(self, t):
        found = self.of_type(t)
        assert len(found) == 1, f"expected one {t} message, got {self.messages}"
        return found[0]


def run(args, binary=NF, stdin=b"", timeout=120, ndjson=True, env=None):
    """Runs the CLI; stdout is parsed as NDJSON unless ndjson=False."""
    p = subprocess.run([binary] + [str(a) for a in args], input=stdin, capture_output=True, timeout=timeout,
                       env=env)
    if not ndjson:
        r = Result.__new__(Result)
        r.rc, r.stdout, r.stderr, r.messages = p.returncode, p.stdout, p.stderr, []
        return r
    return Result(p.returncode, p.stdout, p.stderr)


def run_interrupted(args, at_step, sig=signal.SIGINT):
    """Runs `train`, sends sig once step at_step is reported, and returns
    (exit status, every message the run wrote)."""
    p = subprocess.Popen([NF] + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    watchdog = threading.Timer(120, p.kill)  # a run that hangs fails the test instead of hanging the suite
    watchdog.start()
    messages, sent = [], False
    try:
        # read to the end from the same buffered file: communicate() would read the pipe past the lines
        # this iterator had already read ahead, and lose them (a fast run writes several per read)
        for line in p.stdout:
            messages.append(json.loads(line))
            if not sent and messages[-1]["type"] == "step" and messages[-1]["step"] == at_step:
                p.send_signal(sig)
                sent = True
    finally:
        watchdog.cancel()
    return p.wait(), messages


def assert_error(r, code=None, mention=None):
    """A failure is exactly one error message on stdout and a non-zero exit."""
    assert r.rc != 0, f"expected failure, got rc 0: {r.stdout!r}"
    err = r.one("error")
    assert err["message"], err
    assert "\n" not in err["message"]
    if code:
        assert err["code"] == code, err
    if mention:
        assert mention in err["message"], err
    return err


TOKEN = "test-token-0123456789abcdef"


class Serve:
    """A server on a free port over a data directory; stopped with SIGINT."""

    def __init__(self, data_dir, token=TOKEN, args=(), env=None):
        self.data_dir, self.token = data_dir, token
        self.log = data_dir.rstrip("/") + f".serve-{time.time_ns()}.log"  # stderr, checked for sanitizer reports
        _scratch.append(self.log)
        binary = NF_SERVE
        env = dict(env or os.environ, NEURALFORGE_TOKEN=token)  # not --token: argv is visible in ps
        self.p = subprocess.Popen([binary, "serve", "--port", "0", "--data-dir", data_dir, *args],
                                  stdout=subprocess.PIPE, stderr=open(self.log, "wb"), env=env)
        line = self.p.stdout.readline()
        msg = json.loads(line)
        assert msg["type"] == "serve", msg
        self.msg, self.port, self.url = msg, msg["port"], msg["url"]

    def raw(self, method, path, headers=None, body=None, timeout=30):
        """One request as given (no token added); returns the response, its body read."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        r.body = r.read()
        c.close()
        return r

    def request(self, method, path, body=None, token=True, raw=None, headers=None, timeout=30):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if token is True:
            h["Authorization"] = f"Bearer {self.token}"
        elif token:
            h["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if body is not None and raw is None:
            h.setdefault("Content-Type", "application/json")
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        payload = r.read()
        c.close()
        try:
            return r.status, json.loads(payload) if payload else None
        except ValueError:
            return r.status, payload

    def ok(self, method, path, body=None, status=(200, 201), **kw):
        code, out = self.request(method, path, body, **kw)
        assert code in (status if isinstance(status, tuple) else (status,)), (method, path, code, out)
        return out

    def wait_run(self, run_id, until, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.ok("GET", f"/api/runs/{run_id}")
            if until(r):
                return r
            time.sleep(0.2)
        raise AssertionError(f"run {run_id} never got there: {r}")

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            rc = self.p.wait(timeout=90)
            # the exit status and the end of serve's log, so that a rare failure says what happened
            assert rc == 0, f"serve exited with {rc}: {open(self.log, 'rb').read()[-3000:]!r}"
        self.check_log()

    def check_log(self):
        log = open(self.log, "rb").read()
        assert b"Sanitizer" not in log and b"runtime error" not in log, log[-3000:]

    def kill(self):
        self.p.kill()
        self.p.wait(timeout=10)
        self.check_log()


def run_all():
    passed = failed = skipped = 0
    only = sys.argv[1:]
    for fn in _tests:
        if only and fn.__name__ not in only:
            continue
        try:
            fn()
        except Skip as s:
            skipped += 1
            print(f"SKIP {fn.__name__}: {s}", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {fn.__name__}", flush=True)
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print(f"PASS {fn.__name__}", flush=True)
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    sys.exit(1 if failed else 0)
