"""`train --processes N`: the launcher around mpirun (src/launch.c). The run it
starts is the data-parallel one (the losses of one process with N times the
accumulation); a stop signal to it reaches the ranks, which checkpoint and
end cleanly (also when its supervisor dies with its stdout); the ranks share
the run's threads; --processes under mpirun must match -np; a missing or
failing mpirun is one error. And the dashboard: a project's `processes`
option runs such a launcher, whose run shows world_size 2 and stops cleanly."""
import ctypes
import json
import os
import shutil
import signal
import subprocess
import threading
import time

from harness import NF, Serve, assert_error, run, run_all, test, tmpdir, write_tokens

ROOT_USER = os.geteuid() == 0
MPIRUN = ["mpirun", "--oversubscribe"] + (["--allow-run-as-root"] if ROOT_USER else [])
TINY = ["--init", "--dim", "32", "--n-layers", "2", "--n-heads", "4", "--vocab-size", "256", "--seq-len", "64",
        "--seq", "32", "--batch", "2", "--lr", "3e-3", "--seed", "7"]
# a step of about 50 ms: a signal lands mid-run, not after the last step
SLOW = ["--init", "--dim", "128", "--n-layers", "4", "--n-heads", "4", "--vocab-size", "256", "--seq-len", "64",
        "--batch", "8", "--steps", "100000"]


def need_mpirun():
    assert shutil.which("mpirun"), "mpirun is missing: scripts/setup.sh installs openmpi-bin"


def token_data(d, n=40000):
    path = os.path.join(d, "train.bin")
    write_tokens(path, [(i * 7919 + i // 13) % 256 for i in range(n)])
    return path


def step_losses(r):
    return [m["loss"] for m in r.of_type("step")]


def alive(pid):
    """Whether pid is a live process (not a zombie)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def environ(pid):
    raw = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    return dict(e.decode(errors="replace").split("=", 1) for e in raw if b"=" in e)


def follow(p, until, timeout=120):
    """Reads p's NDJSON stdout until until(messages) holds (then returns them) or the stream ends."""
    watchdog = threading.Timer(timeout, p.kill)
    watchdog.start()
    messages = []
    try:
        for line in p.stdout:
            messages.append(json.loads(line))
            if until(messages):
                return messages
    finally:
        watchdog.cancel()
    return messages


def steps_seen(n):
    return lambda ms: sum(m["type"] == "step" for m in ms) >= n


def rest(p, messages, timeout=120):
    """The rest of p's stream after messages, and its exit status."""
    out, _ = p.communicate(timeout=timeout)
    return messages + [json.loads(line) for line in out.decode().splitlines() if line], p.returncode


def resumed_step(d, data, ckpt):
    """The step a one-process resume of ckpt starts from (the checkpoint loads)."""
    r = run(["train"] + SLOW[:-2] + ["--steps", "1", "--data", data, "--ckpt", ckpt, "--resume", "--threads", "1"])
    assert r.rc == 0, (r.stdout[-2000:], r.stderr[-2000:])
    return r.one("init")["resume_step"]


@test
def two_processes_give_the_losses_of_one_with_twice_the_accumulation():
    need_mpirun()
    d = tmpdir()
    data = token_data(d)
    common = ["train"] + TINY + ["--data", data, "--steps", "12", "--threads", "1"]
    launched = run(common + ["--processes", "2", "--accum", "2"], timeout=300)
    single = run(common + ["--accum", "4"], timeout=300)
    assert launched.rc == 0 and single.rc == 0, (launched.stdout[-2000:], launched.stderr[-3000:])
    init = launched.one("init")
    assert init["world_size"] == 2 and len(init["rank_pids"]) == 2, init
    assert init["tokens_per_step"] == single.one("init")["tokens_per_step"], init
    a, b = step_losses(launched), step_losses(single)
    assert len(a) == len(b) == 12, (a, b)
    for x, y in zip(a, b):
        assert abs(x - y) <= 1e-5 * abs(y), (a, b)
    assert launched.one("done")["reason"] == "completed"
    assert launched.of_type("error") == []


@test
def sigint_to_the_launcher_stops_every_rank_after_a_checkpoint():
    need_mpirun()
    d = tmpdir()
    data, ckpt = token_data(d, 200000), os.path.join(d, "run.ckpt")
    p = subprocess.Popen([NF, "train"] + SLOW + ["--data", data, "--ckpt", ckpt, "--processes", "2"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    messages = follow(p, steps_seen(3))
    ranks = next(m for m in messages if m["type"] == "init")["rank_pids"]
    p.send_signal(signal.SIGINT)
    messages, rc = rest(p, messages)
    done = messages[-1]
    assert rc == 0 and done["type"] == "done" and done["reason"] == "interrupted", (rc, messages[-3:])
    checkpoint = [m for m in messages if m["type"] == "checkpoint"][-1]
    assert checkpoint["step"] == done["total_steps"] >= 3, (checkpoint, done)
    assert not any(alive(r) for r in ranks), ranks
    assert resumed_step(d, data, ckpt) == done["total_steps"]


@test
def a_supervisor_dying_leaves_the_ranks_stream_on_stderr_and_a_checkpoint():
    # as the dashboard starts runs: PR_SET_PDEATHSIG = SIGINT, stdout a pipe to the supervisor; when it dies
    # the launcher gets SIGINT and its stdout breaks: mpirun, whose own stdout would break, must not abort
    need_mpirun()
    d = tmpdir()
    data, ckpt, log = token_data(d, 200000), os.path.join(d, "run.ckpt"), os.path.join(d, "run.log")
    libc = ctypes.CDLL(None, use_errno=True)
    with open(log, "wb") as err:
        p = subprocess.Popen([NF, "train"] + SLOW + ["--data", data, "--ckpt", ckpt, "--processes", "2"],
                             stdout=subprocess.PIPE, stderr=err, preexec_fn=lambda: libc.prctl(1, signal.SIGINT))
    messages = follow(p, steps_seen(3))
    ranks = next(m for m in messages if m["type"] == "init")["rank_pids"]
    p.stdout.close()  # the supervisor's end of the pipe goes with it
    p.send_signal(signal.SIGINT)  # what its death sends
    assert p.wait(timeout=120) == 0
    assert not any(alive(r) for r in ranks), ranks
    text = open(log, "rb").read().decode(errors="replace")
    note = f"neuralforge: the NDJSON messages of process {p.pid} from here on are on stderr"
    assert note in text, text[-3000:]
    after = [json.loads(line) for line in text.split(note, 1)[1].splitlines() if line.startswith('{"type":')]
    done = after[-1]
    assert done["type"] == "done" and done["reason"] == "interrupted", after[-3:]
    assert [m for m in after if m["type"] == "checkpoint"][-1]["step"] == done["total_steps"], after[-3:]
    assert resumed_step(d, data, ckpt) == done["total_steps"]


@test
def the_ranks_share_the_launchers_threads():
    need_mpirun()
    d = tmpdir()
    data = token_data(d, 200000)
    for env_threads, flag, expected in (("2", [], "1"), ("5", [], "2"), ("2", ["--threads", "3"], "2")):
        env = dict(os.environ, OMP_NUM_THREADS=env_threads)
        p = subprocess.Popen([NF, "train"] + SLOW + ["--data", data, "--processes", "2"] + flag,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        try:
            messages = follow(p, steps_seen(1))
            ranks = next(m for m in messages if m["type"] == "init")["rank_pids"]
            seen = [environ(r).get("OMP_NUM_THREADS") for r in ranks]
            assert seen == [expected, expected], (env_threads, flag, seen)
            p.send_signal(signal.SIGINT)
            _, rc = rest(p, messages)
            assert rc == 0
        finally:
            if p.poll() is None:
                p.kill()


@test
def processes_under_mpirun_must_match_the_world_size():
    need_mpirun()
    d = tmpdir()
    data = token_data(d)
    p = subprocess.run(MPIRUN + ["-np", "2", NF, "train"] + TINY + ["--data", data, "--steps", "2", "--processes",
                                                                      "3"], capture_output=True, timeout=120)
    lines = [json.loads(line) for line in p.stdout.decode().splitlines() if line]
    assert p.returncode != 0 and len(lines) == 1 and lines[0]["type"] == "error", (p.returncode, lines)
    assert lines[0]["code"] == "usage" and "--processes 3" in lines[0]["message"], lines
    assert "mpirun started 2" in lines[0]["message"], lines
    # the same number is what a launcher's ranks see: accepted
    p = subprocess.run(MPIRUN + ["-np", "2", NF, "train"] + TINY + ["--data", data, "--steps", "2", "--processes",
                                                                      "2"], capture_output=True, timeout=120)
    assert p.returncode == 0 and b'"reason":"completed"' in p.stdout, p.stderr[-2000:]


@test
def a_missing_or_failing_mpirun_is_one_error():
    need_mpirun()
    d = tmpdir()
    data = token_data(d)
    args = ["train"] + TINY + ["--data", data, "--steps", "2", "--processes", "2"]
    r = run(args, env=dict(os.environ, PATH="/nonexistent"))
    assert_error(r, "distributed", "mpirun, which is not on PATH")
    # a hostfile with one slot for two ranks: mpirun refuses before starting any
    hosts = os.path.join(d, "hosts")
    with open(hosts, "w") as f:
        f.write("localhost slots=1\n")
    r = run(args + ["--hostfile", hosts], timeout=120)
    err = assert_error(r, "distributed", "before any rank wrote a message")
    assert "mpirun -np 2 ended with status" in err["message"], err
    assert_error(run(args[:-2] + ["--hostfile", hosts]), "usage", "--hostfile needs --processes")
    assert_error(run(args + ["--hostfile", os.path.join(d, "absent")]), "io", "--hostfile")


DASH_OPTIONS = {"dim": 128, "n_layers": 4, "n_heads": 4, "seq_len": 64, "batch": 8, "steps": 100000,
                "processes": 2}


def two_process_project(s):
    """A project of two processes with data; its id."""
    pid = s.ok("POST", "/api/projects", {"name": "ranks", "tokenizer": "builtin:bytes",
                                         "options": DASH_OPTIONS})["id"]
    words = "the king and the queen walk to the river while a small dog sings of bread and gold ".encode()
    s.ok("POST", f"/api/projects/{pid}/uploads?name=corpus.txt", raw=words * 2000,
         headers={"Content-Type": "application/octet-stream"})
    tok = s.ok("POST", f"/api/projects/{pid}/tokenize", {"upload": "corpus.txt"})
    s.wait_run(tok["id"], lambda r: r["status"] == "done")
    return pid


def train_until(s, project, n):
    """Starts the project's training; (its run, its stored init, the last step stored) once n steps are stored."""
    train = s.ok("POST", f"/api/projects/{project}/train")
    assert train["args"][train["args"].index("--processes") + 1] == "2", train["args"]
    deadline = time.time() + 120
    steps = []
    while time.time() < deadline and len(steps) < n:
        time.sleep(0.2)
        steps = s.ok("GET", f"/api/runs/{train['id']}/messages?type=step")
    assert len(steps) >= n, steps
    init = s.ok("GET", f"/api/runs/{train['id']}/messages?type=init")[0]["message"]
    return train, init, max(m["message"]["step"] for m in steps)


@test
def the_dashboard_runs_a_project_on_two_processes_and_stops_it_cleanly():
    need_mpirun()
    d = tmpdir()
    s = Serve(d)
    try:
        code, body = s.request("POST", "/api/projects", {"name": "ranks", "tokenizer": "builtin:bytes",
                                                         "options": dict(DASH_OPTIONS, processes=2000)})
        assert code == 400 and "processes" in body["error"], (code, body)
        train, init, _ = train_until(s, two_process_project(s), 3)
        assert init["world_size"] == 2, init
        ranks = init["rank_pids"]
        # the run's share of the cores (all of them: one training slot), halved for each rank
        cores = len(os.sched_getaffinity(0))
        assert [environ(r)["OMP_NUM_THREADS"] for r in ranks] == [str(max(1, cores // 2))] * 2
        s.ok("POST", f"/api/runs/{train['id']}/stop")
        r = s.wait_run(train["id"], lambda r: r["status"] not in ("starting", "running"))
        assert r["status"] == "stopped" and r["resumable"] and r["final"]["reason"] == "interrupted", r
        assert r["checkpoint"]["step"] == r["final"]["total_steps"] >= 3, r
        assert not any(alive(x) for x in ranks), ranks
    finally:
        s.stop()


@test
def a_server_killed_mid_run_leaves_the_ranks_checkpoint_and_their_last_messages():
    # the launcher outlives its server: it stops the ranks (SIGINT from its PR_SET_PDEATHSIG), keeps mpirun
    # from aborting on its broken stdout, and writes the ranks' last messages to the run's log, which the
    # next server imports once the launcher (the run's pid, train's words) is gone
    need_mpirun()
    d = tmpdir()
    s = Serve(d)
    try:
        train, init, seen = train_until(s, two_process_project(s), 3)
    finally:
        s.kill()
    s = Serve(d)
    try:
        r = s.wait_run(train["id"], lambda r: r["status"] not in ("starting", "running"))
        assert r["status"] == "interrupted" and r["resumable"], r
        assert r["final"]["reason"] == "interrupted", r
        assert r["checkpoint"]["step"] == r["final"]["total_steps"] >= seen, (r, seen)
        assert not any(alive(x) for x in init["rank_pids"]), init
    finally:
        s.stop()


if __name__ == "__main__":
    run_all()
