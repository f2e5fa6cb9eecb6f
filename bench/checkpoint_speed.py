#!/usr/bin/python3
"""Start-up, checkpoint save and load, and the LoRA base checksum of a 110M model against the disk's raw speed.

    /usr/bin/python3 bench/checkpoint_speed.py [--dir DIR] [--rounds 3] [--baseline OTHER_BINARY]

In DIR (default: a new directory under /var/tmp, on the disk checkpoints go to) it makes, once, a model of
`benchmark --preset 110M`'s shape (`train --init`, one step, `export`) and random token ids, then each round:
  startup    process start to the `init` message of `train --model m110.bin` (full fine-tuning: the model read,
             the weights copied, the AdamW state and gradients allocated), warm (the second such process: the
             first after the previous round's writes is reported apart), with `init`'s `setup_ms` breakdown where
             the build reports it; and in the run that saves, the start of the first step (the `step` message's
             arrival less its `ms`) and its end (the `step` message's arrival)
  save       the `checkpoint` message's `ms` after that step (1.3 GB: weights and both moments); a binary
             without it: the time between the `step` and `checkpoint` messages
  raw write  the same number of bytes written by this script in 8 MiB writes, then fsync (as the checkpoint is)
  load       `train --resume` from that checkpoint: its `init` message's `setup_ms.weights` (the checkpoint read,
             verified and copied into new buffers), and the process start to `init`; raw read: reading the
             checkpoint file into new memory of its size (what any loader must do: the page faults included),
             before the resume and after it, and through one reused 8 MiB buffer. All are warm: the file was just
             written, so it is in the page cache (this script never drops the machine's caches)
  base sum   where the build reports it, `init`'s setup_ms.base_checksum of `train --lora-rank 8` (the hash alone,
             timed inside the process; best of 3); and for every build `info --model m110.bin --lora a.ckpt`
             (which hashes the base to check it, and also opens the model) less `info --lora
             a.ckpt` (the same process without the base: loading the adapters into fresh memory alone took
             15-25 ms on this VM, as much as the hash, and was counted in before), each the best of 5 runs;
             raw read: reading m110.bin (warm) through a reused buffer of 1 or 8 MiB, the best of 5 each
The checkpoint is removed at the end of its round (so the save never replaces one), and the bench needs room for
one checkpoint and its raw peer at a time (about 3 GB with the model). Medians over the rounds are printed; with
--baseline, the other binary (e.g. main's build) runs in the same rounds, alternated, on the same model but with
its own checkpoints (they may be of another version)."""
import argparse
import json
import mmap
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NF = os.path.join(ROOT, "build", "neuralforge")
SHAPE = ["--dim", 768, "--hidden-dim", 2048, "--n-layers", 12, "--n-heads", 12, "--vocab-size", 32000,
         "--seq-len", 1024]  # cmd_benchmark.c's 110M preset
STEP = ["--steps", 1, "--batch", 1, "--seq", 16, "--val-every", 0, "--threads", 2]
CHUNK = 8 << 20


def timed_messages(argv):
    """Runs argv; returns [(seconds since the start, message)] and the exit status."""
    t0 = time.perf_counter()
    p = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = []
    for line in p.stdout:
        out.append((time.perf_counter() - t0, json.loads(line)))
    p.wait()
    if p.returncode != 0:
        sys.exit(f"{' '.join(map(str, argv))} failed: {out[-1][1] if out else ''}")
    return out, time.perf_counter() - t0


def first(msgs, kind):
    return next((t, m) for t, m in msgs if m["type"] == kind)


def raw_write(path, n):
    block = os.urandom(CHUNK)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    left = n
    while left > 0:
        left -= os.write(fd, block[:min(left, CHUNK)])
    os.fsync(fd)
    os.close(fd)
    return time.perf_counter() - t0


def raw_read(path, chunk=CHUNK):
    """Reads the file through one reused buffer of chunk bytes (what a checksum alone needs)."""
    view = memoryview(bytearray(chunk))
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(view):
            pass
    return time.perf_counter() - t0


def raw_read_fresh(path):
    """Reads the file into new memory of its size, as any loader must: a private anonymous mapping asked for in
    huge pages like nf_alloc's buffers, faulted in by the reads."""
    t0 = time.perf_counter()
    n = os.path.getsize(path)
    buf = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf.madvise(mmap.MADV_HUGEPAGE)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        at = 0
        while at < n:
            got = f.readinto(view[at:at + CHUNK])
            if not got:
                sys.exit(f"{path} is shorter than its size")
            at += got
    t = time.perf_counter() - t0
    view.release()
    buf.close()
    return t


def prepare(nf, d):
    data, model = os.path.join(d, "ts.bin"), os.path.join(d, "m110.bin")
    if not os.path.exists(data):
        ids = os.urandom(2 * 65536)
        with open(data, "wb") as f:  # tests/e2e/harness.py's token file: the header, then uint16 ids below 512
            f.write((b"\xff\xffNFTOK\0" + struct.pack("<IIQI", 1, 2, 65536, 0)).ljust(1024, b"\0"))
            f.write(struct.pack("<65536H", *[v % 512 for v in struct.unpack("<65536H", ids)]))
    if not os.path.exists(model):
        init = os.path.join(d, "init.ckpt")
        timed_messages([nf, "train", "--init", *SHAPE, "--data", data, *STEP, "--ckpt", init])
        timed_messages([nf, "export", "--ckpt", init, "--format", "llama2c", "--output", model])
        os.remove(init)
    return data, model


def time_to_init(argv):
    """Seconds from the start of argv to its `init` message (the process is killed there), and the message."""
    t0 = time.perf_counter()
    p = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    for line in p.stdout:
        msg = json.loads(line)
        if msg["type"] == "init":
            break
    t = time.perf_counter() - t0
    p.kill()
    p.wait()
    return t, msg


def one_round(nf, d, data, model):
    r = {}
    ck, lora = os.path.join(d, "c.ckpt"), os.path.join(d, "a.ckpt")
    # the first process after the previous run's gigabytes of writes is slow whichever binary it is (1.5-4.7 s
    # where the next takes 0.5): that one is reported apart, the next one is the warm start-up
    startup = [nf, "train", "--model", model, "--data", data, *STEP]
    r["startup_after_writes_s"] = time_to_init(startup)[0]
    r["startup_init_s"], init = time_to_init(startup)
    for part, ms in init.get("setup_ms", {}).items():  # this build's breakdown of the time before `init`
        r[f"setup_{part}_s"] = ms / 1000
    msgs, _ = timed_messages([nf, "train", "--model", model, "--data", data, *STEP, "--ckpt", ck])
    t_step, step = first(msgs, "step")
    t_ckpt, saved = first(msgs, "checkpoint")
    r["startup_first_step_s"] = t_step - step["ms"] / 1000
    r["first_step_end_s"] = t_step
    r["save_s"] = saved["ms"] / 1000 if "ms" in saved else t_ckpt - t_step
    r["ckpt_bytes"] = saved["bytes"]
    raw = os.path.join(d, "raw.bin")
    r["raw_write_s"] = raw_write(raw, saved["bytes"])
    os.remove(raw)
    # new memory costs what the host charges for it (docs/performance.md): memory another process freed a moment ago
    # is cheap, memory handed back to the host seconds ago is not. So the raw read into new memory runs both before
    # the resume (after the raw write, as the loader does) and after it (in the memory the resumed process freed)
    r["raw_read_fresh_before_s"] = raw_read_fresh(ck)
    msgs, _ = timed_messages([nf, "train", "--resume", "--model", model, "--data", data, *STEP[:1], 2, *STEP[2:],
                              "--ckpt", ck])
    t_init, init = first(msgs, "init")
    r["resume_init_s"] = t_init
    if "setup_ms" in init:  # the checkpoint read and verified into new buffers, timed inside the process
        r["load_s"] = init["setup_ms"]["weights"] / 1000
    r["raw_read_fresh_after_s"] = raw_read_fresh(ck)
    r["raw_read_s"] = raw_read(ck)
    os.remove(ck)  # a disk with little room holds one checkpoint and its raw peer at a time
    # the LoRA run that writes the adapters, and two more: `init`'s setup_ms.base_checksum where the build reports it
    # (the hash alone, timed in the process), the best of three
    in_process = []
    for _ in range(3):
        msgs, _ = timed_messages([nf, "train", "--model", model, "--lora-rank", 8, "--data", data, *STEP, "--ckpt",
                                  lora])
        in_process.append(first(msgs, "init")[1]["setup_ms"].get("base_checksum"))
    if None not in in_process:
        r["base_sum_in_process_s"] = min(in_process) / 1000
    # the differences are of a few tens of ms between whole processes: the best of five of each
    with_lora = min(timed_messages([nf, "info", "--model", model, "--lora", lora])[1] for _ in range(5))
    adapters_alone = min(timed_messages([nf, "info", "--lora", lora])[1] for _ in range(5))
    r["base_sum_s"] = with_lora - adapters_alone
    # the faster of two buffers: 1 MiB stays in a core's cache (the checksum's slices), 8 MiB does not
    r["base_raw_read_s"] = min(raw_read(model, chunk) for _ in range(5) for chunk in (1 << 20, CHUNK))
    r["base_bytes"] = os.path.getsize(model)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", help="another neuralforge binary, run alternated with this build's")
    a = ap.parse_args()
    top = a.dir or tempfile.mkdtemp(prefix="nf_ckpt_bench_", dir="/var/tmp")
    bins = {"this build": NF} | ({"baseline": a.baseline} if a.baseline else {})
    dirs = {name: os.path.join(top, name.replace(" ", "_")) for name in bins}
    for name, nf in bins.items():
        os.makedirs(dirs[name], exist_ok=True)
    prepared = prepare(NF, top)  # one model and token file (llama2.c's format: every version reads it)
    results = {name: [] for name in bins}
    for i in range(a.rounds):
        for name, nf in bins.items():
            results[name].append(one_round(nf, dirs[name], *prepared))
            print(f"round {i + 1} {name}: {json.dumps(results[name][-1])}", flush=True)
    for name, rs in results.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"\n{name} ({bins[name]}), medians of {len(rs)} rounds:")
        parts = ", ".join(f"{k[6:-2]} {v:.2f}" for k, v in med.items() if k.startswith("setup_"))
        print(f"  start-up: init {med['startup_init_s']:.2f} s{f' ({parts} s)' if parts else ''}; the first "
              f"process after the writes: {med['startup_after_writes_s']:.2f} s; the first step starts at "
              f"{med['startup_first_step_s']:.2f} s and ends at {med['first_step_end_s']:.2f} s")
        print(f"  save {med['save_s']:.2f} s vs raw write+fsync {med['raw_write_s']:.2f} s of "
              f"{med['ckpt_bytes'] / 1e9:.2f} GB: {med['save_s'] / med['raw_write_s']:.2f}x")
        fresh = med["raw_read_fresh_before_s"]
        load = (f"{med['load_s']:.2f} s ({med['load_s'] / fresh:.2f}x the raw read into new memory before it)"
                if "load_s" in med else "(not reported by this build)")
        print(f"  load {load}; `train --resume` to init {med['resume_init_s']:.2f} s; raw read into new memory "
              f"{fresh:.2f} s before the resume, {med['raw_read_fresh_after_s']:.2f} s after it; through a reused "
              f"buffer {med['raw_read_s']:.2f} s")
        raw = med["base_raw_read_s"]
        inside = (f"; in `train`'s setup_ms {med['base_sum_in_process_s'] * 1e3:.1f} ms: "
                  f"{med['base_sum_in_process_s'] / raw:.2f}x" if "base_sum_in_process_s" in med else "")
        print(f"  LoRA base checksum {med['base_sum_s'] * 1e3:.1f} ms (`info` with and without the base) vs raw read "
              f"(warm) {raw * 1e3:.1f} ms of {med['base_bytes'] / 1e9:.2f} GB: {med['base_sum_s'] / raw:.2f}x{inside}")
    if not a.dir:
        shutil.rmtree(top)


if __name__ == "__main__":
    main()
