"""Data-parallel `train` under mpirun (issue 20): N ranks with --accum A train
as one process with --accum N*A (full, LoRA with dropout, --zero 1, bf16,
masked data, validation), checkpoints resume across world sizes, stops and
faults end every rank with one clear message: a signal to the ranks stops
them after a checkpoint, SIGINT to mpirun leaves a loadable checkpoint that
resumes exactly, a killed or hung rank ends the job with an error naming it,
and bad input on one rank stops all with that rank's error."""
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import numpy as np

from harness import NF, assert_error, run, run_all, shared, test, tmpdir

MPIRUN = shutil.which("mpirun")
# root in CI; more ranks than cores is fine for these small models
MPI = [MPIRUN, "--allow-run-as-root", "--oversubscribe"]
_cache = {}


def mpi_run(np_, args, timeout=300, wrap=None):
    """mpirun -np np_ neuralforge ARGS: (exit status, stdout's messages, stderr)."""
    words = [NF, *map(str, args)]
    cmd = [*MPI, "-np", str(np_), *(wrap(words) if wrap else words)]
    p = subprocess.run(cmd, capture_output=True, timeout=timeout)
    return p.returncode, [json.loads(l) for l in p.stdout.decode().split("\n") if l.strip()], p.stderr.decode()


def one_run(args, timeout=300):
    r = run(args, timeout=timeout)
    assert r.rc == 0, r.stdout[-2000:]
    return r.messages


def shakespeare():
    if "sh" not in _cache:
        out = os.path.join(tmpdir(), "sh.bin")
        assert run(["tokenize", "--input", shared("tinyshakespeare.txt"), "--output", out, "--tokenizer",
                    shared("tok512.bin"), "--split", "none"]).rc == 0
        _cache["sh"] = out
    return _cache["sh"]


def masked_data():
    """An ingest directory whose prompts are masked (a loss mask in every shard)."""
    if "masked" not in _cache:
        src, out = tmpdir(), os.path.join(tmpdir(), "ingested")
        rng = np.random.default_rng(4)
        with open(os.path.join(src, "qa.jsonl"), "w") as f:
            for i in range(400):
                a, b = rng.integers(0, 100, 2)
                f.write(json.dumps({"prompt": f"Question {i}: what is {a} plus {b}?\nAnswer:",
                                    "completion": f" {a + b}."}) + "\n")
        assert run(["ingest", "--source", src, "--output", out, "--tokenizer", shared("tok512.bin")]).rc == 0
        _cache["masked"] = out
    return _cache["masked"]


# runs of different --steps share a schedule only when it does not depend on the total
CONSTANT_LR = ["--lr-schedule", "constant"]


def full_args(ckpt, steps=20, data=None, extra=()):
    return ["train", "--init", "--dim", 64, "--n-layers", 3, "--n-heads", 4, "--n-kv-heads", 2, "--vocab-size", 512,
            "--seq-len", 64, "--data", data or shakespeare(), "--steps", steps, "--batch", 4, "--seq", 64,
            "--lr", 3e-3, "--warmup", 3, "--val-split", 0.05, "--val-every", 5, "--val-batches", 3, "--seed", 7,
            "--threads", 1, "--ckpt", ckpt, *extra]


def lora_args(ckpt, steps=20, extra=()):
    return ["train", "--model", shared("stories260K.bin"), "--data", shakespeare(), "--lora-rank", 4,
            "--lora-dropout", 0.1, "--lora-targets", "q,k,v,o,gate,down,up", "--steps", steps, "--batch", 4,
            "--seq", 64, "--lr", 5e-3, "--warmup", 2, "--seed", 3, "--threads", 1, "--ckpt", ckpt, *extra]


def losses(messages, kind="step", key="loss"):
    return {m["step"]: m[key] for m in messages if m["type"] == kind}


def assert_close(a, b, tol=1e-5, what="loss"):
    assert sorted(a) == sorted(b), (sorted(a), sorted(b))
    for k in a:
        assert abs(a[k] - b[k]) <= tol * abs(b[k]), f"{what} at step {k}: {a[k]} vs {b[k]}"


def weights(ckpt, base=None):
    """Every weight of a checkpoint (merged into base for LoRA), exported as a Hugging Face directory: the
    safetensors' tensors in name order, as one float64 vector."""
    out = os.path.join(tmpdir(), "hf")
    args = ["export", "--model", base, "--lora", ckpt] if base else ["export", "--ckpt", ckpt]
    assert run([*args, "--format", "safetensors", "--output", out]).rc == 0
    parts = []
    for name in sorted(f for f in os.listdir(out) if f.endswith(".safetensors")):
        blob = open(os.path.join(out, name), "rb").read()
        n = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8:8 + n])
        for key in sorted(k for k in header if k != "__metadata__"):
            t = header[key]
            assert t["dtype"] == "F32", t
            lo, hi = t["data_offsets"]
            parts.append(np.frombuffer(blob[8 + n + lo:8 + n + hi], dtype="<f4"))
    return np.concatenate(parts).astype(np.float64)


def assert_same_weights(a, b, tol=1e-5):
    assert a.shape == b.shape
    diff = np.linalg.norm(a - b) / np.linalg.norm(b)
    assert diff < tol, diff


def compare_with_one_process(make_args, accum, extra=(), base=None, tol=1e-5, ranks_extra=()):
    """2 ranks with --accum accum against one process with --accum 2*accum: losses, validation, weights."""
    d = tmpdir()
    one = one_run(make_args(os.path.join(d, "one.ckpt"), extra=[*extra, "--accum", 2 * accum]))
    rc, two, err = mpi_run(2, make_args(os.path.join(d, "two.ckpt"), extra=[*extra, *ranks_extra, "--accum", accum]))
    assert rc == 0, err[-3000:]
    init = [m for m in two if m["type"] == "init"]
    assert len(init) == 1 and init[0]["world_size"] == 2 and len(init[0]["rank_pids"]) == 2, init
    assert init[0]["tokens_per_step"] == [m for m in one if m["type"] == "init"][0]["tokens_per_step"]
    assert not [m for m in two if m["type"] == "error"], two
    # rank 0 alone writes: its own micro-batches, one step line a step
    assert len(losses(two)) == len([m for m in two if m["type"] == "step"])
    assert {m["micro_step"] for m in two if m["type"] == "batch"} == set(range(1, accum + 1))
    assert_close(losses(two), losses(one), tol)
    assert_close(losses(two, "val", "val_loss"), losses(one, "val", "val_loss"), tol, "val_loss")
    assert_same_weights(weights(os.path.join(d, "two.ckpt"), base), weights(os.path.join(d, "one.ckpt"), base), tol)
    return one, two


@test
def two_ranks_train_as_one_process_with_twice_the_accumulation():
    one, two = compare_with_one_process(full_args, 2)
    print(f"  step 20: one process {losses(one)[20]:.6f}, 2 ranks {losses(two)[20]:.6f}")


@test
def zero_1_shards_the_optimizer_and_trains_the_same():
    compare_with_one_process(full_args, 2, ranks_extra=["--zero", 1])


def peak_rss_per_rank(extra):
    """The ranks' peak RSS in bytes (each rank run under a Python parent that reports its child's), and rank 0's
    init."""
    probe = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
             "sys.stderr.write('PEAK %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")
    args = ["train", "--init", "--dim", 512, "--n-layers", 4, "--n-heads", 8, "--vocab-size", 512, "--seq-len", 32,
            "--data", shakespeare(), "--steps", 2, "--batch", 1, "--seq", 32, "--threads", 1, *extra]
    rc, msgs, err = mpi_run(2, args, wrap=lambda words: ["/usr/bin/python3", "-c", probe, *words])
    assert rc == 0, err[-3000:]
    peaks = [int(l.split()[1]) * 1024 for l in err.split("\n") if l.startswith("PEAK ")]
    assert len(peaks) == 2, err[-2000:]
    return peaks, [m for m in msgs if m["type"] == "init"][0]


@test
def zero_1_halves_each_ranks_optimizer_memory():
    (plain, init_plain), (zero, init_zero) = peak_rss_per_rank([]), peak_rss_per_rank(["--zero", 1])
    state = 8 * init_plain["params"]  # AdamW's m and v in fp32
    assert init_plain["memory_bytes"] - init_zero["memory_bytes"] == state // 2, (init_plain, init_zero)
    overlapped, _ = peak_rss_per_rank(["--zero", 1, "--overlap", "on"])  # its bucketed sums keep the saving
    for a, b, c in zip(plain, zero, overlapped):
        assert a - b > 0.7 * state / 2 and a - c > 0.7 * state / 2, (plain, zero, overlapped, state)
    print(f"  peak RSS per rank: {[p >> 20 for p in plain]} MiB, with --zero 1 {[p >> 20 for p in zero]} MiB, "
          f"and --overlap on {[p >> 20 for p in overlapped]} MiB (m and v: {state >> 20} MiB)")


@test
def lora_with_dropout_under_two_ranks_trains_as_one_process():
    compare_with_one_process(lora_args, 2, base=shared("stories260K.bin"))
    compare_with_one_process(lora_args, 1, base=shared("stories260K.bin"), ranks_extra=["--zero", 1])


@test
def bf16_on_masked_ingest_data_under_two_ranks_trains_as_one_process():
    data = masked_data()

    def args(ckpt, extra=()):
        return full_args(ckpt, steps=12, data=data, extra=["--dtype", "bf16", *extra])

    compare_with_one_process(args, 2, tol=1e-4)


@test
def qwen3_from_scratch_and_lora_on_its_hugging_face_directory_under_two_ranks():
    """The model kinds of issue 19: a qwen3 --init, then LoRA on that model exported as a HF directory."""
    d = tmpdir()

    def qwen(ckpt, extra=()):
        return ["train", "--init", "--arch", "qwen3", "--dim", 64, "--n-layers", 2, "--n-heads", 4, "--n-kv-heads",
                2, "--head-dim", 32, "--seq-len", 64, "--tokenizer", shared("tok512.bin"), "--data", shakespeare(),
                "--steps", 10, "--batch", 4, "--seq", 64, "--lr", 3e-3, "--seed", 2, "--threads", 1, "--ckpt", ckpt,
                *extra]

    compare_with_one_process(qwen, 2)
    base = os.path.join(d, "hf")
    assert one_run(qwen(os.path.join(d, "q.ckpt"), ["--accum", 1]))
    assert run(["export", "--ckpt", os.path.join(d, "q.ckpt"), "--format", "safetensors", "--output", base]).rc == 0

    def lora(ckpt, extra=()):
        return ["train", "--model", base, "--data", shakespeare(), "--lora-rank", 4, "--steps", 10, "--batch", 4,
                "--seq", 64, "--lr", 5e-3, "--seed", 3, "--threads", 1, "--ckpt", ckpt, *extra]

    a, b = os.path.join(d, "one.ckpt"), os.path.join(d, "two.ckpt")
    one = one_run(lora(a, ["--accum", 4]))
    rc, two, err = mpi_run(2, lora(b, ["--accum", 2, "--zero", 1]))
    assert rc == 0, err[-3000:]
    assert_close(losses(two), losses(one))


def ranks_then_one(first_np, then_np, d, shuffle=True):
    """Steps 1-10 on first_np processes, 11-20 resumed on then_np, the global batch kept (accum 2 x ranks)."""
    extra = ["--shuffle", *CONSTANT_LR] if shuffle else CONSTANT_LR
    ckpt = os.path.join(d, f"{first_np}to{then_np}.ckpt")

    def go(np_, steps, more):
        args = full_args(ckpt, steps=steps, extra=[*extra, "--accum", 4 // np_, *more])
        if np_ == 1:
            return one_run(args)
        rc, msgs, err = mpi_run(np_, args)
        assert rc == 0, err[-3000:]
        return msgs

    a = go(first_np, 10, [])
    b = go(then_np, 20, ["--resume"])
    assert [m["resume_step"] for m in b if m["type"] == "init"] == [10]
    got = losses(a)
    got.update(losses(b))
    return got, ckpt


@test
def a_two_rank_checkpoint_resumes_in_one_process_and_back():
    d = tmpdir()
    whole = losses(one_run(full_args(os.path.join(d, "whole.ckpt"), extra=["--shuffle", *CONSTANT_LR, "--accum", 4])))
    two_to_one, ckpt = ranks_then_one(2, 1, d)
    assert_close(two_to_one, whole)
    one_to_two, ckpt2 = ranks_then_one(1, 2, d)
    assert_close(one_to_two, whole)
    assert_same_weights(weights(ckpt2), weights(os.path.join(d, "whole.ckpt")))


@test
def restart_every_under_two_ranks_sets_up_again_and_equals_an_uninterrupted_run():
    d = tmpdir()
    whole = one_run(full_args(os.path.join(d, "whole.ckpt"), steps=12, extra=["--accum", 4]))
    rc, msgs, err = mpi_run(2, full_args(os.path.join(d, "r.ckpt"), steps=12,
                                         extra=["--accum", 2, "--restart-every", 5]))
    assert rc == 0, err[-3000:]
    assert [m["step"] for m in msgs if m["type"] == "restart"] == [5, 10]
    assert [m["resume_step"] for m in msgs if m["type"] == "init"] == [0, 5, 10]
    assert_close(losses(msgs), losses(whole))
    assert msgs[-1]["type"] == "done" and msgs[-1]["reason"] == "completed"


class Launched:
    """mpirun -np 2 in the background, its stdout read line by line."""

    def __init__(self, args):
        self.p = subprocess.Popen([*MPI, "-np", "2", NF, *map(str, args)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.messages = []
        self.stopper = threading.Timer(120, self.p.kill)  # a hang fails the test, never the suite
        self.stopper.start()

    def until(self, pred):
        for line in self.p.stdout:
            self.messages.append(json.loads(line))
            if pred(self.messages[-1]):
                return self.messages[-1]
        raise AssertionError(f"the run ended first: {self.messages[-3:]}")

    def finish(self):
        out, err = self.p.communicate()
        self.stopper.cancel()
        self.messages += [json.loads(l) for l in out.decode().split("\n") if l.strip()]
        return self.p.returncode, err.decode()


def slow_args(ckpt, extra=()):
    """A run long enough to be stopped in its middle (~30 ms a step here)."""
    return ["train", "--init", "--dim", 128, "--n-layers", 4, "--n-heads", 4, "--vocab-size", 512, "--seq-len", 64,
            "--data", shakespeare(), "--steps", 100000, "--batch", 8, "--seq", 64, "--accum", 1, "--seed", 5,
            "--threads", 1, "--ckpt", ckpt, *extra]


@test
def sigint_to_the_ranks_stops_every_rank_after_a_checkpoint():
    ckpt = os.path.join(tmpdir(), "s.ckpt")
    run_ = Launched(slow_args(ckpt))
    init = run_.until(lambda m: m["type"] == "init")
    run_.until(lambda m: m["type"] == "step" and m["step"] == 3)
    os.kill(init["rank_pids"][1], signal.SIGINT)  # one rank's signal is enough: the ranks agree on the stop
    rc, err = run_.finish()
    assert rc == 0, err[-3000:]
    done = [m for m in run_.messages if m["type"] == "done"]
    assert len(done) == 1 and done[0]["reason"] == "interrupted", run_.messages[-3:]
    ck = [m for m in run_.messages if m["type"] == "checkpoint"][-1]
    assert ck["step"] == done[0]["total_steps"] and ck["bytes"] == os.path.getsize(ckpt)
    for pid in init["rank_pids"]:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(")")[1][1] == "Z"


@test
def sigint_to_mpirun_leaves_a_checkpoint_that_resumes_exactly():
    d = tmpdir()
    ckpt = os.path.join(d, "m.ckpt")
    args = full_args(ckpt, steps=400, extra=["--accum", 1, "--ckpt-every", 2, *CONSTANT_LR])
    run_ = Launched(args)
    run_.until(lambda m: m["type"] == "step" and m["step"] == 12)
    run_.p.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    rc, err = run_.finish()
    print(f"  mpirun ended {time.monotonic() - t0:.1f} s after SIGINT with status {rc}")
    # the checkpoint on disk is whole: it loads (at step k) ...
    k = one_run(full_args(ckpt, steps=1, extra=["--accum", 2, "--resume", *CONSTANT_LR]))[0]["resume_step"]
    assert k >= 12, k
    # ... and resuming it on 2 ranks reproduces the uninterrupted run
    rc2, resumed, err2 = mpi_run(2, full_args(ckpt, steps=k + 8, extra=["--accum", 1, "--resume", *CONSTANT_LR]))
    assert rc2 == 0, err2[-3000:]
    assert [m["resume_step"] for m in resumed if m["type"] == "init"] == [k]
    # the same ranks uninterrupted: the same bits (tens of steps of rounding apart from one process with accum
    # 2 add up to more than 1e-5 here, so that comparison belongs to the short runs above)
    rc3, whole, err3 = mpi_run(2, full_args(os.path.join(d, "whole.ckpt"), steps=k + 8,
                                            extra=["--accum", 1, *CONSTANT_LR]))
    assert rc3 == 0, err3[-3000:]
    got, want = losses(resumed), losses(whole)
    assert sorted(got) == list(range(k + 1, k + 9))
    assert got == {s: want[s] for s in got}


@test
def a_killed_rank_ends_the_job_with_an_error_naming_it():
    for lost, reporter in ((1, 0), (0, 1)):  # rank 0 lost: rank 1 says so, on its own stdout
        run_ = Launched(slow_args(os.path.join(tmpdir(), "k.ckpt")))
        init = run_.until(lambda m: m["type"] == "init")
        run_.until(lambda m: m["type"] == "step" and m["step"] == 2)
        t0 = time.monotonic()
        os.kill(init["rank_pids"][lost], signal.SIGKILL)
        rc, err = run_.finish()
        took = time.monotonic() - t0
        assert rc != 0
        errors = [m for m in run_.messages if m["type"] == "error"]
        assert len(errors) == 1, run_.messages[-3:]
        assert errors[0]["code"] == "distributed" and f"rank {lost} " in errors[0]["message"], errors
        assert errors[0]["rank"] == reporter and "lost" in errors[0]["message"]
        assert took < 30, took
        print(f"  the job ended {took:.1f} s after the kill: {errors[0]['message']}")


@test
def a_hung_rank_ends_the_job_after_the_dist_timeout():
    run_ = Launched(slow_args(os.path.join(tmpdir(), "h.ckpt"), extra=["--dist-timeout", 10]))
    init = run_.until(lambda m: m["type"] == "init")
    run_.until(lambda m: m["type"] == "step" and m["step"] == 2)
    t0 = time.monotonic()
    os.kill(init["rank_pids"][1], signal.SIGSTOP)
    try:
        rc, err = run_.finish()
    finally:
        try:
            os.kill(init["rank_pids"][1], signal.SIGKILL)
        except ProcessLookupError:
            pass
    took = time.monotonic() - t0
    assert rc != 0
    errors = [m for m in run_.messages if m["type"] == "error"]
    assert len(errors) >= 1 and errors[0]["code"] == "distributed", run_.messages[-3:]
    assert "waited 10 s" in errors[0]["message"] and "--dist-timeout" in errors[0]["message"], errors
    assert 9 < took < 60, took


@test
def bad_input_on_one_rank_stops_every_rank_with_that_ranks_error():
    d = tmpdir()
    good = os.path.join(d, "data0.bin")
    shutil.copy(shakespeare(), good)  # data1.bin is missing: rank 1's --data names it

    def per_rank(words):
        i = words.index("--data")
        words[i + 1] = os.path.join(d, "data$OMPI_COMM_WORLD_RANK.bin")
        return ["sh", "-c", "exec " + " ".join(f'"{w}"' for w in words)]

    rc, msgs, err = mpi_run(2, full_args(os.path.join(d, "b.ckpt")), wrap=per_rank)
    assert rc != 0
    errors = [m for m in msgs if m["type"] == "error"]
    assert len(errors) == 1 and errors[0]["rank"] == 1, msgs
    assert errors[0]["message"].startswith("rank 1: ") and "data1.bin" in errors[0]["message"], errors
    assert not [m for m in msgs if m["type"] == "init"]
    # the same bad flag on every rank: one error, rank 0's
    rc, msgs, err = mpi_run(2, ["train", "--init", "--data", good, "--steps", 0])
    assert rc != 0
    errors = [m for m in msgs if m["type"] == "error"]
    assert len(errors) == 1 and errors[0]["code"] == "usage" and errors[0]["rank"] == 0, msgs


@test
def only_train_runs_under_mpirun():
    rc, msgs, err = mpi_run(2, ["info", "--model", shared("stories260K.bin")])
    assert rc != 0
    assert msgs and all(m["type"] == "error" and "only train" in m["message"] for m in msgs), msgs
    # one process under mpirun is a plain run
    rc, msgs, err = mpi_run(1, ["info", "--model", shared("stories260K.bin")])
    assert rc == 0 and msgs[0]["type"] != "error", msgs


if __name__ == "__main__":
    if not MPIRUN:
        raise SystemExit("mpirun is missing: scripts/setup.sh installs openmpi-bin")
    run_all()
