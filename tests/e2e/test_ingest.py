"""`neuralforge ingest` as a user runs it: a tree of .txt/.md/.csv/.jsonl
files into shards, masks and manifest.json; the shards against `tokenize`
and against the chat template spelled out here; --incremental against a
fresh ingest, byte for byte; `train` and `eval` honoring the loss mask (the
eval loss against a mean over completion targets only, gradients against
PyTorch with ignored targets, --accum against a bigger batch); unmasked data
giving the same losses as before; and the errors."""
import fcntl
import json
import os
import shutil
import subprocess

import numpy as np
import torch

from harness import NF, PROBE, assert_error, read_tokens, run, run_all, shared, test, tmpdir, write_tokens
from llama_ref import CFG, random_weights, torch_loss, write_v0

CHAT = {"messages": [
    {"role": "system", "content": "You answer in one line."},
    {"role": "user", "content": " Where does the sun rise? "},
    {"role": "assistant", "content": "In the east."},
    {"role": "user", "content": "And set?"},
    {"role": "assistant", "content": "In the west.\n"}]}


def write(path, text, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write(text)


def story_text(n_bytes=6000):
    with open(shared("tinystories_train_2MiB.txt"), encoding="utf-8") as f:
        return f.read(n_bytes)


def small_tree(root):
    """The test tree: text, markdown, CSV, JSONL with all three record kinds, and a PNG to skip."""
    write(os.path.join(root, "stories.txt"), story_text())
    write(os.path.join(root, "notes", "readme.md"), "# Notes\n\nThe cat sat on the mat.\n")
    write(os.path.join(root, "table.csv"), 'id,text\n1,"A dog ran, fast."\n2,"She said ""hi""\nand left."\n')
    records = [{"text": "Once upon a time there was a frog."},
               {"prompt": "Q: What color is the sky?\nA:", "completion": "Blue."}, CHAT]
    write(os.path.join(root, "chat.jsonl"), "".join(json.dumps(r) + "\n" for r in records))
    write(os.path.join(root, "logo.png"), b"\x89PNG\r\n\x1a\n", "wb")


def ingest(src, out, *extra, tokenizer=None):
    r = run(["ingest", "--source", src, "--output", out, "--tokenizer", tokenizer or shared("tok512.bin"), *extra])
    assert r.rc == 0, (r.stdout, r.stderr)
    return r


def manifest(out):
    with open(os.path.join(out, "manifest.json")) as f:
        return json.load(f)


def stream(out):
    """The whole token stream and mask of an ingest output, in shard order."""
    m = manifest(out)
    toks, masks = [], []
    for s in m["shards"]:
        t = np.asarray(read_tokens(os.path.join(out, s["file"])), dtype="<u4")
        assert len(t) == s["tokens"]
        mk = np.fromfile(os.path.join(out, s["mask"]), dtype="u1") if s["mask"] else np.ones(len(t), "u1")
        assert len(mk) == len(t) and int((mk == 0).sum()) == s["masked_tokens"]
        toks.append(t)
        masks.append(mk)
    return (np.concatenate(toks) if toks else np.zeros(0, "<u4"),
            np.concatenate(masks) if masks else np.zeros(0, "u1"))


def source_slice(out, path):
    """The tokens and mask of one source file, located by the manifest's shard and offset."""
    m = manifest(out)
    src = next(s for s in m["sources"] if s["path"] == path)
    start = sum(s["tokens"] for s in m["shards"][:src["shard"]]) + src["offset"]
    toks, masks = stream(out)
    return toks[start:start + src["tokens"]], masks[start:start + src["tokens"]]


def encode(text):
    """Ids of text with the dummy-prefix space, no BOS (nf_probe, the same encoder)."""
    d = tmpdir()
    inp, out = os.path.join(d, "in.txt"), os.path.join(d, "out.i32")
    with open(inp, "w", encoding="utf-8") as f:
        f.write(text)
    subprocess.run([PROBE, "encode", shared("tok512.bin"), inp, out], check=True)
    return list(np.fromfile(out, dtype=np.int32))


def turn(prompt, answer):
    """BOS prompt (masked), answer EOS (counted): the ids and the mask."""
    p, a = [1] + encode(prompt), encode(answer) + [2]
    return p + a, [0] * len(p) + [1] * len(a)


@test
def ingest_small_tree_messages_manifest_and_shards():
    src, out = os.path.join(tmpdir(), "src"), os.path.join(tmpdir(), "out")
    small_tree(src)
    r = ingest(src, out)
    files = r.of_type("ingest_file")
    assert [f["path"] for f in files] == ["chat.jsonl", "logo.png", "notes/readme.md", "stories.txt", "table.csv"]
    assert [f["status"] for f in files] == ["new", "skipped", "new", "new", "new"]
    skipped = files[1]
    assert skipped["reason"] == "unsupported extension" and skipped["tokens"] == 0 and not skipped["tokenized"]
    assert all(f["tokenized"] for f in files if f["status"] == "new")
    done = r.one("ingest_done")
    ingested = [f for f in files if f["status"] == "new"]
    assert done["files"] == 4 and done["skipped"] == 1 and done["removed"] == 0 and done["tokenized"] == 4
    for k in ("documents", "tokens", "masked_tokens"):
        assert done[k] == sum(f[k] for f in ingested), k
    assert done["shards"] == 1 and done["generation"] == 1 and done["output"] == out
    assert [f["documents"] for f in files] == [3, 0, 1, files[3]["documents"], 2]

    m = manifest(out)
    assert m["format"] == "neuralforge-ingest" and m["version"] == 2 and m["token_width"] == 2 and m["split"] == "eot"
    assert m["tokenizer"]["vocab_size"] == 512 and m["tokenizer"]["hash"].startswith("fnv1a64:")
    assert [s["path"] for s in m["sources"]] == ["chat.jsonl", "notes/readme.md", "stories.txt", "table.csv"]
    assert m["tokens"] == done["tokens"] and m["masked_tokens"] == done["masked_tokens"]
    assert sorted(os.listdir(out)) == [".ingest.lock", "manifest.json", "shard_000001_00000.bin",
                                       "shard_000001_00000.mask"]
    for s in m["sources"]:
        assert s["bytes"] == os.path.getsize(os.path.join(src, s["path"]))

    # the text parts are exactly what `tokenize` writes for the same files, every token counted
    for path in ("stories.txt", "notes/readme.md"):
        ref = os.path.join(tmpdir(), "ref.bin")
        t = run(["tokenize", "--input", os.path.join(src, path), "--output", ref, "--tokenizer", shared("tok512.bin")])
        assert t.rc == 0
        toks, mask = source_slice(out, path)
        assert toks.tolist() == read_tokens(ref), path
        assert mask.all()
    assert source_slice(out, "stories.txt")[0].size == files[3]["tokens"] > 1000

    # chat.jsonl: a text record (counted), a prompt/completion pair and a chat through the template
    want_ids = [1] + encode("Once upon a time there was a frog.")
    want_mask = [1] * len(want_ids)
    for ids, mask in (turn("Q: What color is the sky?\nA:", "Blue."),
                      turn("[INST] <<SYS>>\nYou answer in one line.\n<</SYS>>\n\nWhere does the sun rise? [/INST]",
                           "In the east."),
                      turn("[INST] And set? [/INST]", "In the west.")):
        want_ids += ids
        want_mask += mask
    toks, mask = source_slice(out, "chat.jsonl")
    assert list(toks) == want_ids
    assert list(mask) == want_mask
    assert files[0]["masked_tokens"] == want_mask.count(0)

    # the CSV's text column, one document per row
    toks, mask = source_slice(out, "table.csv")
    assert list(toks) == [1] + encode("A dog ran, fast.") + [1] + encode('She said "hi"\nand left.')
    assert mask.all()

    # train and eval read the directory: the shard and its mask, checked against the manifest
    t = run(["train", "--model", shared("stories260K.bin"), "--data", out, "--steps", 2, "--batch", 2, "--seq", 32,
             "--val-split", 0.1, "--val-every", 2, "--val-batches", 2])
    assert t.rc == 0, t.stdout
    assert t.one("init")["train_tokens"] + t.one("init")["val_tokens"] == done["tokens"]
    e = run(["eval", "--model", shared("stories260K.bin"), "--data", out, "--seq", 32, "--batches", 4])
    assert e.rc == 0 and 0 < e.one("eval")["targets"] <= e.one("eval")["tokens"]


@test
def incremental_ingest_equals_a_fresh_one_byte_for_byte():
    base = tmpdir()
    src, out, fresh = (os.path.join(base, n) for n in ("src", "out", "fresh"))
    small_tree(src)
    shutil.copy(shared("tinystories_train_2MiB.txt"), os.path.join(src, "big.txt"))
    first = ingest(src, out, "--max-shard-mb", 1)
    assert first.one("ingest_done")["shards"] == 2  # ~1M tokens, 512Ki a shard
    # change one file, add one, delete one
    write(os.path.join(src, "notes", "readme.md"), "\nThe dog sat on the log.\n", "a")
    write(os.path.join(src, "added.jsonl"), json.dumps({"prompt": "Say hi:", "completion": " hi"}) + "\n")
    os.remove(os.path.join(src, "table.csv"))
    r = ingest(src, out, "--max-shard-mb", 1, "--incremental")
    status = {f["path"]: (f["status"], f["tokenized"]) for f in r.of_type("ingest_file")}
    assert status == {"added.jsonl": ("new", True), "big.txt": ("unchanged", False),
                      "chat.jsonl": ("unchanged", False), "logo.png": ("skipped", False),
                      "notes/readme.md": ("changed", True), "stories.txt": ("unchanged", False),
                      "table.csv": ("removed", False)}
    done = r.one("ingest_done")
    assert done["tokenized"] == 2 and done["removed"] == 1 and done["generation"] == 2
    removed = [f for f in r.of_type("ingest_file") if f["status"] == "removed"][0]
    assert removed["tokens"] == [f for f in first.of_type("ingest_file") if f["path"] == "table.csv"][0]["tokens"]
    f = ingest(src, fresh, "--max-shard-mb", 1)
    assert done["tokens"] == f.one("ingest_done")["tokens"]
    assert done["masked_tokens"] == f.one("ingest_done")["masked_tokens"] > 0
    a, b = stream(out), stream(fresh)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    ma, mb = manifest(out), manifest(fresh)
    assert [(s["tokens"], s["masked_tokens"], bool(s["mask"])) for s in ma["shards"]] == \
           [(s["tokens"], s["masked_tokens"], bool(s["mask"])) for s in mb["shards"]]
    assert ma["sources"] == mb["sources"]
    # the last run's shards are gone; only generation 2 is left
    assert sorted(n for n in os.listdir(out) if n.startswith("shard_")) == \
           sorted([s["file"] for s in ma["shards"]] + [s["mask"] for s in ma["shards"] if s["mask"]])
    assert all(n.startswith("shard_000002_") for n in os.listdir(out) if n.startswith("shard_"))
    # nothing changed: nothing tokenized, the same bytes again
    again = ingest(src, out, "--max-shard-mb", 1, "--incremental")
    assert again.one("ingest_done")["tokenized"] == 0
    assert {f["status"] for f in again.of_type("ingest_file")} == {"unchanged", "skipped"}
    assert stream(out)[0].tobytes() == b[0].tobytes()
    # and without --incremental the directory is rebuilt from scratch
    rebuilt = ingest(src, out, "--max-shard-mb", 1)
    assert rebuilt.one("ingest_done")["tokenized"] == 5
    assert {f["status"] for f in rebuilt.of_type("ingest_file")} == {"new", "skipped"}
    assert stream(out)[0].tobytes() == b[0].tobytes()


@test
def incremental_reuses_tokens_only_from_intact_shards():
    base = tmpdir()
    src, out = os.path.join(base, "src"), os.path.join(base, "out")
    small_tree(src)
    ingest(src, out)
    m = manifest(out)
    with open(os.path.join(out, m["shards"][0]["file"]), "r+b") as f:
        f.truncate(10)  # damaged: its sources are tokenized again, not copied
    r = ingest(src, out, "--incremental")
    assert all(f["tokenized"] for f in r.of_type("ingest_file") if f["status"] == "unchanged")
    assert {f["status"] for f in r.of_type("ingest_file")} == {"unchanged", "skipped"}
    fresh = os.path.join(base, "fresh")
    ingest(src, fresh)
    assert stream(out)[0].tobytes() == stream(fresh)[0].tobytes()


def pair_records(n, seed):
    g = np.random.default_rng(seed)
    words = "the cat dog sun moon ran sat big small red blue happy sad tree house".split()
    recs = []
    for i in range(n):
        p = " ".join(g.choice(words, 6 + i % 5))
        c = " ".join(g.choice(words, 3 + i % 4))
        recs.append({"prompt": f"Question {i}: {p}?\nAnswer:", "completion": f" {c}."})
    return recs


def masked_dir(n=40, seed=0):
    src, out = os.path.join(tmpdir(), "src"), os.path.join(tmpdir(), "out")
    write(os.path.join(src, "pairs.jsonl"), "".join(json.dumps(r) + "\n" for r in pair_records(n, seed)))
    ingest(src, out)
    return out


def logits_of(tokens):
    out = os.path.join(tmpdir(), "l.f32")
    subprocess.run([PROBE, "logits", shared("stories260K.bin"), out, *map(str, tokens)], check=True)
    return np.fromfile(out, dtype=np.float32).reshape(len(tokens), -1).astype(np.float64)


@test
def masked_eval_loss_is_the_mean_over_completion_targets():
    out = masked_dir()
    toks, mask = stream(out)
    assert 0 < (mask == 0).sum() < len(mask)
    B, T, batches = 2, 48, 3
    e = run(["eval", "--model", shared("stories260K.bin"), "--data", out, "--batch", B, "--seq", T,
             "--batches", batches])
    assert e.rc == 0, e.stdout
    ev = e.one("eval")
    # the reference: eval's evenly spaced windows (docs/formats.md), logits from the KV-cached forward,
    # cross-entropy in float64 over the targets whose mask byte is 1
    total, n = len(toks) - T, batches * B
    losses, counted = [], []
    for j in range(n):
        start = int(j * (total - 1) / (n - 1))
        x, y, m = toks[start:start + T], toks[start + 1:start + T + 1], mask[start + 1:start + T + 1]
        lg = logits_of(x)
        mx = lg.max(axis=1, keepdims=True)
        ce = np.log(np.exp(lg - mx).sum(axis=1)) + mx[:, 0] - lg[np.arange(T), y]
        losses.append(ce)
        counted.append(m.astype(bool))
    ce, keep = np.concatenate(losses), np.concatenate(counted)
    want_masked, want_all = ce[keep].mean(), ce.mean()
    print(f"  eval {ev['loss']:.6f}; completion-only reference {want_masked:.6f}; all targets {want_all:.6f}")
    assert ev["targets"] == int(keep.sum()) < ev["tokens"] == B * T * batches
    assert abs(ev["loss"] - want_masked) < 1e-4 * want_masked
    assert abs(want_all - want_masked) > 1e-2  # the mask really changes the number
    # the same tokens without the mask: the plain mean over every target
    plain = os.path.join(tmpdir(), "plain.bin")
    toks.astype("<u2").tofile(plain)  # a headerless (llama2.c) file
    p = run(["eval", "--model", shared("stories260K.bin"), "--data", plain, "--batch", B, "--seq", T,
             "--batches", batches])
    assert abs(p.one("eval")["loss"] - want_all) < 1e-4 * want_all
    assert p.one("eval")["targets"] == B * T * batches


@test
def masked_gradients_match_pytorch_with_ignored_targets():
    w = random_weights(21)
    path = os.path.join(tmpdir(), "m.bin")
    write_v0(path, w)
    g = np.random.default_rng(3)
    B, T = 2, 9
    tokens = g.integers(0, CFG["vocab_size"], (B, T))
    targets = g.integers(0, CFG["vocab_size"], (B, T))
    targets[0, :4] = -1  # a prompt
    targets[1, 2:7] = -1
    out = os.path.join(tmpdir(), "grads.f32")
    subprocess.run([PROBE, "grads", path, out, str(B), str(T), *map(str, tokens.ravel()), *map(str, targets.ravel())],
                   check=True)
    data = np.fromfile(out, dtype=np.float32)
    t = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in w.items()}
    ref = torch_loss(t, tokens, np.where(targets < 0, -100, targets), CFG, False)  # -100: PyTorch's ignore_index
    ref.backward()
    assert abs(data[0] - ref.item()) < 1e-5 * ref.item(), (data[0], ref.item())
    full = torch_loss({k: v.detach() for k, v in t.items()}, tokens, np.where(targets < 0, 0, targets), CFG, False)
    assert abs(full.item() - ref.item()) > 1e-3
    offset = 1
    for k in ("emb", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final", "wcls"):
        n = w[k].size
        ours, theirs = data[offset:offset + n], t[k].grad.numpy().ravel()
        offset += n
        err = np.abs(ours - theirs).max() / np.abs(theirs).max()
        assert err < 1e-4, f"{k}: relative error {err:.2e}"


@test
def masked_accumulation_equals_a_bigger_batch():
    out = masked_dir(80, 5)
    common = ["train", "--model", shared("stories260K.bin"), "--data", out, "--steps", 4, "--seq", 48,
              "--lr", 1e-3, "--val-every", 0, "--threads", 1]
    big = run([*common, "--batch", 4])
    acc = run([*common, "--batch", 1, "--accum", 4])
    assert big.rc == 0 and acc.rc == 0, acc.stdout
    batches = acc.of_type("batch")
    assert any(b["targets"] < 48 for b in batches) and all(b["tokens"] == 48 for b in batches)
    for a, b in zip(big.of_type("step"), acc.of_type("step")):
        assert abs(a["loss"] - b["loss"]) < 1e-5 * a["loss"], (a, b)
        assert abs(a["grad_norm"] - b["grad_norm"]) < 1e-4 * a["grad_norm"], (a, b)
    # a step's loss is the mean over the targets its micro-batches count
    for s in acc.of_type("step"):
        mine = [b for b in batches if b["step"] == s["step"]]
        want = sum(b["loss"] * b["targets"] for b in mine) / sum(b["targets"] for b in mine)
        assert abs(s["loss"] - want) < 1e-6 * want


@test
def masked_training_resumes_exactly():
    out = masked_dir(60, 9)
    ck = os.path.join(tmpdir(), "c.ckpt")
    args = ["train", "--model", shared("stories260K.bin"), "--data", out, "--steps", 4, "--batch", 2, "--seq", 32,
            "--accum", 2, "--ckpt", ck, "--val-split", 0.2, "--val-every", 2, "--val-batches", 2,
            "--lr-schedule", "constant"]  # so that a run of --steps 2 has the same learning rates
    whole = run(args)
    assert whole.rc == 0, whole.stdout
    assert run([*args[:6], 2, *args[7:]]).rc == 0  # --steps 2
    rest = run([*args, "--resume"])
    assert rest.rc == 0, rest.stdout
    steps = lambda r: [(m["step"], m["loss"], m["grad_norm"]) for m in r.of_type("step")]
    assert steps(whole)[2:] == steps(rest)
    assert [v["val_loss"] for v in whole.of_type("val")][1:] == [v["val_loss"] for v in rest.of_type("val")]


@test
def output_inside_source_and_links_to_directories_are_not_walked():
    base = tmpdir()
    src = os.path.join(base, "src")
    write(os.path.join(src, "a.txt"), "The cat sat.")
    os.makedirs(os.path.join(base, "elsewhere"))
    write(os.path.join(base, "elsewhere", "b.txt"), "Not this one.")
    os.symlink(os.path.join(base, "elsewhere"), os.path.join(src, "linked"))
    os.symlink(os.path.join(base, "elsewhere", "b.txt"), os.path.join(src, "c.txt"))  # a link to a file is read
    write(os.path.join(src, ".hidden", "d.txt"), "hidden")
    out = os.path.join(src, "tokens")
    for _ in range(2):
        r = ingest(src, out)
        files = {f["path"]: (f["status"], f.get("reason")) for f in r.of_type("ingest_file")}
        assert files == {"a.txt": ("new", None), "c.txt": ("new", None),
                         "linked": ("skipped", "symbolic link to a directory")}, files


@test
def unmasked_ingest_trains_bit_identically_to_tokenize():
    src, out = os.path.join(tmpdir(), "src"), os.path.join(tmpdir(), "out")
    write(os.path.join(src, "s.txt"), story_text(60000))
    ingest(src, out)
    assert manifest(out)["shards"][0]["mask"] is None  # nothing masked: no mask file
    ref = os.path.join(tmpdir(), "s.bin")
    assert run(["tokenize", "--input", os.path.join(src, "s.txt"), "--output", ref,
                "--tokenizer", shared("tok512.bin")]).rc == 0
    args = ["train", "--model", shared("stories260K.bin"), "--steps", 4, "--batch", 2, "--seq", 64, "--accum", 2,
            "--val-split", 0.1, "--val-every", 2, "--val-batches", 2]
    a, b = run([*args, "--data", out]), run([*args, "--data", ref])
    assert a.rc == 0 and b.rc == 0
    keep = lambda r: [(m["type"], m.get("loss"), m.get("grad_norm"), m.get("val_loss")) for m in r.messages
                      if m["type"] in ("batch", "step", "val")]
    assert keep(a) == keep(b) and len(keep(a)) == 14
    assert all(m["targets"] == 128 for m in a.of_type("batch"))
    ea = run(["eval", "--model", shared("stories260K.bin"), "--data", out, "--seq", 64, "--batches", 3])
    eb = run(["eval", "--model", shared("stories260K.bin"), "--data", ref, "--seq", 64, "--batches", 3])
    assert ea.one("eval")["loss"] == eb.one("eval")["loss"]


@test
def errors_are_one_line_and_leave_the_last_output_intact():
    base = tmpdir()
    src, out = os.path.join(base, "src"), os.path.join(base, "out")
    small_tree(src)
    first = ingest(src, out)
    tok = shared("tok512.bin")
    good = json.dumps({"text": "fine"}) + "\n"
    # a malformed JSONL line: an error naming the file and line; the last manifest and shards stay usable
    write(os.path.join(src, "chat.jsonl"), good + '{"text": "unterminated}\n')
    r = run(["ingest", "--source", src, "--output", out, "--tokenizer", tok, "--incremental"])
    assert_error(r, "bad_data", "chat.jsonl line 2: invalid JSON")
    assert r.rc == 1 and not r.of_type("ingest_done")
    assert manifest(out)["generation"] == 1 and stream(out)[0].size == first.one("ingest_done")["tokens"]
    assert sorted(n for n in os.listdir(out) if n.startswith("shard_")) == \
        ["shard_000001_00000.bin", "shard_000001_00000.mask"]
    cases = [
        (good + '{"prompt": "p"}\n', "chat.jsonl line 2: the record has \"prompt\" but no \"completion\""),
        ('{"messages": [{"role": "user", "content": "u"}]}\n', "line 1: the last message is from the user"),
        ('{"text": 5}\n', "\"text\" is not a string"),
        ('["text"]\n', "a record is a JSON object"),
    ]
    for content, mention in cases:
        write(os.path.join(src, "chat.jsonl"), content)
        assert_error(run(["ingest", "--source", src, "--output", out, "--tokenizer", tok]), "bad_data", mention)
    write(os.path.join(src, "chat.jsonl"), good)
    write(os.path.join(src, "bad.csv"), "a,b\n1,2,3\n")
    assert_error(run(["ingest", "--source", src, "--output", out, "--tokenizer", tok]), "bad_data",
                 "bad.csv line 2: the row has 3 fields; the header has 2")
    os.remove(os.path.join(src, "bad.csv"))
    # a JSONL line beyond 16 MiB and a file beyond --max-file-mb
    big = os.path.join(base, "big")
    write(os.path.join(big, "huge.jsonl"), '{"text": "' + "a" * (17 << 20) + '"}\n')
    r = run(["ingest", "--source", big, "--output", os.path.join(base, "o2"), "--tokenizer", tok])
    assert_error(r, "bad_data", "huge.jsonl line 1: the line has 17825804 bytes; a record may have up to 16777216")
    r = run(["ingest", "--source", big, "--output", os.path.join(base, "o3"), "--tokenizer", tok,
             "--max-file-mb", 1])
    assert_error(r, "bad_data", "--max-file-mb 1 allows 1048576")
    # flags
    for flag, value in (("--max-shard-mb", 0), ("--max-shard-mb", 4097), ("--max-file-mb", 0)):
        r = run(["ingest", "--source", src, "--output", out, "--tokenizer", tok, flag, value])
        assert_error(r, "usage", flag)
        assert r.rc == 2
    assert_error(run(["ingest", "--source", src, "--output", out]), "usage", "--tokenizer")
    assert_error(run(["ingest", "--source", src, "--output", out, "--tokenizer", tok, "--split", "lines"]), "usage",
                 "--split")
    r = run(["ingest", "--source", os.path.join(src, "stories.txt"), "--output", out, "--tokenizer", tok])
    assert_error(r, "usage", "is not a directory")
    assert_error(run(["ingest", "--source", os.path.join(base, "nope"), "--output", out, "--tokenizer", tok]), "io",
                 "cannot open --source")
    assert_error(run(["ingest", "--source", src, "--output", src, "--tokenizer", tok]), "usage", "--source")
    foreign = os.path.join(base, "foreign")
    write(os.path.join(foreign, "mine.txt"), "keep me")
    assert_error(run(["ingest", "--source", src, "--output", foreign, "--tokenizer", tok]), "usage", "'mine.txt'")
    assert os.listdir(foreign) == ["mine.txt"]
    r = run(["ingest", "--source", src, "--output", out, "--tokenizer", "builtin:bytes", "--incremental"])
    assert_error(r, "usage", "another tokenizer")
    # a second ingest into the same directory at the same time
    with open(os.path.join(out, ".ingest.lock"), "w") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert_error(run(["ingest", "--source", src, "--output", out, "--tokenizer", tok]), "io",
                     "another ingest is writing")
    # after all that, it still works and the directory holds only what it lists
    ok = ingest(src, out, "--incremental")
    assert manifest(out)["generation"] == 2 and ok.one("ingest_done")["files"] == 4


@test
def a_crash_before_the_manifest_switch_changes_nothing():
    base = tmpdir()
    src, out = os.path.join(base, "src"), os.path.join(base, "out")
    small_tree(src)
    shutil.copy(shared("tinystories_train_2MiB.txt"), os.path.join(src, "big.txt"))
    ingest(src, out, "--max-shard-mb", 1)
    before = stream(out)
    # a later file fails after this run has written a full shard of generation 2: it is deleted again
    write(os.path.join(src, "zz.jsonl"), "not json\n")
    r = run(["ingest", "--source", src, "--output", out, "--tokenizer", shared("tok512.bin"), "--max-shard-mb", 1])
    assert_error(r, "bad_data", "zz.jsonl line 1")
    assert all(n.startswith("shard_000001_") for n in os.listdir(out) if n.startswith("shard_"))
    assert stream(out)[0].tobytes() == before[0].tobytes()
    # what a killed run leaves (files of a generation no manifest lists, a temporary manifest) goes next time
    write(os.path.join(out, "shard_000007_00000.bin"), b"\0\0", "wb")
    write(os.path.join(out, "manifest.json.tmp.12345"), "{")
    os.remove(os.path.join(src, "zz.jsonl"))
    r = ingest(src, out, "--max-shard-mb", 1, "--incremental")
    assert r.one("ingest_done")["generation"] == 8  # past every generation seen in the directory
    names = sorted(os.listdir(out))
    assert names == [".ingest.lock", "manifest.json"] + sorted(
        [s["file"] for s in manifest(out)["shards"]] + [s["mask"] for s in manifest(out)["shards"] if s["mask"]])
    # a directory a crashed first run left (no manifest, only our files) is taken
    fresh = os.path.join(base, "fresh")
    write(os.path.join(fresh, "shard_000001_00000.bin.tmp.999"), "x")
    ingest(src, fresh, "--max-shard-mb", 1)
    assert stream(fresh)[0].tobytes() == stream(out)[0].tobytes()


@test
def train_refuses_shards_that_do_not_match_the_manifest():
    out = masked_dir(10)
    m = manifest(out)
    shard, mask = os.path.join(out, m["shards"][0]["file"]), os.path.join(out, m["shards"][0]["mask"])
    args = ["train", "--model", shared("stories260K.bin"), "--data", out, "--steps", 1, "--seq", 16]
    good = open(mask, "rb").read()
    open(mask, "wb").write(bytes([2]) + good[1:])
    assert_error(run(args), "bad_data", "masks hold 0 or 1")
    open(mask, "wb").write(bytes([1 - good[0]]) + good[1:])
    assert_error(run(args), "bad_data", "the manifest of")
    open(mask, "wb").write(good)
    data = open(shard, "rb").read()
    open(shard, "wb").write(data[:-2])
    assert_error(run(args), "bad_data", "its header lists")
    open(shard, "wb").write(data)
    write_tokens(shard, read_tokens(shard)[:-1], 2)  # a sound file, one token short of the manifest's count
    assert_error(run(args), "bad_data", "the manifest of")
    open(shard, "wb").write(data)
    assert run(args).rc == 0
    os.remove(mask)
    assert_error(run(args), "io", "mask")
    # a manifest that is not one
    open(os.path.join(out, "manifest.json"), "w").write('{"format": "something else"}')
    assert_error(run(args), "bad_data", "manifest")
    # every token masked: nothing to learn
    out2 = masked_dir(10)
    m = manifest(out2)
    n = m["tokens"]
    m["masked_tokens"] = m["shards"][0]["masked_tokens"] = m["sources"][0]["masked_tokens"] = n
    open(os.path.join(out2, "manifest.json"), "w").write(json.dumps(m))
    open(os.path.join(out2, m["shards"][0]["mask"]), "wb").write(bytes(n))
    args[4] = out2
    assert_error(run(args), "bad_data", "every target of the training data is masked")
    assert_error(run(["eval", "--model", shared("stories260K.bin"), "--data", out2, "--seq", 16]), "bad_data",
                 "every target of the training data is masked")


if __name__ == "__main__":
    run_all()
