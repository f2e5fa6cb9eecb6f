"""`neuralforge train` as a user runs it: learning from scratch and
fine-tuning on real text, exact resume after SIGINT and after self-restart,
checkpoints that survive kill -9, corrupt checkpoints refused, NaN stops,
export round trips, data and flag errors."""
import json
import os
import struct
import subprocess
import time

import numpy as np

from harness import (NF, PROBE, Result, assert_error, enospc_env, read_tokens, run, run_all, run_interrupted, shared,
                     test, tmpdir, xxh3_64)
from llama_ref import random_weights, write_v0

_cache = {}


def tokenized(name, split="eot"):
    """A shared text tokenized with tok512 (once per test process)."""
    key = (name, split)
    if key not in _cache:
        out = os.path.join(tmpdir(), name + ".bin")
        r = run(["tokenize", "--input", shared(name), "--output", out, "--tokenizer", shared("tok512.bin"),
                 "--split", split])
        assert r.rc == 0
        _cache[key] = out
    return _cache[key]


def random_token_file(n, seed):
    """A fresh directory holding d.bin: n random ids below 512."""
    d = tmpdir()
    data = os.path.join(d, "d.bin")
    np.random.default_rng(seed).integers(0, 512, n).astype("<u2").tofile(data)
    return d, data


def tiny_init(extra=()):
    return ["--init", "--dim", 32, "--n-layers", 2, "--n-heads", 4, "--n-kv-heads", 2, "--vocab-size", 512,
            "--seq-len", 64, *extra]


def losses(messages):
    return {m["step"]: m["loss"] for m in messages if m["type"] == "step"}


def messages_of(stdout):
    return [json.loads(l) for l in stdout.decode().split("\n") if l]


@test
def from_scratch_on_shakespeare_val_loss_falls_well_below_unigram_entropy():
    data = tokenized("tinyshakespeare.txt", "none")
    ids = np.asarray(read_tokens(data))
    counts = np.bincount(ids[: int(len(ids) * 0.9)], minlength=512).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * np.log(p)).sum())
    r = run(["train", "--init", "--dim", 64, "--n-layers", 4, "--n-heads", 4, "--vocab-size", 512,
             "--seq-len", 128, "--data", data, "--val-split", 0.1, "--steps", 150, "--batch", 16, "--lr", 5e-3,
             "--warmup", 10, "--val-every", 50, "--val-batches", 8], timeout=600)
    assert r.rc == 0, r.stderr
    vals = [m["val_loss"] for m in r.of_type("val")]
    print(f"  unigram entropy {entropy:.3f} nats; val losses {[round(v, 3) for v in vals]}")
    assert vals[-1] < entropy - 1.0, (vals, entropy)
    assert vals == sorted(vals, reverse=True)
    done = r.one("done")
    assert done["reason"] == "completed" and done["total_steps"] == 150
    assert abs(done["best_val_loss"] - min(vals)) < 1e-9


@test
def bf16_training_ends_within_one_percent_of_fp32():
    # fine-tuning stories260K for 200 steps: a run whose loss is settling, so the comparison measures
    # precision, not where two chaotic trajectories of a from-scratch run happen to be
    args = ["train", "--model", shared("stories260K.bin"), "--data", tokenized("tinystories_train_2MiB.txt"),
            "--val-split", 0.05, "--steps", 200, "--batch", 8, "--seq", 128, "--lr", 5e-4, "--warmup", 10,
            "--val-every", 200, "--val-batches", 16]
    fp32, bf16 = run(args, timeout=600), run([*args, "--dtype", "bf16"], timeout=600)
    assert fp32.rc == 0 and bf16.rc == 0, bf16.stdout
    a, b = fp32.one("val")["val_loss"], bf16.one("val")["val_loss"]
    print(f"  val loss after 200 steps: fp32 {a:.5f}, bf16 {b:.5f} ({100 * (b / a - 1):+.3f}%)")
    assert abs(b / a - 1) < 0.01
    assert bf16.of_type("step")[0]["loss"] != fp32.of_type("step")[0]["loss"]  # the bf16 path really ran


@test
def finetuning_stories260k_starts_near_its_loss_and_improves():
    ids = np.asarray(read_tokens(tokenized("tinystories_train_2MiB.txt")), dtype="<u2")
    cut = int(np.nonzero(ids[int(len(ids) * 0.9):] == 1)[0][0] + int(len(ids) * 0.9))  # at a story's BOS
    d = tmpdir()
    train, val = os.path.join(d, "train.bin"), os.path.join(d, "val.bin")
    ids[:cut].tofile(train)
    ids[cut:].tofile(val)
    model = shared("stories260K.bin")
    before = run(["eval", "--model", model, "--data", val, "--batch", 8, "--seq", 256, "--batches", 8]).one("eval")
    r = run(["train", "--model", model, "--data", train, "--val-data", val, "--steps", 60, "--batch", 8,
             "--seq", 256, "--lr", 5e-5, "--warmup", 10, "--weight-decay", 0, "--val-every", 20,
             "--val-batches", 8], timeout=600)
    assert r.rc == 0, r.stderr
    steps = [m["loss"] for m in r.of_type("step")]
    vals = [m["val_loss"] for m in r.of_type("val")]
    print(f"  first step loss {steps[0]:.3f}; val {before['loss']:.4f} -> {[round(v, 4) for v in vals]}")
    assert steps[0] < 1.8, steps[0]          # the reported loss is ~1.3 on the full validation split
    assert before["loss"] < 1.6
    assert vals[-1] < before["loss"], (before["loss"], vals)
    assert np.mean(steps[-20:]) < np.mean(steps[:20])


def train_args(ckpt, data, steps=24, extra=()):
    return ["train", *tiny_init(), "--data", data, "--steps", steps, "--batch", 8, "--seq", 64, "--lr", 2e-3,
            "--warmup", 4, "--val-split", 0.05, "--val-every", 6, "--val-batches", 2, "--ckpt", ckpt, *extra]


def export_weights(ckpt):
    out = os.path.join(tmpdir(), "w.bin")
    assert run(["export", "--ckpt", ckpt, "--output", out]).rc == 0
    return open(out, "rb").read()


@test
def sigint_then_resume_equals_an_uninterrupted_run():
    data = tokenized("tinyshakespeare.txt", "none")
    d = tmpdir()
    full_ckpt, part_ckpt = os.path.join(d, "full.ckpt"), os.path.join(d, "part.ckpt")
    full = run(train_args(full_ckpt, data, extra=["--shuffle"]))
    assert full.rc == 0
    rc, first = run_interrupted(train_args(part_ckpt, data, extra=["--shuffle"]), at_step=5)
    assert rc == 0
    done = [m for m in first if m["type"] == "done"][0]
    assert done["reason"] == "interrupted"
    k = done["total_steps"]
    assert 5 <= k < 24
    ck = [m for m in first if m["type"] == "checkpoint"][-1]
    assert ck["step"] == k and ck["path"] == part_ckpt and ck["bytes"] == os.path.getsize(part_ckpt)
    resumed = run(train_args(part_ckpt, data, extra=["--shuffle", "--resume"]))
    assert resumed.rc == 0
    assert resumed.one("init")["resume_step"] == k
    a, b = losses(full.messages), losses(first)
    b.update(losses(resumed.messages))
    assert sorted(b) == list(range(1, 25)), (sorted(b), k, [m for m in first if m["type"] in ("checkpoint", "done")])
    assert a == b
    assert [m["val_loss"] for m in full.of_type("val")][-1] == resumed.of_type("val")[-1]["val_loss"]
    assert export_weights(full_ckpt) == export_weights(part_ckpt)  # bit for bit


@test
def restart_every_re_executes_in_place_and_equals_an_uninterrupted_run():
    data = tokenized("tinyshakespeare.txt", "none")
    d = tmpdir()
    full = run(train_args(os.path.join(d, "full.ckpt"), data))
    p = subprocess.Popen([NF, *map(str, train_args(os.path.join(d, "r.ckpt"), data, extra=["--restart-every", 7]))],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0
    msgs = messages_of(out)
    restarts = [m for m in msgs if m["type"] == "restart"]
    assert [m["step"] for m in restarts] == [7, 14, 21]
    inits = [m for m in msgs if m["type"] == "init"]
    assert [m["resume_step"] for m in inits] == [0, 7, 14, 21]
    assert {m["pid"] for m in inits} == {p.pid}  # the same process, re-executed
    assert losses(msgs) == losses(full.messages)
    assert msgs[-1]["type"] == "done" and msgs[-1]["reason"] == "completed"
    assert export_weights(os.path.join(d, "full.ckpt")) == export_weights(os.path.join(d, "r.ckpt"))


@test
def kill_9_while_checkpointing_leaves_a_loadable_checkpoint():
    data = tokenized("tinyshakespeare.txt", "none")
    d = tmpdir()
    ckpt = os.path.join(d, "c.ckpt")
    # a wide model and tiny batches: most of the time goes into writing checkpoints
    args = ["train", "--init", "--dim", 256, "--n-layers", 4, "--n-heads", 4, "--vocab-size", 512,
            "--seq-len", 16, "--data", data, "--steps", 100000, "--batch", 1, "--seq", 8, "--ckpt", ckpt,
            "--ckpt-every", 1, "--val-every", 0]
    rng = np.random.default_rng(0)
    for attempt in range(6):
        p = subprocess.Popen([NF, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if attempt == 0 or not os.path.exists(ckpt):
            for line in p.stdout:  # wait for the first checkpoint
                if json.loads(line)["type"] == "checkpoint":
                    break
        time.sleep(float(rng.uniform(0.05, 0.6)))
        p.kill()
        p.wait()
        r = run(["eval", "--ckpt", ckpt, "--data", data, "--batch", 1, "--seq", 8, "--batches", 1])
        assert r.rc == 0, (attempt, r.stdout)
    leftovers = [f for f in os.listdir(d) if f != "c.ckpt"]
    print(f"  temporary files left by kill -9: {leftovers}")


@test
def a_closed_stdout_stops_the_run_with_a_checkpoint_and_the_rest_goes_to_stderr():
    # what an orphaned dashboard run sees when its server dies: the reader of its stdout is gone
    data = tokenized("tinyshakespeare.txt", "none")
    ckpt = os.path.join(tmpdir(), "c.ckpt")
    p = subprocess.Popen([NF, *map(str, train_args(ckpt, data, steps=100000))], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    seen = []
    for line in p.stdout:
        seen.append(json.loads(line))
        if seen[-1]["type"] == "step" and seen[-1]["step"] == 5:
            break
    p.stdout.close()
    err = p.stderr.read().decode()
    rc = p.wait(timeout=120)
    assert rc == 0, (rc, err[-2000:])  # not killed by SIGPIPE
    lines = err.split("\n")
    note = f"neuralforge: the NDJSON messages of process {p.pid} from here on are on stderr"
    assert note in lines, err[-2000:]
    later = [json.loads(l) for l in lines[lines.index(note) + 1:] if l.startswith("{")]
    assert later and later[-1]["type"] == "done" and later[-1]["reason"] == "interrupted", later[-3:]
    k = later[-1]["total_steps"]
    assert k >= 5 and later[-2] == {"type": "checkpoint", "path": ckpt, "step": k, "loss": later[-2]["loss"],
                                    "bytes": os.path.getsize(ckpt), "ms": later[-2]["ms"]}, later[-3:]
    assert later[-2]["ms"] > 0, later[-2]
    resumed = run(train_args(ckpt, data, steps=k + 1, extra=["--resume"]))
    assert resumed.rc == 0 and resumed.one("init")["resume_step"] == k


@test
def ckpt_minutes_checkpoints_on_the_clock():
    data = tokenized("tinyshakespeare.txt", "none")
    ckpt = os.path.join(tmpdir(), "c.ckpt")
    r = run(train_args(ckpt, data, steps=60, extra=["--ckpt-minutes", 0.0002]))  # every 12 ms or more
    assert r.rc == 0
    steps = [m["step"] for m in r.of_type("checkpoint")]
    assert len(steps) >= 2 and steps[-1] == 60 and steps == sorted(set(steps)), steps
    none = run(train_args(ckpt, data, steps=60))  # off by default: the final checkpoint only
    assert [m["step"] for m in none.of_type("checkpoint")] == [60]


@test
def a_full_disk_during_a_checkpoint_keeps_the_previous_one():
    data = tokenized("tinyshakespeare.txt", "none")
    d = tmpdir()
    ckpt = os.path.join(d, "c.ckpt")
    first = run(train_args(ckpt, data, steps=2))
    assert first.rc == 0
    before = open(ckpt, "rb").read()
    size = len(before)
    # the disk fills in the middle of the next checkpoint's write; or every write fits and fsync fails
    for env in (enospc_env(os.path.join(d, "c.ckpt*"), after=size // 2),
                enospc_env(os.path.join(d, "c.ckpt*"), after=10 * size, fsync=True)):
        r = run(train_args(ckpt, data, steps=6, extra=["--resume", "--ckpt-every", 2]), env=env)
        err = assert_error(r, "io")
        assert f"'{ckpt}'" in err["message"] and "no space left on device" in err["message"].lower(), err
        assert r.of_type("checkpoint") == [] and r.of_type("step")[-1]["step"] == 4
        assert open(ckpt, "rb").read() == before
        assert sorted(os.listdir(d)) == ["c.ckpt"], os.listdir(d)  # no temporary file left
    # an export too: the earlier file stays, nothing else is left
    out = os.path.join(d, "m.bin")
    assert run(["export", "--ckpt", ckpt, "--output", out]).rc == 0
    exported = open(out, "rb").read()
    r = run(["export", "--ckpt", ckpt, "--output", out], env=enospc_env(out + "*", after=1000))
    err = assert_error(r, "io")
    assert f"'{out}'" in err["message"] and "no space left on device" in err["message"].lower(), err
    assert open(out, "rb").read() == exported and sorted(os.listdir(d)) == ["c.ckpt", "m.bin"]


def corrupt_variants(path):
    good = open(path, "rb").read()
    mid = len(good) // 2
    return {
        "truncated": good[:-100],
        "bit_flipped": good[:mid] + bytes([good[mid] ^ 0x10]) + good[mid + 1:],
        "header_flipped": good[:50] + bytes([good[50] ^ 1]) + good[51:],
        "config_flipped": good[:16] + bytes([good[16] ^ 0x40]) + good[17:],
        "empty": b"",
        "not_a_checkpoint": b"hello world, definitely not a checkpoint" * 10,
    }


@test
def corrupt_checkpoints_are_refused_never_replaced():
    data = tokenized("tinyshakespeare.txt", "none")
    d = tmpdir()
    good = os.path.join(d, "good.ckpt")
    assert run(train_args(good, data, steps=3)).rc == 0
    for name, blob in corrupt_variants(good).items():
        bad = os.path.join(d, name + ".ckpt")
        with open(bad, "wb") as f:
            f.write(blob)
        r = run(train_args(bad, data, steps=6, extra=["--resume"]))
        assert_error(r, "bad_checkpoint" if blob else None, "checksum" if name.endswith("flipped") else None)
        assert r.of_type("step") == [], name  # no silent fresh start
        assert open(bad, "rb").read() == blob, name  # and the file is left alone
        for cmd in (["eval", "--ckpt", bad, "--data", data, "--seq", 8, "--batches", 1],
                    ["generate", "--ckpt", bad, "--tokenizer", shared("tok512.bin"), "--max-tokens", 2],
                    ["export", "--ckpt", bad, "--output", os.path.join(d, "x.bin")]):
            assert_error(run(cmd))


@test
def resume_without_a_checkpoint_is_an_error():
    data = tokenized("tinyshakespeare.txt", "none")
    assert_error(run(train_args(os.path.join(tmpdir(), "none.ckpt"), data, extra=["--resume"])), "io")


@test
def nan_loss_stops_with_an_error_and_keeps_the_last_checkpoint():
    data = tokenized("tinyshakespeare.txt", "none")
    d = tmpdir()
    ckpt = os.path.join(d, "c.ckpt")
    assert run(train_args(ckpt, data, steps=2)).rc == 0
    # poison one weight and re-seal the file with its checksum (version 3: XXH3-64)
    blob = bytearray(open(ckpt, "rb").read())
    options_len = struct.unpack_from("<I", blob, 112)[0]
    struct.pack_into("<f", blob, 120 + 64 + options_len + 4 * 100, float("inf"))
    struct.pack_into("<Q", blob, len(blob) - 8, xxh3_64(bytes(blob[:-8])))
    open(ckpt, "wb").write(blob)
    before = bytes(blob)
    r = run(train_args(ckpt, data, steps=6, extra=["--resume"]))
    err = assert_error(r, "training_diverged")
    assert "step 3" in err["message"]
    assert open(ckpt, "rb").read() == before


@test
def exported_checkpoint_gives_identical_logits():
    data = tokenized("tinyshakespeare.txt", "none")
    d = tmpdir()
    for sep in ([], ["--separate-classifier"]):
        ckpt, exported = os.path.join(d, "c.ckpt"), os.path.join(d, "e.bin")
        assert run(train_args(ckpt, data, steps=3, extra=sep)).rc == 0
        e = run(["export", "--ckpt", ckpt, "--format", "llama2c", "--output", exported]).one("export")
        assert e["bytes"] == os.path.getsize(exported)
        hdr = struct.unpack("7i", open(exported, "rb").read(28))
        assert hdr[5] == (-512 if sep else 512)  # llama2.c's sign convention for the classifier
        tokens = ["1", "40", "300", "7", "99", "2", "511"]
        outs = []
        for src in (ckpt, exported):
            path = os.path.join(d, "l.f32")
            subprocess.run([PROBE, "logits", src, path, *tokens], check=True)
            outs.append(open(path, "rb").read())
        assert outs[0] == outs[1]
        g = [run(["generate", src, path, "--tokenizer", shared("tok512.bin"), "--temperature", 0,
                  "--max-tokens", 20]).of_type("token") for src, path in (("--ckpt", ckpt), ("--model", exported))]
        assert g[0] == g[1]


@test
def shuffle_visits_every_window_once_per_epoch():
    d = tmpdir()
    data = os.path.join(d, "d.bin")
    np.arange(1, 8 * 10 + 2, dtype="<u2").tofile(data)  # 81 tokens: 10 windows of 8 (+1)
    r = run(["train", *tiny_init(), "--data", data, "--steps", 10, "--batch", 2, "--seq", 8, "--shuffle",
             "--val-every", 0])
    assert r.rc == 0
    assert [s["epoch"] for s in r.of_type("step")] == [0] * 5 + [1] * 5


@test
def config_file_sets_flags_and_command_line_wins():
    d, data = random_token_file(500, seed=1)
    cfg = os.path.join(d, "c.json")
    json.dump({"init": True, "dim": 32, "n-layers": 1, "n-heads": 2, "vocab-size": 512, "seq-len": 32,
               "data": [data], "steps": 3, "batch": 2, "lr": 0.01, "val-every": 0}, open(cfg, "w"))
    r = run(["train", "--config", cfg, "--steps", 2])
    assert r.rc == 0, r.stdout
    assert r.one("init")["config"]["dim"] == 32 and r.one("init")["total_steps"] == 2
    assert r.of_type("step")[0]["lr"] > 0
    json.dump({"init": True, "bogus-key": 1}, open(cfg, "w"))
    assert_error(run(["train", "--config", cfg]), "usage", "bogus-key")
    json.dump({"steps": "many"}, open(cfg, "w"))
    assert_error(run(["train", "--config", cfg, "--init", "--data", data]), "usage", "steps")
    open(cfg, "w").write('{"steps": 2, "steps": 3}')
    assert_error(run(["train", "--config", cfg, "--init", "--data", data]), "usage", "duplicate object key")
    open(cfg, "w").write("{not json")
    assert_error(run(["train", "--config", cfg]), "usage", "JSON")


@test
def keep_last_keeps_that_many_stamped_checkpoints():
    d, data = random_token_file(500, seed=2)
    ckpt = os.path.join(d, "run.ckpt")
    r = run(["train", *tiny_init(), "--data", data, "--steps", 10, "--batch", 1, "--seq", 8, "--ckpt", ckpt,
             "--ckpt-every", 2, "--keep-last", 3, "--val-every", 0])
    assert r.rc == 0
    assert [m["step"] for m in r.of_type("checkpoint")] == [2, 4, 6, 8, 10]
    assert sorted(os.listdir(d)) == ["d.bin", "run.ckpt", "run.ckpt.step-000000006", "run.ckpt.step-000000008",
                                     "run.ckpt.step-000000010"]
    # a resume on another --ckpt-every grid prunes the older run's files too
    r = run(["train", *tiny_init(), "--data", data, "--steps", 16, "--batch", 1, "--seq", 8, "--ckpt", ckpt,
             "--ckpt-every", 3, "--keep-last", 2, "--val-every", 0, "--resume"])
    assert r.rc == 0
    assert [m["step"] for m in r.of_type("checkpoint")] == [12, 15, 16]
    assert sorted(os.listdir(d)) == ["d.bin", "run.ckpt", "run.ckpt.step-000000015", "run.ckpt.step-000000016"]
    # a new run on the same path: later steps of the old run and names it did not write are not its to prune
    open(os.path.join(d, "run.ckpt.step-4"), "wb").write(b"not ours")
    r = run(["train", *tiny_init(), "--data", data, "--steps", 3, "--batch", 1, "--seq", 8, "--ckpt", ckpt,
             "--ckpt-every", 1, "--keep-last", 2, "--val-every", 0])
    assert r.rc == 0 and [m["step"] for m in r.of_type("checkpoint")] == [1, 2, 3]
    assert sorted(os.listdir(d)) == ["d.bin", "run.ckpt", "run.ckpt.step-000000002", "run.ckpt.step-000000003",
                                     "run.ckpt.step-000000015", "run.ckpt.step-000000016", "run.ckpt.step-4"]


@test
def resume_reports_the_flags_that_differ_from_the_checkpoints_run():
    d, data = random_token_file(2000, seed=4)
    ckpt = os.path.join(d, "run.ckpt")
    base = ["train", *tiny_init(), "--data", data, "--batch", 2, "--ckpt", ckpt, "--val-every", 0, "--shuffle"]
    assert run([*base, "--seq", 16, "--steps", 3]).rc == 0
    same = run([*base, "--seq", 16, "--steps", 3, "--resume"])
    assert same.rc == 0 and same.one("init")["changed_flags"] == []
    changed = run([*base, "--seq", 16, "--steps", 5, "--lr", 0.01, "--resume"])
    assert changed.rc == 0, changed.stdout
    assert changed.one("init")["changed_flags"] == ["steps", "lr"]
    assert "--lr" in changed.stderr.decode()
    assert "changed_flags" not in run([*base, "--seq", 16, "--steps", 1]).one("init")
    # a shuffle position that longer windows do not have cannot be restored
    assert run([*base, "--seq", 4, "--steps", 40, "--resume"]).rc == 0
    assert_error(run([*base, "--seq", 64, "--steps", 41, "--resume"]), "bad_checkpoint", "position")


@test
def val_data_directory_is_all_validation():
    d = tmpdir()
    rng = np.random.default_rng(5)
    train = os.path.join(d, "train.bin")
    rng.integers(0, 512, 1000).astype("<u2").tofile(train)
    val_dir = os.path.join(d, "val")
    os.mkdir(val_dir)
    for name, n in (("a.bin", 300), ("b.bin", 200)):
        rng.integers(0, 512, n).astype("<u2").tofile(os.path.join(val_dir, name))
    r = run(["train", *tiny_init(), "--data", train, "--val-data", val_dir, "--steps", 1, "--batch", 1, "--seq", 8])
    assert r.rc == 0
    init = r.one("init")
    assert (init["train_tokens"], init["val_tokens"]) == (1000, 500)


@test
def bad_data_and_flags_are_refused_with_the_reason():
    d = tmpdir()
    bad_ids = os.path.join(d, "ids.bin")
    np.array([1, 5, 600, 7] * 50, dtype="<u2").tofile(bad_ids)
    assert_error(run(["train", *tiny_init(), "--data", bad_ids]), "bad_data", "600")
    odd = os.path.join(d, "odd.bin")
    open(odd, "wb").write(b"\x01\x00\x02")
    assert_error(run(["train", *tiny_init(), "--data", odd]), "bad_data", "odd")
    short = os.path.join(d, "short.bin")
    np.array([1, 2, 3], dtype="<u2").tofile(short)
    assert_error(run(["train", *tiny_init(), "--data", short]), "bad_data")
    assert_error(run(["train", *tiny_init(), "--data", os.path.join(d, "missing.bin")]), "io")
    good = os.path.join(d, "good.bin")
    np.random.default_rng(3).integers(0, 512, 500).astype("<u2").tofile(good)
    for extra, flag in ((["--lr", "0"], "--lr"), (["--batch", "0"], "--batch"), (["--steps", "-1"], "--steps"),
                        (["--val-split", "0.95"], "--val-split"), (["--lr-schedule", "step"], "--lr-schedule"),
                        (["--seq", "65"], "--seq"), (["--resume"], "--ckpt"), (["--wat"], "--wat"),
                        (["--beta2", "1"], "--beta2"), (["--ckpt-every", "5"], "--ckpt"),
                        (["--keep-last", "3"], "--ckpt"), (["--ckpt-minutes", "5"], "--ckpt"),
                        (["--ckpt-minutes", "-1"], "--ckpt-minutes")):
        assert_error(run(["train", *tiny_init(), "--data", good, *extra]), mention=flag)
    assert_error(run(["train", "--init", "--dim", 30, "--n-heads", 4, "--vocab-size", 512, "--data", good]),
                 "usage", "n_heads")
    assert_error(run(["train", "--data", good]), "usage", "--init")
    assert_error(run(["train", *tiny_init(), "--model", shared("stories260K.bin"), "--data", good]), "usage")


def machine_memory():
    """MemTotal in bytes."""
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024


def run_with_peak(args):
    """Runs the CLI; returns (Result, its peak RSS in bytes, from wait4). A plain fork: subprocess's
    vfork would hand the child this test process's own peak at exec (Linux keeps the higher)."""
    out = os.path.join(tmpdir(), "stdout")
    pid = os.fork()
    if pid == 0:
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 1)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
            os.execv(NF, [NF] + [str(a) for a in args])
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    return Result(os.waitstatus_to_exitcode(status), open(out, "rb").read(), b""), usage.ru_maxrss * 1024


@test
def an_oversized_shape_is_refused_before_anything_large_is_allocated():
    d, _ = random_token_file(4096, 41)
    shape = ["--init", "--dim", 8192, "--n-layers", 48, "--n-heads", 64, "--vocab-size", 512, "--data", d]
    # 38.7 billion weights: 577 GiB of weights, gradients and AdamW state before activations
    r, peak = run_with_peak(["train", *shape, "--max-memory", "8G"])
    err = assert_error(r, "out_of_memory", "--max-memory")
    assert "more than the memory budget of 8.0 GiB" in err["message"], err
    needs = float(err["message"].split("needs about ")[1].split(" GiB")[0])
    assert 590 < needs < 600, err  # 4 x 4 bytes x 38.7e9 weights + 17.8 GiB of activations
    assert peak < 200 << 20, f"peak RSS {peak >> 20} MiB: something large was allocated"
    if machine_memory() * 0.8 < 590 * 2**30:  # the default budget: 80% of this machine's memory
        r, peak = run_with_peak(["train", *shape])
        err = assert_error(r, "out_of_memory", "--max-memory")
        budget = float(err["message"].split("memory budget of ")[1].split(" GiB")[0])
        assert budget * 2**30 < machine_memory() * 0.8 + 0.06 * 2**30, err  # or less, under a cgroup limit
        assert peak < 200 << 20
    # a budget is a size; none lifts it
    assert_error(run(["train", *shape, "--max-memory", "lots"]), "usage", "--max-memory")
    assert_error(run(["train", *shape, "--max-memory", "-1G"]), "usage", "--max-memory")


@test
def init_says_where_the_setup_time_went():
    d, _ = random_token_file(20000, 7)
    ckpt = os.path.join(tmpdir(), "s.ckpt")
    args = ["train", "--init", "--dim", 64, "--n-layers", 2, "--n-heads", 4, "--vocab-size", 512, "--seq-len", 64,
            "--batch", 2, "--seq", 32, "--val-every", 0, "--steps", 1, "--data", d, "--ckpt", ckpt]
    for argv in (args, args[:-6] + ["--steps", 2, "--data", d, "--ckpt", ckpt, "--resume"]):
        start = time.perf_counter()
        r = run(argv)
        wall_ms = (time.perf_counter() - start) * 1000
        assert r.rc == 0, r.messages
        setup = r.one("init")["setup_ms"]
        assert set(setup) == {"weights", "state", "data", "activations"}, setup
        assert all(isinstance(v, (int, float)) and v >= 0 for v in setup.values()), setup
        assert sum(setup.values()) < wall_ms, (setup, wall_ms)  # parts of this process's own time
    assert setup["weights"] > 0, setup  # the resumed run read and verified its checkpoint


@test
def the_memory_estimate_is_within_fifteen_percent_of_the_peak_rss():
    d, _ = random_token_file(200000, 42)
    args = ["train", "--init", "--dim", 256, "--n-layers", 4, "--n-heads", 4, "--vocab-size", 4096, "--seq-len", 256,
            "--batch", 8, "--val-every", 0, "--steps", 2, "--data", d]
    r, peak = run_with_peak(args)
    assert r.rc == 0, r.messages
    init = r.one("init")
    assert 0 < init["memory_bytes"] < init["max_memory"] <= machine_memory(), init  # the default budget fits it
    assert 0.85 < init["memory_bytes"] / peak < 1.15, (init["memory_bytes"] >> 20, peak >> 20)
    # a budget just below the estimate refuses the same run; none lifts any budget
    below = f"{init['memory_bytes'] // 1024 - 1024}K"
    assert_error(run(args + ["--max-memory", below]), "out_of_memory", "--max-memory")
    r = run(args[:-4] + ["--max-memory", "none", "--steps", 1, "--data", d])
    assert r.rc == 0 and r.one("init")["max_memory"] == 0


if __name__ == "__main__":
    run_all()
