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

from harness import NF, assert_error, enospc_env, run, run_all, test, tmpdir

TOKEN = "test-token-0123456789abcdef"


class Serve:
    """A server on a free port over a data directory; stopped with SIGINT."""

    def __init__(self, data_dir, token=TOKEN, env=None):
        self.data_dir, self.token = data_dir, token
        self.log = data_dir.rstrip("/") + f".serve-{time.time_ns()}.log"  # stderr, checked for sanitizer reports
        binary = os.environ.get("NF_SERVE_BINARY", NF)  # tests/run_tests.sh also runs these on the ASan build
        self.p = subprocess.Popen([binary, "serve", "--port", "0", "--data-dir", data_dir, "--token", token],
                                  stdout=subprocess.PIPE, stderr=open(self.log, "wb"), env=env)
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


def tiny_project(s, steps=400, **options):
    """A tiny model's project; options override the defaults here (None drops one)."""
    opts = {"dim": 32, "n_layers": 1, "n_heads": 2, "seq_len": 64, "steps": steps, "batch": 4, "lr": 0.003,
            "ckpt_every": 50}
    opts.update(options)
    return s.ok("POST", "/api/projects", {"name": "tiny", "tokenizer": "builtin:bytes",
                                          "options": {k: v for k, v in opts.items() if v is not None}})


ACTIVE = ("starting", "running", "restarting")


def with_data(s, pid):
    s.ok("POST", f"/api/projects/{pid}/uploads?name=corpus.txt", raw=text_corpus(),
         headers={"Content-Type": "application/octet-stream"})
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


def train_until_step(s, project, n):
    """Starts training; returns (run, the last step seen) once n steps are reported."""
    train = s.ok("POST", f"/api/projects/{project}/train")
    msgs, _ = events(s, train["id"], stop_after=lambda m: sum(x["type"] == "step" for x in m) >= n)
    return s.ok("GET", f"/api/runs/{train['id']}"), max(m["step"] for m in msgs if m["type"] == "step")


def resume_continues_from_the_checkpoint(s, run_id, old_pid):
    """The run is interrupted with a checkpoint; its resume answers with the new process, which starts there."""
    r = s.ok("GET", f"/api/runs/{run_id}")
    assert r["status"] == "interrupted" and r["resumable"] and r["final"]["reason"] == "interrupted", r
    assert not s.ok("GET", "/api/status")["active_runs"]
    resumed = s.ok("POST", f"/api/runs/{run_id}/resume")
    more, _ = events(s, run_id, since=r["messages"], stop_after=lambda m: any(x["type"] == "step" for x in m))
    init = next(m for m in more if m["type"] == "init")
    assert init["resume_step"] == r["checkpoint"]["step"], (init, r["checkpoint"])
    assert resumed["pid"] == init["pid"] != old_pid, (resumed["pid"], init["pid"], old_pid)
    s.ok("POST", f"/api/runs/{run_id}/stop")
    s.wait_run(run_id, lambda r: r["status"] == "stopped")


@test
def a_server_killed_mid_run_shows_the_run_interrupted_and_resumable():
    # default options: no --ckpt-every, only the dashboard's 10-minute clock; the checkpoint comes from the
    # orphaned child, which the server's death stops (SIGINT, and its closed stdout)
    d = tmpdir()
    s = Serve(d)
    try:
        pid = tiny_project(s, steps=20000, ckpt_every=None)["id"]
        with_data(s, pid)
        r, seen = train_until_step(s, pid, 60)
        assert r["args"][r["args"].index("--ckpt-minutes") + 1] == "10", r["args"]
    finally:
        s.kill()  # SIGKILL: no chance to stop anything
    s = Serve(d)
    try:
        done = s.wait_run(r["id"], lambda r: r["status"] not in ACTIVE)
        # the messages the orphan wrote to its log, imported: its checkpoint is at or after the last step seen
        # (lines still in the pipe when the server was killed are lost with it)
        assert done["checkpoint"] and done["checkpoint"]["step"] >= seen, (done, seen)
        assert done["checkpoint"]["step"] == done["final"]["total_steps"], done
        resume_continues_from_the_checkpoint(s, r["id"], r["pid"])
    finally:
        s.stop()


@test
def an_orphan_still_running_at_restart_is_waited_for_before_its_run_is_marked():
    d = tmpdir()
    s = Serve(d)
    child = None
    try:
        pid = tiny_project(s, steps=20000, ckpt_every=None)["id"]
        with_data(s, pid)
        r, seen = train_until_step(s, pid, 30)
        child = r["pid"]
        os.kill(child, signal.SIGSTOP)  # the orphan will outlive the next server's start
    finally:
        s.kill()
    try:
        s = Serve(d)
        deadline = time.time() + 3
        while time.time() < deadline:  # alive: not marked, and not resumable into a second writer
            assert s.ok("GET", f"/api/runs/{r['id']}")["status"] in ACTIVE
            code, body = s.request("POST", f"/api/runs/{r['id']}/resume")
            assert code == 409, (code, body)
            time.sleep(0.3)
        os.kill(child, signal.SIGCONT)  # it takes the SIGINT its server's death sent, checkpoints and leaves
        done = s.wait_run(r["id"], lambda r: r["status"] not in ACTIVE)
        assert done["checkpoint"] and done["checkpoint"]["step"] >= seen, (done, seen)
        resume_continues_from_the_checkpoint(s, r["id"], child)
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except (ProcessLookupError, TypeError):
            pass
        s.stop()


@test
def a_full_disk_at_a_checkpoint_ends_the_run_with_the_reason():
    d = tmpdir()
    s = Serve(d, env=enospc_env(os.path.join(d, "projects", "*", "model.ckpt*")))
    try:
        pid = tiny_project(s, steps=30, ckpt_every=10)["id"]
        with_data(s, pid)
        train = s.ok("POST", f"/api/projects/{pid}/train")
        r = s.wait_run(train["id"], lambda r: r["status"] not in ACTIVE)
        ckpt = r["args"][r["args"].index("--ckpt") + 1]
        assert r["status"] == "error" and r["exit_code"] == 1 and not r["resumable"], r
        assert f"'{ckpt}'" in r["error"] and "no space left on device" in r["error"].lower(), r["error"]
        assert r["last"]["step"] == 10 and not os.listdir(os.path.dirname(ckpt))  # no temporary file left
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


if __name__ == "__main__":
    run_all()
