"""`neuralforge serve` through its HTTP API, as the dashboard and a script
use it: the token, path traversal in every field that names a file, body
limits, a whole project (upload, tokenize, train, stop, resume, generate,
export, download), a server killed mid-run and started again, 20
clients following one run's events at once, the data directory's modes,
ids never reused (also in a database of the first schema, migrated), names
with NUL or control characters refused, and nf.db's growth over a long run.
Then what a hostile page or client tries: a forged Host (DNS rebinding),
cross-origin and form-like posts, the token in URLs, missing security
headers, and connections held open to exhaust the server. And base models
of every kind in models/ (a Hugging Face directory with its own tokenizer, a
GGUF file, a llama2.c file; names that are none refused), projects on them
that tokenize, train and generate, and chat requests (the conversation
written privately and run as generate --chat --messages)."""
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import threading
import time

from harness import NF, NF_SERVE, ROOT, TOKEN, Serve, assert_error, enospc_env, run, run_all, shared, test, tmpdir

JSON = {"Content-Type": "application/json"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


def assert_security_headers(resp, what):
    for name, value in SECURITY_HEADERS.items():
        assert resp.getheader(name) == value, (what, name, resp.getheader(name))


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
    c.request("GET", f"/api/runs/{run_id}/events?since={since}", headers={"Authorization": f"Bearer {s.token}"})
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
        assert code == 401, code  # the URL token only buys a cookie at / (the_url_token_becomes_a_session_cookie)
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
def a_tokenizer_may_be_a_directory_holding_a_tokenizer_json():
    d = tmpdir()
    data = os.path.join(d, "data")
    toks = os.path.join(data, "tokenizers")
    os.makedirs(os.path.join(toks, "qwen3"))
    open(os.path.join(toks, "qwen3", "tokenizer.json"), "w").write("{}")
    os.makedirs(os.path.join(toks, "empty"))  # a directory without tokenizer.json is no tokenizer
    os.makedirs(os.path.join(toks, "nested", "tokenizer.json"))  # nor one whose tokenizer.json is a directory
    open(os.path.join(toks, "tok.bin"), "wb").write(b"x")
    # with a base model, creating the project reads no tokenizer (from scratch it would load it for the vocab size)
    os.makedirs(os.path.join(data, "models"))
    shutil.copy(shared("stories260K.bin"), os.path.join(data, "models", "m.bin"))
    s = Serve(data)
    try:
        assert s.ok("GET", "/api/status")["tokenizers"] == ["qwen3", "tok.bin"]
        for name in ("qwen3", "tok.bin"):
            p = s.ok("POST", "/api/projects", {"name": name, "model": "m.bin", "tokenizer": name})
            assert p["tokenizer"] == name, p
        for bad in ("empty", "nested", "qwen3/tokenizer.json", "../data/tokenizers/qwen3", "missing"):
            code, body = s.request("POST", "/api/projects", {"name": "p", "tokenizer": bad})
            assert code == 400 and "tokenizer" in body["error"], (bad, code, body)
    finally:
        s.stop()


@test
def bodies_are_validated_and_bounded():
    d = tmpdir()
    s = Serve(d)
    try:
        code, body = s.request("POST", "/api/projects", raw=b"{not json", headers=JSON)
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
        code, body = s.request("POST", "/api/projects", raw=b"[" + b"1," * 600000 + b"1]", headers=JSON)
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
        c.request("GET", f"/api/runs/{exp['id']}/download", headers={"Authorization": f"Bearer {TOKEN}"})
        resp = c.getresponse()
        blob = resp.read()
        assert resp.status == 200 and blob[:4] == b"GGUF" and "attachment" in resp.getheader("Content-Disposition")
        assert_security_headers(resp, "download")
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


def a_held_training(s):
    """A training run past its 30th step, its process then held (SIGSTOP): (the run, the last step seen, its pid)."""
    pid = tiny_project(s, steps=20000, ckpt_every=None)["id"]
    with_data(s, pid)
    r, seen = train_until_step(s, pid, 30)
    os.kill(r["pid"], signal.SIGSTOP)
    return r, seen, r["pid"]


def kill_if_there(pid):
    """SIGKILL to pid, where there is one and it still runs."""
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, TypeError):
        pass


@test
def an_orphan_still_running_at_restart_is_waited_for_before_its_run_is_marked():
    d = tmpdir()
    s = Serve(d)
    child = None
    try:
        r, seen, child = a_held_training(s)  # the orphan will outlive the next server's start
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
        kill_if_there(child)
        s.stop()


@test
def a_stop_that_outlasts_stop_wait_leaves_the_run_to_finish_and_the_next_server_records_it():
    # the run's process is held (SIGSTOP), so it cannot end within --stop-wait: the server must still exit 0 without
    # closing the store under the thread that waits for that run, and the run, let go, checkpoints on its own
    d = tmpdir()
    s = Serve(d, args=("--stop-wait", "1"))
    child = None
    try:
        r, seen, child = a_held_training(s)
        t0 = time.time()
        s.stop()  # asserts exit status 0 and a log free of sanitizer reports
        assert time.time() - t0 < 30, time.time() - t0
        assert b"left to finish" in open(s.log, "rb").read(), open(s.log, "rb").read()[-2000:]
        os.kill(child, signal.SIGCONT)  # it takes the stop's SIGINT, checkpoints and leaves
        s = Serve(d)
        done = s.wait_run(r["id"], lambda r: r["status"] not in ACTIVE)
        assert done["status"] == "stopped" and done["checkpoint"]["step"] >= seen, (done, seen)
        assert done["checkpoint"]["step"] == done["final"]["total_steps"], done
    finally:
        kill_if_there(child)
        s.stop()
    for bad in ("-1", "3601", "x"):
        assert_error(run(["serve", "--port", "0", "--data-dir", d, "--stop-wait", bad]), "usage", "--stop-wait")


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

# ---- a hostile page or client -------------------------------------------------------------------------


@test
def a_forged_host_is_refused():
    d = tmpdir()
    s = Serve(d)
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for host in ("attacker.example:%d", "attacker.example", "127.0.0.1:1%d", "localhost", "127.0.0.1"):
            host = host % s.port if "%d" in host else host
            for path in ("/api/status", "/"):
                r = s.raw("GET", path, headers={**auth, "Host": host})
                assert r.status == 403, (host, path, r.status, r.body)
        r = s.raw("POST", "/api/projects", headers={**auth, **JSON, "Host": f"attacker.example:{s.port}"}, body=b'{"name":"p"}')
        assert r.status == 403, r.status
        for host in (f"127.0.0.1:{s.port}", f"localhost:{s.port}", f"LOCALHOST:{s.port}"):
            r = s.raw("GET", "/api/status", headers={**auth, "Host": host})
            assert r.status == 200, (host, r.status, r.body)
        assert s.ok("GET", "/api/projects") == []
    finally:
        s.stop()


@test
def a_page_from_another_origin_cannot_change_anything():
    d = tmpdir()
    s = Serve(d)
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        body = b'{"name":"forged"}'
        # what a form post or a "simple" fetch from another site sends: text/plain, and its Origin
        r = s.raw("POST", "/api/projects", headers={**auth, "Origin": "http://evil.example", "Content-Type": "text/plain"}, body=body)
        assert r.status == 403, (r.status, r.body)
        for headers in ({"Origin": "http://evil.example", **JSON}, {"Origin": "null", **JSON},
                        {"Origin": f"http://localhost:{s.port + 1}", **JSON},  # another port is another origin
                        {"Sec-Fetch-Site": "cross-site", **JSON}, {"Sec-Fetch-Site": "same-site", **JSON}):
            r = s.raw("POST", "/api/projects", headers={**auth, **headers}, body=body)
            assert r.status == 403, (headers, r.status, r.body)
        # the media type: JSON bodies only as application/json, uploads only as application/octet-stream
        for headers in ({"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"},
                        {"Content-Type": "multipart/form-data; boundary=x"}, {}):
            r = s.raw("POST", "/api/projects", headers={**auth, **headers}, body=body)
            assert r.status == 415, (headers, r.status, r.body)
        assert s.ok("GET", "/api/projects") == []  # nothing was created
        pid = s.ok("POST", "/api/projects", {"name": "mine"}, headers={"Origin": f"http://127.0.0.1:{s.port}",
                                                                     "Sec-Fetch-Site": "same-origin"})["id"]
        r = s.raw("DELETE", f"/api/projects/{pid}", headers={**auth, "Origin": "http://evil.example"})
        assert r.status == 403, r.status
        r = s.raw("POST", f"/api/projects/{pid}/uploads?name=a.txt", headers={**auth, "Content-Type": "text/plain"},
                  body=b"hello")
        assert r.status == 415, (r.status, r.body)
        r = s.raw("POST", f"/api/projects/{pid}/uploads?name=a.txt",
                  headers={**auth, "Content-Type": "application/octet-stream", "Origin": "http://evil.example"}, body=b"hi")
        assert r.status == 403, (r.status, r.body)
        assert s.ok("GET", f"/api/projects/{pid}")["uploads"] == []
        assert [p["name"] for p in s.ok("GET", "/api/projects")] == ["mine"]
    finally:
        s.stop()


@test
def the_url_token_becomes_a_session_cookie():
    d = tmpdir()
    s = Serve(d)
    try:
        r = s.raw("GET", f"/?token={TOKEN}")
        assert r.status == 303 and r.getheader("Location") == "/", (r.status, r.getheader("Location"))
        cookie = r.getheader("Set-Cookie")
        parts = [p.strip() for p in cookie.split(";")]
        assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= set(parts), cookie
        pair = parts[0]
        assert TOKEN not in pair, "the cookie carries a session secret, not the token"
        assert s.raw("GET", "/api/status", headers={"Cookie": pair}).status == 200
        assert s.raw("POST", "/api/projects", headers={"Cookie": pair, **JSON}, body=b'{"name":"p"}').status == 201
        name = pair.split("=")[0]
        assert s.raw("GET", "/api/status", headers={"Cookie": f"{name}=0123456789abcdef0123456789abcdef"}).status == 401
        # the token in a URL is taken at / only: not on the API, nor in event or download URLs
        for path in ("/api/status", "/api/projects", "/api/runs/1/events", "/api/runs/1/download"):
            assert s.raw("GET", f"{path}?token={TOKEN}").status == 401, path
        r = s.raw("GET", "/?token=wrong-token-0123456789abcdef")
        assert r.status == 303 and r.getheader("Set-Cookie") is None, r.getheaders()
        # another start, another session: the old cookie is worth nothing, the token still is
        s.stop()
        s = Serve(d)
        assert s.raw("GET", "/api/status", headers={"Cookie": pair.replace(name, f"nf_session_{s.port}")}).status == 401
        assert s.raw("GET", "/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
    finally:
        s.stop()


@test
def every_response_carries_the_security_headers():
    d = tmpdir()
    s = Serve(d)
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        pid = tiny_project(s, steps=20)["id"]
        with_data(s, pid)
        runs = s.ok("GET", f"/api/projects/{pid}/runs")
        checks = [("GET", "/", {}), ("GET", "/app.js", {}), ("GET", "/style.css", {}), ("GET", "/nothing", {}),
                  ("GET", f"/?token={TOKEN}", {}), ("GET", "/api/status", auth), ("GET", "/api/status", {}),
                  ("GET", "/api/runs/999", auth), ("GET", "/api/status", {**auth, "Host": "evil.example"}),
                  ("POST", "/api/projects", {**auth, "Content-Type": "text/plain"}),
                  ("GET", f"/api/runs/{runs[0]['id']}/events", auth)]  # a finished run's stream ends by itself
        for method, path, headers in checks:
            r = s.raw(method, path, headers=headers, body=b"{}" if method == "POST" else None)
            assert_security_headers(r, (method, path, r.status))
    finally:
        s.stop()


@test
def the_token_comes_from_the_environment_or_a_private_file():
    d = tmpdir()
    path = os.path.join(d, "token")
    with open(path, "w") as f:
        f.write("file-token-0123456789abcdef\n")
    os.chmod(path, 0o644)
    binary = NF_SERVE
    assert_error(run(["serve", "--port", "0", "--data-dir", d, "--token-file", path], binary=binary), "usage", "--token-file")
    assert_error(run(["serve", "--port", "0", "--data-dir", d, "--token-file", path + ".missing"], binary=binary), "io",
                 "--token-file")
    os.chmod(path, 0o600)
    assert_error(run(["serve", "--port", "0", "--data-dir", d, "--token-file", path, "--token", TOKEN], binary=binary),
                 "usage", "--token")
    with open(os.path.join(d, "bad"), "w") as f:
        f.write("short\n")
    os.chmod(os.path.join(d, "bad"), 0o600)
    assert_error(run(["serve", "--port", "0", "--data-dir", d, "--token-file", os.path.join(d, "bad")], binary=binary),
                 "usage", "--token-file")
    env = dict(os.environ, NEURALFORGE_TOKEN="a b")
    assert_error(run(["serve", "--port", "0", "--data-dir", d], binary=binary, env=env), "usage", "NEURALFORGE_TOKEN")
    s = Serve(d, token="env-token-0123456789abcdef", args=["--token-file", path])  # the file wins over the environment
    try:
        assert f"token=file-token-0123456789abcdef" in s.url, s.url
        assert s.raw("GET", "/api/status", headers={"Authorization": "Bearer file-token-0123456789abcdef"}).status == 200
        assert s.raw("GET", "/api/status", headers={"Authorization": "Bearer env-token-0123456789abcdef"}).status == 401
    finally:
        s.stop()
    s = Serve(d, token="env-token-0123456789abcdef")
    try:
        assert s.raw("GET", "/api/status", headers={"Authorization": "Bearer env-token-0123456789abcdef"}).status == 200
        assert s.raw("GET", "/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).status == 401
    finally:
        s.stop()


def half_open(port, n, source="127.0.0.1"):
    """n connections that sent part of a request's headers and then nothing."""
    socks = []
    for _ in range(n):
        c = socket.socket()
        c.bind((source, 0))
        c.connect(("127.0.0.1", port))
        c.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Slow: " % port)
        socks.append(c)
    return socks


def status_answers(s, source="127.0.0.1", timeout=10):
    """GET /api/status from source: (status or None when the connection was refused or dropped, seconds)."""
    t0 = time.time()
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=timeout, source_address=(source, 0))
    try:
        c.request("GET", "/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
        r = c.getresponse()
        r.read()
        return r.status, time.time() - t0
    except (ConnectionError, http.client.HTTPException, socket.timeout):
        return None, time.time() - t0
    finally:
        c.close()


@test
def idle_half_open_connections_do_not_lock_out_a_request():
    d = tmpdir()
    s = Serve(d)
    socks = []
    try:
        socks = half_open(s.port, 300)
        time.sleep(0.5)  # every one accepted and waiting
        code, took = status_answers(s)
        assert code == 200 and took < 2.0, (code, took)  # the acceptance: within 2 s
    finally:
        for c in socks:
            c.close()
        s.stop()


@test
def one_client_address_gets_at_most_its_share_of_the_connections():
    d = tmpdir()
    s = Serve(d)
    socks = []
    try:
        share, total = s.msg.get("max_per_client", 500), s.msg.get("max_connections", 1000)  # the defaults if unsaid
        assert 300 < share < total, s.msg  # room for the half-open test above, and for other addresses
        socks = half_open(s.port, share)
        time.sleep(1)
        code, _ = status_answers(s)
        assert code is None, code  # 127.0.0.1 has used its share
        code, took = status_answers(s, source="127.0.0.2")  # another client still gets in
        assert code == 200, (code, took)
    finally:
        for c in socks:
            c.close()
        s.stop()


@test
def an_idle_connection_is_closed_after_the_timeout():
    d = tmpdir()
    s = Serve(d, args=["--idle-timeout", "3"])
    try:
        assert s.msg["idle_timeout"] == 3, s.msg
        silent = socket.create_connection(("127.0.0.1", s.port))
        partial, = half_open(s.port, 1)
        t0 = time.time()
        for c in (silent, partial):
            c.settimeout(30)
            assert c.recv(100) == b"", "an idle connection was answered"
        took = time.time() - t0
        assert 2.0 < took < 20, took  # the timeout, not at once, and not never
        for c in (silent, partial):
            c.close()
        assert status_answers(s)[0] == 200
    finally:
        s.stop()
    for bad in ("0", "2", "3601"):
        assert_error(run(["serve", "--port", "0", "--data-dir", d, "--idle-timeout", bad]), "usage", "--idle-timeout")


@test
def a_quiet_event_stream_outlives_the_timeout():
    d = tmpdir()
    s = Serve(d, args=["--idle-timeout", "3"])
    pid_child = None
    try:
        pid = tiny_project(s, steps=20000)["id"]
        with_data(s, pid)
        train = s.ok("POST", f"/api/projects/{pid}/train")
        run_row = s.wait_run(train["id"], lambda r: r["status"] == "running" and r["pid"])
        pid_child = run_row["pid"]
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        c.request("GET", f"/api/runs/{train['id']}/events", headers={"Authorization": f"Bearer {TOKEN}"})
        r = c.getresponse()
        assert r.status == 200
        while b"event: message" not in r.readline():
            pass
        os.kill(pid_child, signal.SIGSTOP)  # the run is alive, and silent
        time.sleep(0.5)
        keep_alives, t0 = 0, time.time()
        while time.time() - t0 < 10:  # more than three idle timeouts
            line = r.readline()
            assert line, "the quiet stream was closed"
            keep_alives += line.startswith(b": keep-alive")
        assert keep_alives >= 3, keep_alives
        os.kill(pid_child, signal.SIGCONT)
        t0 = time.time()
        while b"event: message" not in r.readline():  # the same stream carries the run on
            assert time.time() - t0 < 30
        c.close()
        s.ok("POST", f"/api/runs/{train['id']}/stop")
        s.wait_run(train["id"], lambda r: r["status"] == "stopped")
    finally:
        if pid_child:
            try:
                os.kill(pid_child, signal.SIGCONT)
            except ProcessLookupError:
                pass
        s.stop()



def db_bytes(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in ("nf.db", "nf.db-wal") if os.path.exists(os.path.join(d, f)))


@test
def the_data_directory_and_its_files_are_private():
    d = tmpdir()
    data = os.path.join(d, "data")
    s = Serve(data)
    try:
        pid = tiny_project(s, steps=60)["id"]
        with_data(s, pid)
        train = s.ok("POST", f"/api/projects/{pid}/train")
        s.wait_run(train["id"], lambda r: r["status"] == "done")
        exp = s.ok("POST", f"/api/projects/{pid}/export", {"format": "gguf"})
        s.wait_run(exp["id"], lambda r: r["status"] == "done")
    finally:
        s.stop()
    seen = set()
    for root, dirs, files in os.walk(data):
        for name in dirs + files:
            path = os.path.join(root, name)
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            assert mode & 0o077 == 0, (path, oct(mode))
            seen.add(name)
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    for name in ("nf.db", "logs", f"{train['id']}.log", "corpus.txt", "model.ckpt", f"{exp['id']}.gguf", "manifest.json"):
        assert name in seen, (name, sorted(seen))
    # a directory others can read is left as it is, but named on stderr
    os.chmod(data, 0o755)
    s = Serve(data)
    s.stop()
    log = open(s.log).read()
    assert "open to other users" in log and "chmod 700" in log, log
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o755


@test
def ids_are_never_reused_and_a_deleted_projects_files_and_logs_go():
    d = tmpdir()
    s = Serve(d)
    try:
        first = tiny_project(s)["id"]
        with_data(s, first)
        second = tiny_project(s)["id"]
        with_data(s, second)
        runs = s.ok("GET", f"/api/projects/{second}/runs")
        logs = [os.path.join(d, "logs", f"{r['id']}.log") for r in runs]
        assert logs and all(os.path.exists(p) for p in logs), logs
        code, _ = s.request("DELETE", f"/api/projects/{second}")
        assert code == 204
        assert not os.path.exists(os.path.join(d, "projects", str(second)))
        assert not any(os.path.exists(p) for p in logs), logs
        third = tiny_project(s)["id"]
        assert third > second, (second, third)
        with_data(s, third)
        new_run = s.ok("GET", f"/api/projects/{third}/runs")[0]["id"]
        assert new_run > max(r["id"] for r in runs), (runs, new_run)
        assert [p["id"] for p in s.ok("GET", "/api/projects")] == [first, third]
    finally:
        s.stop()
    s = Serve(d)  # and across a restart
    try:
        code, _ = s.request("DELETE", f"/api/projects/{third}")
        assert code == 204
        assert tiny_project(s)["id"] > third
    finally:
        s.stop()


# nf.db as the first schema (ids reused; PRAGMA user_version 0) left it: made by that code
# (projects "first" and "second", a tokenize run in each, then "second" deleted) and dumped with
# sqlite3's iterdump; {D} stands for the data directory. The deleted run 2 left logs/2.log behind.
OLD_DB = """
CREATE TABLE messages(  run_id INTEGER NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, json TEXT NOT NULL,  PRIMARY KEY(run_id, seq));
INSERT INTO "messages" VALUES(1,1,'ingest_file','{"type":"ingest_file","path":"a.txt","status":"new","bytes":600,"documents":1,"tokens":601,"masked_tokens":0,"tokenized":true}');
INSERT INTO "messages" VALUES(1,2,'ingest_done','{"type":"ingest_done","files":1,"tokenized":1,"skipped":0,"removed":0,"bytes":600,"documents":1,"tokens":601,"masked_tokens":0,"shards":1,"generation":1,"output":"{D}/projects/1/data","ms":49.826147}');
CREATE TABLE projects(  id INTEGER PRIMARY KEY, name TEXT NOT NULL, model TEXT, tokenizer TEXT NOT NULL,  options TEXT NOT NULL, created_at REAL NOT NULL);
INSERT INTO "projects" VALUES(1,'first',NULL,'builtin:bytes','{"dim":16,"n_layers":1,"n_heads":2,"seq_len":16,"steps":5}',1.79655966882094907761e+09);
CREATE TABLE runs(  id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,  pid INTEGER, args TEXT NOT NULL, output TEXT, created_at REAL NOT NULL, started_at REAL, ended_at REAL,  exit_code INTEGER NOT NULL DEFAULT -1, error TEXT, stop_requested INTEGER NOT NULL DEFAULT 0,  messages INTEGER NOT NULL DEFAULT 0);
INSERT INTO "runs" VALUES(1,1,'tokenize','done',28812,'["ingest","--source","{D}/projects/1/uploads","--output","{D}/projects/1/data","--tokenizer","builtin:bytes","--incremental"]',NULL,1.796559668841089487e+09,1.79655966884951305388e+09,1796559669.03298,0,NULL,0,2);
CREATE INDEX runs_by_project ON runs(project_id, id);
CREATE INDEX messages_by_type ON messages(run_id, type, seq);
"""


@test
def a_database_of_the_first_schema_is_migrated_and_then_never_reuses_ids():
    d = tmpdir()
    db = sqlite3.connect(os.path.join(d, "nf.db"))
    db.executescript("PRAGMA journal_mode=WAL;" + OLD_DB.replace("{D}", d))
    db.close()
    os.makedirs(os.path.join(d, "logs"))
    for run_id in (1, 2):
        open(os.path.join(d, "logs", f"{run_id}.log"), "w").write(f"output of the old run {run_id}\n")
    s = Serve(d)
    try:
        assert [(p["id"], p["name"]) for p in s.ok("GET", "/api/projects")] == [(1, "first")]
        old = s.ok("GET", "/api/runs/1")
        assert old["kind"] == "tokenize" and old["status"] == "done" and old["messages"] == 2, old
        assert old["final"]["tokens"] == 601, old
        pid = tiny_project(s)["id"]
        with_data(s, pid)
        run = s.ok("GET", f"/api/projects/{pid}/runs")[0]
        assert run["id"] > 2, run  # logs/2.log is a deleted run's: not this one's
        assert "old run" not in open(os.path.join(d, "logs", f"{run['id']}.log")).read()
        code, _ = s.request("DELETE", f"/api/projects/{pid}")
        assert code == 204 and not os.path.exists(os.path.join(d, "logs", f"{run['id']}.log"))
        again = tiny_project(s)["id"]
        assert again > pid, (pid, again)
    finally:
        s.stop()
    db = sqlite3.connect(os.path.join(d, "nf.db"))
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    sql = " ".join(row[0] for row in db.execute("SELECT sql FROM sqlite_master WHERE name IN ('projects', 'runs')"))
    assert sql.count("AUTOINCREMENT") == 2, sql
    assert db.execute("SELECT count(*) FROM messages WHERE run_id = 1").fetchone()[0] == 2
    db.execute("PRAGMA user_version = 99")  # a database from a newer version is refused, not touched
    db.commit()
    db.close()
    p = subprocess.run([NF, "serve", "--port", "0", "--data-dir", d, "--token", TOKEN], capture_output=True, timeout=60)
    assert p.returncode != 0 and b"schema version 99" in p.stdout, p.stdout


@test
def names_with_nul_or_control_characters_are_refused():
    d = tmpdir()
    s = Serve(d)
    try:
        pid = tiny_project(s)["id"]
        for bad in ("evil.txt%00.sh", "evil.sh%00.txt", "a%01b.txt", "a%0Ab.txt", "a%7Fb.txt", "%00"):
            code, body = s.request("POST", f"/api/projects/{pid}/uploads?name={bad}", raw=b"hello",
                                   headers={"Content-Type": "application/octet-stream"})
            assert code == 400 and ("NUL" in body["error"]) == ("%00" in bad), (bad, code, body)
        assert s.ok("GET", f"/api/projects/{pid}")["uploads"] == []
        for bad in (r"a\u0000b", r"evil\u0000", r"a\nb", r"a\tb", r"a\u001bb", r"a\u007fb", r"a\u0085b", r"\u0000"):
            for method, path in (("POST", "/api/projects"), ("PATCH", f"/api/projects/{pid}")):
                code, body = s.request(method, path, raw=('{"name": "%s"}' % bad).encode(),
                                       headers={"Content-Type": "application/json"})
                assert code == 400 and ("name" in body["error"] or "NUL" in body["error"]), (bad, method, code, body)
        code, body = s.request("POST", f"/api/projects/{pid}/generate", raw=rb'{"prompt": "hi\u0000there"}',
                               headers={"Content-Type": "application/json"})
        assert code == 400 and "NUL" in body["error"], (code, body)
        assert [p["name"] for p in s.ok("GET", "/api/projects")] == ["tiny"]
        assert s.ok("PATCH", f"/api/projects/{pid}", {"name": "tiny, renamed"})["name"] == "tiny, renamed"
        ok = s.ok("POST", "/api/projects", {"name": "Caf\u00e9 \u2615 (v2)", "tokenizer": "builtin:bytes"})
        assert ok["name"] == "Caf\u00e9 \u2615 (v2)"
    finally:
        s.stop()


@test
def a_long_run_leaves_nf_db_small_and_its_steps_span_the_run():
    # the bound docs/dashboard.md gives: a run keeps at most about 3,500 steps' step and batch
    # messages, whatever its length (the first schema kept every one: about 3.6 MB per 10,000 steps here)
    steps, bound = 10000, 2 * 2**20
    d = tmpdir()
    s = Serve(d)
    try:
        pid = s.ok("POST", "/api/projects", {"name": "long", "tokenizer": "builtin:bytes", "options": {
            "dim": 8, "n_layers": 1, "n_heads": 1, "seq_len": 8, "steps": steps, "batch": 1, "val_every": 0,
            "ckpt_every": steps}})["id"]
        with_data(s, pid)
    finally:
        s.stop()  # a clean stop folds the WAL into nf.db: its size is then the data's
    before = db_bytes(d)
    s = Serve(d)
    try:
        train = s.ok("POST", f"/api/projects/{pid}/train")
        wal, deadline = 0, time.time() + 1500
        while time.time() < deadline:
            r = s.ok("GET", f"/api/runs/{train['id']}")
            if r["status"] not in ("starting", "running"):
                break
            wal = max(wal, os.path.getsize(os.path.join(d, "nf.db-wal")))
            time.sleep(1)
        assert r["status"] == "done", r
        assert r["last"]["step"] == steps and r["final"]["total_steps"] == steps, r
        stored = [m["message"]["step"] for m in s.ok("GET", f"/api/runs/{train['id']}/messages?type=step")]
        batches = [m["message"]["step"] for m in s.ok("GET", f"/api/runs/{train['id']}/messages?type=batch")]
    finally:
        s.stop()
    grew = db_bytes(d) - before
    print(f"    nf.db grew {grew} bytes over {steps} steps ({len(stored)} steps kept); the WAL peaked at {wal} bytes")
    assert stored == sorted(set(stored)) and batches == stored, (len(stored), len(batches))
    assert stored[:1000] == list(range(1, 1001)), stored[:5]        # the first steps, every one
    assert stored[-1000:] == list(range(steps - 999, steps + 1))    # the latest, every one
    gaps = [b - a for a, b in zip(stored, stored[1:])]
    assert max(gaps) <= 16, max(gaps)                                # between, evenly spread
    assert len(stored) <= 3500, len(stored)
    assert grew <= bound, (grew, bound)
    assert wal <= 6 * 2**20, wal


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
    s = Serve(d, args=("--max-memory", "none"))  # a budget lifted, then back: the project exists, its run may not
    try:
        pid = s.ok("POST", "/api/projects", {"name": "huge", "tokenizer": "builtin:bytes", "options": HUGE})["id"]
        with_data(s, pid)
    finally:
        s.stop()
    s = Serve(d, args=("--max-memory", "64G"))
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
    s = Serve(d, args=("--max-jobs", "1"))
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
    s = Serve(d, args=("--max-memory", "4G"))
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


@test
def a_second_server_over_the_data_directory_or_on_a_taken_port_starts_nothing():
    # a server refused (the data directory served already; the port taken) must start no run: else a queued run
    # would start twice, or start in a server that then fails and leaves it
    d, other = tmpdir(), tmpdir()
    s = Serve(d)
    try:
        first, second = (tiny_project(s, steps=steps)["id"] for steps in (100000, 20))
        for p in (first, second):
            with_data(s, p)
        s.ok("POST", f"/api/projects/{first}/train")
        b = s.ok("POST", f"/api/projects/{second}/train")
        assert b["status"] == "queued", b
        r = run(["serve", "--port", "0", "--data-dir", d], binary=NF_SERVE, timeout=30)
        assert_error(r, "usage", f"--data-dir '{os.path.realpath(d)}' is in use by another neuralforge serve (pid {s.p.pid})")
        assert s.ok("GET", f"/api/runs/{b['id']}")["status"] == "queued"
    finally:
        s.stop()
    taken = Serve(other)
    try:
        r = run(["serve", "--port", str(taken.port), "--data-dir", d], binary=NF_SERVE, timeout=30)
        assert_error(r, "io", f"cannot listen on 127.0.0.1:{taken.port}")
    finally:
        taken.stop()
    assert not os.path.exists(os.path.join(d, "logs", f"{b['id']}.log")), "the queued run was started"
    s = Serve(d)  # the lock went with the process that held it
    try:
        done = s.wait_run(b["id"], lambda r: r["status"] in ("done", "error"))
        assert done["status"] == "done", done
    finally:
        s.stop()


# ---- base models of every kind: Hugging Face directories, GGUF files, llama2.c files (issue 19) ----

LLAMA3 = os.path.join(ROOT, "tests", "js", "node_modules", "@lenml", "tokenizer-llama3", "models")
_BASES = {}


def base_models():
    """A tiny random Llama model trained one step with Llama 3's tokenizer, exported as an HF directory (its
    tokenizer.json and tokenizer_config.json beside it) and as a GGUF file; made once, copied per test."""
    if not _BASES:
        d = tmpdir()
        src = os.path.join(d, "src")
        os.makedirs(src)
        shutil.copy(shared("tinyshakespeare.txt"), os.path.join(src, "t.txt"))
        r = run(["ingest", "--source", src, "--output", os.path.join(d, "data"), "--tokenizer", LLAMA3])
        assert r.rc == 0, r.stdout
        ckpt = os.path.join(d, "m.ckpt")
        r = run(["train", "--init", "--dim", "16", "--n-layers", "1", "--n-heads", "2", "--seq-len", "256",
                 "--tokenizer", LLAMA3, "--data", os.path.join(d, "data"), "--steps", "1", "--ckpt", ckpt])
        assert r.rc == 0, r.stdout
        for fmt, out in (("safetensors", "hf"), ("gguf", "m.gguf")):
            r = run(["export", "--ckpt", ckpt, "--format", fmt, "--output", os.path.join(d, out)])
            assert r.rc == 0, r.stdout
        _BASES.update(hf=os.path.join(d, "hf"), gguf=os.path.join(d, "m.gguf"))
    return _BASES


def models_dir(data):
    """data/models/ with an HF directory (hf), the same without its tokenizer (bare), a GGUF file (g.gguf), a
    llama2.c file (m.bin) and two names that are no model: a directory without config.json, a FIFO; and
    data/tokenizers/llama3 (Llama 3's tokenizer directory)."""
    b = base_models()
    models = os.path.join(data, "models")
    shutil.copytree(b["hf"], os.path.join(models, "hf"))
    os.makedirs(os.path.join(models, "bare"))
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(b["hf"], f), os.path.join(models, "bare", f))
    shutil.copy(b["gguf"], os.path.join(models, "g.gguf"))
    shutil.copy(shared("stories260K.bin"), os.path.join(models, "m.bin"))
    os.makedirs(os.path.join(models, "notes"))
    open(os.path.join(models, "notes", "README.txt"), "w").write("not a model")
    os.mkfifo(os.path.join(models, "pipe"))
    os.makedirs(os.path.join(data, "tokenizers"))
    os.symlink(LLAMA3, os.path.join(data, "tokenizers", "llama3"))


@test
def the_models_folder_lists_hf_directories_and_gguf_files_as_base_models():
    data = os.path.join(tmpdir(), "data")
    models_dir(data)
    s = Serve(data)
    try:
        assert s.ok("GET", "/api/status")["models"] == [
            {"name": "bare", "kind": "hf", "has_tokenizer": False},
            {"name": "g.gguf", "kind": "gguf", "has_tokenizer": True},
            {"name": "hf", "kind": "hf", "has_tokenizer": True},
            {"name": "m.bin", "kind": "llama2c", "has_tokenizer": False}], s.ok("GET", "/api/status")
        # an HF directory with a tokenizer.json: a project that names none uses the directory's
        for body in ({}, {"tokenizer": None}):
            p = s.ok("POST", "/api/projects", {"name": "hf", "model": "hf", **body})
            assert p["tokenizer"] is None and p["effective_tokenizer"] == "models/hf", p
        p = s.ok("POST", "/api/projects", {"name": "hf2", "model": "hf", "tokenizer": "llama3"})
        assert p["tokenizer"] == "llama3" and p["effective_tokenizer"] == "tokenizers/llama3", p
        # a GGUF file with its vocabulary embedded: the same, or a tokenizer the project names
        p = s.ok("POST", "/api/projects", {"name": "g", "model": "g.gguf", "tokenizer": "llama3"})
        assert p["model"] == "g.gguf" and p["effective_tokenizer"] == "tokenizers/llama3", p
        for body in ({}, {"tokenizer": None}):
            p = s.ok("POST", "/api/projects", {"name": "g", "model": "g.gguf", **body})
            assert p["tokenizer"] is None and p["effective_tokenizer"] == "models/g.gguf", p
        # a llama2.c file keeps builtin:bytes as the default; null (the model's own) needs a model that has one
        assert s.ok("POST", "/api/projects", {"name": "m", "model": "m.bin"})["tokenizer"] == "builtin:bytes"
        for model in ("m.bin", "bare", None):
            code, out = s.request("POST", "/api/projects", {"name": "x", "model": model, "tokenizer": None})
            assert code == 400 and "tokenizer" in out["error"], (model, code, out)
        # names in models/ that are no model, and one that is not there
        for bad, why in (("notes", "neither"), ("pipe", "neither"), ("missing", "no model")):
            code, out = s.request("POST", "/api/projects", {"name": "x", "model": bad, "tokenizer": "llama3"})
            assert code == 400 and why in out["error"], (bad, code, out)
        # changing the model of a project whose tokenizer was the model's needs a tokenizer with it
        pid = s.ok("POST", "/api/projects", {"name": "hf3", "model": "hf"})["id"]
        code, out = s.request("PATCH", f"/api/projects/{pid}", {"model": "m.bin"})
        assert code == 400 and "tokenizer" in out["error"], out
        assert s.ok("GET", f"/api/projects/{pid}")["model"] == "hf"
        p = s.ok("PATCH", f"/api/projects/{pid}", {"model": "m.bin", "tokenizer": "builtin:bytes"})
        assert p["model"] == "m.bin" and p["effective_tokenizer"] == "builtin:bytes", p
        p = s.ok("PATCH", f"/api/projects/{pid}", {"model": "hf", "tokenizer": None})
        assert p["tokenizer"] is None and p["effective_tokenizer"] == "models/hf", p
    finally:
        s.stop()


def run_text(s, run_id):
    """A generate run's streamed text, once it ends done."""
    msgs, statuses = events(s, run_id)
    assert statuses[-1]["status"] == "done", (statuses[-1], msgs[-3:])
    assert msgs[-1]["type"] == "generate_done", msgs[-3:]
    return "".join(m["text"] for m in msgs if m["type"] == "token")


@test
def projects_on_an_hf_directory_and_a_gguf_file_tokenize_train_and_generate():
    data = os.path.join(tmpdir(), "data")
    models_dir(data)
    s = Serve(data)
    hf_dir = os.path.join(data, "models", "hf")
    try:
        pid = s.ok("POST", "/api/projects", {"name": "hf", "model": "hf",
                                              "options": {"steps": 2, "batch": 2, "seq": 16}})["id"]
        gen = s.ok("POST", f"/api/projects/{pid}/generate",
                   {"prompt": "Hello", "max_tokens": 8, "temperature": 0, "source": "base"})
        a = gen["args"]
        assert a[a.index("--model") + 1] == hf_dir and a[a.index("--tokenizer") + 1] == hf_dir, a
        assert run_text(s, gen["id"]), "no text from the HF directory"
        with_data(s, pid)  # ingest with the directory's tokenizer.json
        tok = s.ok("GET", f"/api/projects/{pid}/runs")[0]
        assert tok["args"][tok["args"].index("--tokenizer") + 1] == hf_dir, tok["args"]
        train = s.ok("POST", f"/api/projects/{pid}/train")
        r = s.wait_run(train["id"], lambda r: r["status"] not in ACTIVE + ("queued",))
        assert r["status"] == "done" and r["final"]["total_steps"] == 2, r
        gen = s.ok("POST", f"/api/projects/{pid}/generate", {"prompt": "Hello", "max_tokens": 8, "source": "checkpoint"})
        assert run_text(s, gen["id"])
        # a GGUF base with a tokenizer from tokenizers/
        gid = s.ok("POST", "/api/projects", {"name": "g", "model": "g.gguf", "tokenizer": "llama3"})["id"]
        gen = s.ok("POST", f"/api/projects/{gid}/generate",
                   {"prompt": "Hello", "max_tokens": 8, "temperature": 0, "source": "base"})
        assert gen["args"][gen["args"].index("--model") + 1] == os.path.join(data, "models", "g.gguf")
        assert run_text(s, gen["id"])
        # a GGUF base with its own vocabulary as the tokenizer: the same greedy text
        own = s.ok("POST", "/api/projects", {"name": "g2", "model": "g.gguf"})["id"]
        gen2 = s.ok("POST", f"/api/projects/{own}/generate",
                    {"prompt": "Hello", "max_tokens": 8, "temperature": 0, "source": "base"})
        assert gen2["args"][gen2["args"].index("--tokenizer") + 1] == os.path.join(data, "models", "g.gguf")
        assert run_text(s, gen2["id"]) == run_text(s, gen["id"])
    finally:
        s.stop()


CHAT = [{"role": "user", "content": "Hi there!"}, {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Name a colour, café \u2014 ok?"}]


@test
def a_chat_request_writes_its_conversation_privately_and_runs_generate_chat():
    data = os.path.join(tmpdir(), "data")
    models_dir(data)
    s = Serve(data)
    try:
        pid = s.ok("POST", "/api/projects", {"name": "hf", "model": "hf"})["id"]
        gen_path = f"/api/projects/{pid}/generate"
        for body, why in (({"messages": []}, "messages"), ({"messages": "hi"}, "messages"),
                          ({"messages": [{"role": "user"}]}, "[0]"),
                          ({"messages": [{"role": "user", "content": 1}]}, "[0]"),
                          ({"messages": [{"role": "user", "content": "a", "name": "x"}]}, "[0]"),
                          ({"messages": [{"role": "tool", "content": "a"}]}, "role"),
                          ({"messages": CHAT[:2]}, "[1]"),
                          ({"messages": [CHAT[0], {"role": "system", "content": "s"}, CHAT[0]]}, "[1]"),
                          ({"messages": [{"role": "system", "content": "s"}, CHAT[0]], "system": "t"}, "once"),
                          ({"messages": CHAT, "system": 3}, "system"),
                          ({"messages": CHAT, "prompt": "x"}, "not both"),
                          ({"prompt": "x", "system": "s"}, "system"),
                          ({"messages": CHAT, "source": "bogus"}, "source"),
                          ({"messages": CHAT, "source": 1}, "source"),
                          ({"messages": [CHAT[0]] * 1001}, "messages")):
            code, out = s.request("POST", gen_path, {"source": "base", **body})
            assert code == 400 and why in out["error"], (body, code, out)
        assert s.ok("GET", f"/api/projects/{pid}/runs") == []  # nothing recorded for a refused request
        assert not os.path.exists(os.path.join(data, "projects", str(pid), "chats"))
        run1 = s.ok("POST", gen_path, {"messages": CHAT, "system": "Be brief.", "source": "base", "max_tokens": 8})
        a = run1["args"]
        assert a[0] == "generate" and "--chat" in a and "--prompt" not in a, a
        assert a[a.index("--tokenizer") + 1] == os.path.join(data, "models", "hf"), a
        path = a[a.index("--messages") + 1]
        assert path == os.path.join(data, "projects", str(pid), "chats", f"{run1['id']}.json"), path
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, oct(os.stat(path).st_mode)
        assert json.load(open(path, encoding="utf-8")) == [{"role": "system", "content": "Be brief."}] + CHAT
        assert [f for f in os.listdir(os.path.dirname(path))] == [os.path.basename(path)]  # no temporary left
        s.wait_run(run1["id"], lambda r: r["status"] not in ACTIVE + ("queued",))
        # a system message in the conversation itself is the same; each run has its own file
        run2 = s.ok("POST", gen_path, {"messages": [{"role": "system", "content": "Be brief."}] + CHAT, "source": "base"})
        path2 = run2["args"][run2["args"].index("--messages") + 1]
        assert path2 != path and json.load(open(path2)) == json.load(open(path))
        s.wait_run(run2["id"], lambda r: r["status"] not in ACTIVE + ("queued",))
    finally:
        s.stop()


@test
def a_chat_turn_streams_the_assistants_reply():
    """Needs `generate --chat --messages FILE` (the lead's part of issue 19)."""
    data = os.path.join(tmpdir(), "data")
    models_dir(data)
    s = Serve(data)
    try:
        pid = s.ok("POST", "/api/projects", {"name": "hf", "model": "hf"})["id"]
        prompt_tokens = []
        for messages in (CHAT[:1], CHAT):
            gen = s.ok("POST", f"/api/projects/{pid}/generate",
                       {"messages": messages, "system": "Be brief.", "source": "base", "temperature": 0,
                        "max_tokens": 8})
            msgs, statuses = events(s, gen["id"])
            assert statuses[-1]["status"] == "done", (statuses[-1], msgs[-3:])
            done = msgs[-1]
            assert done["type"] == "generate_done", msgs[-3:]
            assert 1 <= sum(m["type"] == "token" for m in msgs) <= 8
            prompt_tokens.append(done["prompt_tokens"])
        # the earlier turns were rendered into the second run's prompt, each with its template header
        assert prompt_tokens[1] > prompt_tokens[0] + 8, prompt_tokens
    finally:
        s.stop()


if __name__ == "__main__":
    run_all()
