"""The main job's training, run through the dashboard as a user would run it
in the browser: starts `neuralforge serve` on a data directory, creates a
project, uploads the corpus, tokenizes it, trains while following the run's
events (progress on stderr), stores the run's NDJSON, and stops the server.
Prints the checkpoint's path on stdout. Used by scripts/demo.sh.

    python3 scripts/demo_dashboard.py NEURALFORGE DATA_DIR CORPUS NDJSON_OUT STEPS
"""
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import time


def main():
    nf, data_dir, corpus, ndjson_out, steps = sys.argv[1:6]
    token = secrets.token_hex(16)
    server = subprocess.Popen([nf, "serve", "--port", "0", "--data-dir", data_dir], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, env=dict(os.environ, NEURALFORGE_TOKEN=token))
    port = json.loads(server.stdout.readline())["port"]

    def call(method, path, body=None, raw=None):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Authorization": f"Bearer {token}"}
        if data is not None:  # the server takes only these media types (a cross-site form cannot send them)
            headers["Content-Type"] = "application/octet-stream" if raw is not None else "application/json"
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        out = json.loads(r.read() or b"null")
        c.close()
        if r.status >= 300:
            raise SystemExit(f"dashboard: {method} {path}: {r.status} {out}")
        return out

    def wait(run_id):
        while True:
            r = call("GET", f"/api/runs/{run_id}")
            if r["status"] not in ("starting", "running", "restarting"):
                return r
            time.sleep(0.3)

    try:
        options = {"dim": 128, "n_layers": 4, "n_heads": 4, "seq_len": 256, "val_split": 0.05, "val_every": 100,
                   "val_batches": 10, "steps": int(steps), "batch": 16, "seq": 128, "lr": 3e-3, "warmup": 30,
                   "lr_min": 3e-4, "ckpt_every": 100}
        project = call("POST", "/api/projects", {"name": "fortunes", "tokenizer": "builtin:bytes", "options": options})
        name = os.path.basename(corpus)
        call("POST", f"/api/projects/{project['id']}/uploads?name={name}", raw=open(corpus, "rb").read())
        run = wait(call("POST", f"/api/projects/{project['id']}/tokenize", {"upload": name})["id"])
        if run["status"] != "done":
            raise SystemExit(f"dashboard: tokenizing failed: {run['error']}")
        print(f"tokenized: {run['final']['tokens']} tokens", file=sys.stderr)
        train = call("POST", f"/api/projects/{project['id']}/train")
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        c.request("GET", f"/api/runs/{train['id']}/events", headers={"Authorization": f"Bearer {token}"})
        r = c.getresponse()
        with open(ndjson_out, "w") as log:
            event = None
            while True:
                line = r.readline()
                if not line:
                    break
                line = line.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "message":
                    log.write(line[6:] + "\n")
                    m = json.loads(line[6:])
                    if m["type"] == "step" and (m["step"] % 50 == 0 or m["step"] == 1):
                        print(f"step {m['step']}/{m['total']}  loss {m['loss']:.4f}  {m['tok_s']:.0f} tok/s",
                              file=sys.stderr)
                    elif m["type"] in ("val", "done", "error"):
                        print(line[6:], file=sys.stderr)
        c.close()
        run = wait(train["id"])
        if run["status"] != "done":
            raise SystemExit(f"dashboard: training ended {run['status']}: {run['error']}")
        print(run["checkpoint"]["path"])
        print(f"{project['id']} {train['id']}", file=open(ndjson_out + ".ids", "w"))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=120)


if __name__ == "__main__":
    main()
