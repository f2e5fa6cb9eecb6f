"""`neuralforge serve` through its HTTP API, as the dashboard and a script
use it: the token, path traversal in every field that names a file, body
limits, a whole project (upload, tokenize, train, stop, resume, generate,
export, download), a server killed mid-run and started again, and 20
clients following one run's events at once."""
import http.client
import json
import os
import signal
import subprocess
import threading
import time

from harness import NF, assert_error, run, run_all, test, tmpdir

TOKEN = "test-token-0123456789abcdef"


class Serve:
    """A server on a free port over a data directory; stopped with SIGINT."""

    def __init__(self, data_dir, token=TOKEN, extra=()):
        self.data_dir, self.token = data_dir, token
        self.log = data_dir.rstrip("/") + f".serve-{time.time_ns()}.log"  # stderr, checked for sanitizer reports
        binary = os.environ.get("NF_SERVE_BINARY", NF)  # tests/run_tests.sh also runs these on the ASan build
        self.p = subprocess.Popen([binary, "serve", "--port", "0", "--data-dir", data_dir, "--token", token,
                                  *extra],
                                  stdout=subprocess.PIPE, stderr=open(self.log, "wb"))
        line = self.p.stdout.readline()
        msg = json.loads(line)
        assert msg["type"] == "serve", msg
        self.port, self.url = msg["port"], msg["url"]

    def request(self, method, path, body=None, token=True, raw=None, headers=None, timeout=30):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if token is True:
            h["Authorization"] = f"Bearer {self.token}"
        elif token:
            h["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
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
            assert self.p.wait(timeout=90) == 0
        self.check_log()

    def check_log(self):
        log = open(self.log, "rb").read()
        assert b"Sanitizer" not in log and b"runtime error" not in log, log[-3000:]

    def kill(self):
        self.p.kill()
        self.p.wait(timeout=10)
        self.check_log()


def text_corpus(n_bytes=60000):
    words = "the king and the queen walk to the river while a small dog sings of bread and gold".split()
    out, i = [], 0
    while sum(len(w) + 1 for w in out) < n_bytes:
        out.append(words[(i * 7 + i // 3) % len(words)])
        i += 1
    return " ".join(out).encode()


def tiny_project(s, steps=400):
    return s.ok("POST", "/api/projects", {"name": "tiny", "tokenizer": "builtin:bytes", "options": {
        "dim": 32, "n_layers": 1, "n_heads": 2, "seq_len": 64, "steps": steps, "batch": 4, "lr": 0.003,
        "ckpt_every": 50}})


def upload(s, pid, n_bytes=60000):
    s.ok("POST", f"/api/projects/{pid}/uploads?name=corpus.txt", raw=text_corpus() * max(1, n_bytes // 60000),
         headers={"Content-Type": "application/octet-stream"})


def with_data(s, pid):
    upload(s, pid)
    run = s.ok("POST", f"/api/projects/{pid}/tokenize", {"upload": "corpus.txt"})
    s.wait_run(run["id"], lambda r: r["status"] == "done")


def events(s, run_id, since=0, stop_after=None, timeout=120):
    """Reads a run's event stream; returns (messages, statuses) when it ends or stop_after(messages) holds."""
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=timeout)
    c.request("GET", f"/api/runs/{run_id}/events?since={since}&token={s.token}")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Type") == "text/event-stream"
    messages, statuses, event, data = [], [], None, []
    while True:
        line = r.readline()
        if not line:
            break
        line = line.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            obj = json.loads("\n".join(data))
            (messages if event == "message" else statuses).append(obj)
            event, data = None, []
            if stop_after and stop_after(messages):
                break
    c.close()
    return messages, statuses


@test
def every_api_call_needs_the_token():
    d = tmpdir()
    s = Serve(d)
    try:
        pid = tiny_project(s)["id"]
        for method, path in (("GET", "/api/status"), ("GET", "/api/projects"), ("POST", "/api/projects"),
                             ("GET", f"/api/projects/{pid}"), ("DELETE", f"/api/projects/{pid}"),
                             ("GET", f"/api/projects/{pid}/runs"), ("GET", "/api/runs/1/events"),
                             ("POST", f"/api/projects/{pid}/uploads?name=a.txt")):
            for token in (None, "wrong-token-0123456789abcdef", TOKEN[:-1]):
                code, body = s.request(method, path, {"name": "x"}, token=token)
                assert code == 401, (method, path, token, code, body)
        code, _ = s.request("GET", f"/api/projects?token={TOKEN}", token=None)
        assert code == 200
        assert s.ok("GET", f"/api/projects/{pid}")["name"] == "tiny"  # the project survived every try
        code, page = s.request("GET", "/", token=None)  # the front end's files hold no data
        assert code in (200, 404)
        assert_error(run(["serve", "--host", "0.0.0.0", "--data-dir", d]), "usage", "--allow-remote")
        assert_error(run(["serve", "--token", "short", "--data-dir", d]), "usage", "--token")
    finally:
        s.stop()


@test
def no_request_reaches_a_path_outside_the_data_directory():
    d, outside = tmpdir(), tmpdir()
    s = Serve(os.path.join(d, "data"))
    try:
        open(os.path.join(outside, "secret.txt"), "w").write("secret")
        for bad in ("../secret.txt", "../../x", "/etc/passwd", ".hidden", "a/b", "..", "x\\y", "%2e%2e"):
            code, body = s.request("POST", "/api/projects", {"name": "p", "model": bad})
            assert code == 400, (bad, code, body)
            code, body = s.request("POST", "/api/projects", {"name": "p", "tokenizer": bad})
            assert code == 400, (bad, code, body)
        pid = tiny_project(s)["id"]
        for bad in ("../evil.txt", "..%2Fevil.txt", "%2e%2e%2fevil.txt", ".evil.txt", "evil.exe", "a%2Fb.txt"):
            code, body = s.request("POST", f"/api/projects/{pid}/uploads?name={bad}", raw=b"hello",
                                   headers={"Content-Type": "application/octet-stream"})
            assert code == 400, (bad, code, body)
        for bad in ("../../../../../../" + outside + "/secret.txt", "../uploads/x.txt", "/etc/passwd"):
            code, body = s.request("POST", f"/api/projects/{pid}/tokenize", {"upload": bad})
            assert code in (400, 404), (bad, code, body)
        for path in ("/api/projects/1/../../runs/1", "/api/runs/..%2F1", "/../../etc/passwd", "/vendor/../../x"):
            code, _ = s.request("GET", path)
            assert code in (401, 404), (path, code)
        code, body = s.request("POST", f"/api/projects/{pid}/export", {"format": "../gguf"})
        assert code == 400, body
        for root, _, files in os.walk(d):
            for f in files:
                assert "evil" not in f, os.path.join(root, f)
        assert not os.path.exists(os.path.join(outside, "evil.txt"))
        assert sorted(os.listdir(outside)) == ["secret.txt"]
    finally:
        s.stop()


@test
def bodies_are_validated_and_bounded():
    d = tmpdir()
    s = Serve(d)
    try:
        code, body = s.request("POST", "/api/projects", raw=b"{not json")
        assert code == 400 and "JSON" in body["error"], body
        code, body = s.request("POST", "/api/projects", {"name": ""})
        assert code == 400 and "name" in body["error"], body
        code, body = s.request("POST", "/api/projects", {"name": "p", "options": {"lr": 50}})
        assert code == 400 and "--lr" in body["error"], body  # train's own range check
        code, body = s.request("POST", "/api/projects", {"name": "p", "options": {"dim": 30, "n_heads": 4}})
        assert code == 400 and "shape" in body["error"], body  # what train would refuse later, refused now
        code, body = s.request("POST", "/api/projects", {"name": "p", "options": {"seq_len": 64, "seq": 128}})
        assert code == 400 and "--seq" in body["error"], body
        code, body = s.request("POST", "/api/projects", {"name": "p", "options": {"bogus": 1}})
        assert code == 400 and "bogus" in body["error"], body
        code, body = s.request("POST", "/api/projects", {"name": "p", "options": {"steps": [1]}})
        assert code == 400 and "steps" in body["error"], body
        code, body = s.request("POST", "/api/projects", raw=b"[" + b"1," * 600000 + b"1]")
        assert code == 413, code
        pid = tiny_project(s)["id"]
        code, body = s.request("POST", f"/api/projects/{pid}/uploads?name=big.txt", raw=b"x" * (64 * 2**20 + 1),
                               headers={"Content-Type": "application/octet-stream"}, timeout=120)
        assert code == 413, (code, body)
        assert s.ok("GET", f"/api/projects/{pid}")["uploads"] == []
        code, body = s.request("POST", f"/api/projects/{pid}/train")
        assert code == 409 and "tokenize" in body["error"], body
        code, body = s.request("POST", f"/api/projects/{pid}/generate", {"prompt": "x", "temperature": -1})
        assert code == 400 and "temperature" in body["error"], body
        code, body = s.request("GET", "/api/runs/999")
        assert code == 404
    finally:
        s.stop()


@test
def a_project_trains_stops_resumes_generates_and_exports_through_the_api():
    d = tmpdir()
    s = Serve(d)
    try:
        pid = tiny_project(s, steps=3000)["id"]
        with_data(s, pid)
        proj = s.ok("GET", f"/api/projects/{pid}")
        assert proj["uploads"] == [{"name": "corpus.txt", "bytes": 60000}] or proj["uploads"][0]["name"] == "corpus.txt"
        assert proj["data"][0]["name"] == "corpus.txt" and proj["data"][0]["tokens"] == proj["tokens"] > 50000, proj
        # one training run at a time, also when four requests race for it
        answers = [None] * 4
        racers = [threading.Thread(target=lambda i=i: answers.__setitem__(i, s.request("POST", f"/api/projects/{pid}/train")))
                  for i in range(4)]
        for t in racers:
            t.start()
        for t in racers:
            t.join()
        assert sorted(code for code, _ in answers) == [201, 409, 409, 409], answers
        train = next(body for code, body in answers if code == 201)
        msgs, _ = events(s, train["id"], stop_after=lambda m: sum(x["type"] == "checkpoint" for x in m) >= 1)
        steps = [m["step"] for m in msgs if m["type"] == "step"]
        assert msgs[0]["type"] == "init" and steps == list(range(1, len(steps) + 1)), steps[:5]
        s.ok("POST", f"/api/runs/{train['id']}/stop")
        r = s.wait_run(train["id"], lambda r: not r["status"] in ("starting", "running"))
        assert r["status"] == "stopped" and r["resumable"] and r["checkpoint"], r
        stopped_at = r["checkpoint"]["step"]
        assert r["final"]["reason"] == "interrupted"
        s.ok("POST", f"/api/runs/{train['id']}/resume")
        more, _ = events(s, train["id"], since=r["messages"],
                         stop_after=lambda m: any(x["type"] == "step" and x["step"] > stopped_at + 3 for x in m))
        init = next(m for m in more if m["type"] == "init")
        assert init["resume_step"] == stopped_at, init
        first = next(m for m in more if m["type"] == "step")
        assert first["step"] == stopped_at + 1, first
        s.ok("POST", f"/api/runs/{train['id']}/stop")
        s.wait_run(train["id"], lambda r: r["status"] == "stopped")
        all_msgs = s.ok("GET", f"/api/runs/{train['id']}/messages?type=init")
        assert [m["message"]["resume_step"] for m in all_msgs] == [0, stopped_at]
        gen = s.ok("POST", f"/api/projects/{pid}/generate",
                   {"prompt": "the king", "max_tokens": 30, "temperature": 0, "source": "checkpoint"})
        msgs, statuses = events(s, gen["id"])
        tokens = [m for m in msgs if m["type"] == "token"]
        assert len(tokens) == 30 and msgs[-1]["type"] == "generate_done", msgs[-2:]
        assert statuses[-1]["status"] == "done"
        exp = s.ok("POST", f"/api/projects/{pid}/export", {"format": "gguf", "dtype": "q8_0"})
        r = s.wait_run(exp["id"], lambda r: r["status"] in ("done", "error"))
        assert r["status"] == "done" and r["output"].endswith(".gguf"), r
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        c.request("GET", f"/api/runs/{exp['id']}/download?token={TOKEN}")
        resp = c.getresponse()
        blob = resp.read()
        assert resp.status == 200 and blob[:4] == b"GGUF" and "attachment" in resp.getheader("Content-Disposition")
        history = s.ok("GET", f"/api/projects/{pid}/runs")
        assert [h["kind"] for h in history] == ["export", "generate", "train", "tokenize"]
        code, body = s.request("DELETE", f"/api/projects/{pid}")
        assert code == 204 and not os.path.exists(os.path.join(d, "projects", str(pid)))
    finally:
        s.stop()


@test
def a_server_killed_mid_run_shows_the_run_interrupted_and_resumable():
    d = tmpdir()
    s = Serve(d)
    try:
        pid = tiny_project(s, steps=20000)["id"]
        with_data(s, pid)
        train = s.ok("POST", f"/api/projects/{pid}/train")
        events(s, train["id"], stop_after=lambda m: sum(x["type"] == "step" for x in m) >= 60)
    finally:
        s.kill()  # SIGKILL: no chance to stop anything
    time.sleep(1)
    s = Serve(d)
    try:
        r = s.wait_run(train["id"], lambda r: True)
        assert r["status"] == "interrupted" and r["resumable"], r
        assert not s.ok("GET", "/api/status")["active_runs"]
        s.ok("POST", f"/api/runs/{train['id']}/resume")
        more, _ = events(s, train["id"], since=r["messages"], stop_after=lambda m: any(x["type"] == "step" for x in m))
        init = next(m for m in more if m["type"] == "init")
        assert init["resume_step"] >= 50, init  # checkpointed: every 50 steps, and on the SIGINT its orphaning sent
        s.ok("POST", f"/api/runs/{train['id']}/stop")
        s.wait_run(train["id"], lambda r: r["status"] == "stopped")
    finally:
        s.stop()


@test
def twenty_clients_follow_one_run_and_the_server_stays_responsive():
    d = tmpdir()
    s = Serve(d)
    try:
        pid = tiny_project(s, steps=300)["id"]
        with_data(s, pid)
        train = s.ok("POST", f"/api/projects/{pid}/train")
        results, errors = [None] * 20, []

        def follow(i):
            try:
                results[i] = events(s, train["id"], timeout=300)
            except Exception as e:  # reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=follow, args=(i,)) for i in range(20)]
        for t in threads:
            t.start()
        latencies = []
        while any(t.is_alive() for t in threads):
            t0 = time.time()
            s.ok("GET", "/api/status")
            s.ok("GET", f"/api/projects/{pid}/runs")
            latencies.append(time.time() - t0)
            time.sleep(0.2)
        for t in threads:
            t.join()
        assert not errors, errors
        final = s.ok("GET", f"/api/runs/{train['id']}")
        assert final["status"] == "done", final
        for msgs, statuses in results:
            steps = [m["step"] for m in msgs if m["type"] == "step"]
            assert steps == list(range(1, 301)), (len(steps), steps[:3])
            assert msgs[-1]["type"] == "done" and statuses[-1]["status"] == "done"
        assert max(latencies) < 5.0, max(latencies)  # bounded: a loaded 2-core machine, 20 streams
    finally:
        s.stop()


def children_of(pid):
    """Ids of the live child processes of pid."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                kids.append(int(entry))
    return kids


# dim 8192, 48 layers: 38.7 billion weights, 577 GiB with their gradients and AdamW state
HUGE = {"dim": 8192, "n_layers": 48, "n_heads": 64, "seq_len": 64, "steps": 10}


@test
def an_oversized_shape_is_refused_before_any_child_starts():
    d = tmpdir()
    s = Serve(d)
    try:  # as a project's shape: refused when it is set, with the estimate
        code, body = s.request("POST", "/api/projects", {"name": "huge", "tokenizer": "builtin:bytes", "options": HUGE})
        assert code == 413 and "--max-memory" in body["error"] and "GiB" in body["error"], (code, body)
        assert s.ok("GET", "/api/projects") == []
    finally:
        s.stop()
    s = Serve(d, extra=("--max-memory", "none"))  # a budget lifted, then back: the project exists, its run may not
    try:
        pid = s.ok("POST", "/api/projects", {"name": "huge", "tokenizer": "builtin:bytes", "options": HUGE})["id"]
        with_data(s, pid)
    finally:
        s.stop()
    s = Serve(d, extra=("--max-memory", "64G"))
    try:
        code, body = s.request("POST", f"/api/projects/{pid}/train")
        assert code == 413, (code, body)
        assert "more than the memory budget of 64.0 GiB (--max-memory" in body["error"], body
        needs = float(body["error"].split("needs about ")[1].split(" GiB")[0])
        assert 570 < needs < 600, body
        assert [r["kind"] for r in s.ok("GET", f"/api/projects/{pid}/runs")] == ["tokenize"]  # no run recorded
        assert children_of(s.p.pid) == []  # and no process
    finally:
        s.stop()


def started_after(s, run_id, other_id):
    a, b = s.ok("GET", f"/api/runs/{run_id}"), s.ok("GET", f"/api/runs/{other_id}")
    return a["started_at"] >= b["ended_at"] > 0


@test
def a_second_training_waits_queued_and_a_stopped_queued_run_never_starts():
    d = tmpdir()
    s = Serve(d)
    try:
        first, second, third = (tiny_project(s, steps=steps)["id"] for steps in (100000, 20, 20))
        for p in (first, second, third):
            with_data(s, p)
        a = s.ok("POST", f"/api/projects/{first}/train")
        assert a["status"] == "starting", a
        a = s.wait_run(a["id"], lambda r: r["status"] == "running")
        # the child's threads: the cores shared among the training slots (one by default)
        env = open(f"/proc/{a['pid']}/environ", "rb").read().split(b"\0")
        assert f"OMP_NUM_THREADS={len(os.sched_getaffinity(0))}".encode() in env
        b = s.ok("POST", f"/api/projects/{second}/train", status=201)
        c = s.ok("POST", f"/api/projects/{third}/train", status=201)
        assert b["status"] == c["status"] == "queued" and b["pid"] is None, (b, c)
        code, _ = s.request("POST", f"/api/projects/{second}/train")
        assert code == 409  # a queued training counts as the project's active one
        stopped = s.ok("POST", f"/api/runs/{c['id']}/stop")
        assert stopped["status"] == "stopped" and not stopped["resumable"], stopped
        time.sleep(1)
        assert s.ok("GET", f"/api/runs/{b['id']}")["status"] == "queued"
        s.ok("POST", f"/api/runs/{a['id']}/stop")
        s.wait_run(a["id"], lambda r: r["status"] == "stopped")
        b = s.wait_run(b["id"], lambda r: r["status"] in ("done", "error"))
        assert b["status"] == "done" and b["final"]["total_steps"] == 20, b
        assert started_after(s, b["id"], a["id"])
        c = s.ok("GET", f"/api/runs/{c['id']}")  # the cancelled run: never started, no message, no log
        assert c["status"] == "stopped" and c["pid"] is None and c["started_at"] == 0 and c["messages"] == 0, c
        assert not os.path.exists(os.path.join(d, "logs", f"{c['id']}.log"))
        code, _ = s.request("POST", f"/api/runs/{c['id']}/stop")
        assert code == 409
    finally:
        s.stop()


@test
def light_jobs_beyond_the_cap_wait_queued():
    d = tmpdir()
    s = Serve(d, extra=("--max-jobs", "1"))
    try:
        big, small = (tiny_project(s)["id"] for _ in range(2))
        upload(s, big, n_bytes=12_000_000)  # seconds of tokenizing
        upload(s, small)
        slow = s.ok("POST", f"/api/projects/{big}/tokenize", {"upload": "corpus.txt"})
        quick = s.ok("POST", f"/api/projects/{small}/tokenize", {"upload": "corpus.txt"})
        assert slow["status"] == "starting" and quick["status"] == "queued", (slow, quick)
        quick = s.wait_run(quick["id"], lambda r: r["status"] in ("done", "error"))
        assert quick["status"] == "done", quick
        assert started_after(s, quick["id"], slow["id"])
    finally:
        s.stop()
    code = subprocess.run([NF, "serve", "--max-jobs", "0"], capture_output=True).returncode
    assert code != 0


@test
def a_run_left_queued_by_a_stopped_server_starts_when_it_comes_back():
    d = tmpdir()
    s = Serve(d)
    try:
        first, second = (tiny_project(s, steps=steps)["id"] for steps in (100000, 20))
        for p in (first, second):
            with_data(s, p)
        a = s.ok("POST", f"/api/projects/{first}/train")
        b = s.ok("POST", f"/api/projects/{second}/train")
        assert b["status"] == "queued", b
    finally:
        s.stop()  # the training is stopped gracefully; the queued one must not start on the way out
    s = Serve(d, extra=("--max-memory", "4G"))
    try:
        assert s.ok("GET", f"/api/runs/{a['id']}")["status"] == "stopped"
        b = s.wait_run(b["id"], lambda r: r["status"] in ("done", "error"))
        assert b["status"] == "done" and b["final"]["total_steps"] == 20, b
        # serve's budget reaches the runs trained from now on
        c = s.ok("POST", f"/api/projects/{second}/train")
        assert c["args"][-2] == "--ckpt" and c["args"][-1].endswith(f"/runs/{c['id']}/model.ckpt"), c["args"]
        c = s.wait_run(c["id"], lambda r: r["status"] in ("done", "error"))
        init = s.ok("GET", f"/api/runs/{c['id']}/messages?type=init")[0]["message"]
        assert c["status"] == "done" and init["max_memory"] == 4 << 30, (c, init)
    finally:
        s.stop()


if __name__ == "__main__":
    run_all()
