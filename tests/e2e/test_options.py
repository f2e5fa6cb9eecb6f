"""train's one option table (src/train_options.c) against everything that lists the options: the table is
read from `neuralforge train --options-json`, and nothing here names an option by hand. `train --help` must
list every option with the table's range and default; `serve` must accept exactly the options the table
lets a dashboard set (and refuse the others, out-of-range values and wrong kinds, naming the option), and
serve the same table at GET /api/options; docs/dashboard.md's list (written by
scripts/train_options_doc.py) and the README's train flags must show the same ranges and defaults; and
web/app.js must build the Config form from /api/options instead of a list of its own (the browser test,
tests/browser/test_dashboard.mjs, checks the form's fields in the page against the same table)."""
import json
import os
import re
import shutil

from harness import ROOT, Serve, run, run_all, shared, test, tmpdir

DOC = os.path.join(ROOT, "docs", "dashboard.md")
README = os.path.join(ROOT, "README.md")
APP = os.path.join(ROOT, "web", "app.js")
BEGIN, END = "<!-- train-options begin", "<!-- train-options end -->"
SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")


def options():
    r = run(["train", "--options-json"])
    assert r.rc == 0, r.stderr
    opts = r.one("train_options")["options"]
    assert len(opts) > 30 and len({o["name"] for o in opts}) == len(opts), opts
    return opts


def number(text):
    """A number as the docs write it: 5e-4, 0.000001, 10⁹, 2⁵³−1 is not used."""
    text = text.strip().strip("`").replace("−", "-")
    m = re.fullmatch(r"10([⁰¹²³⁴⁵⁶⁷⁸⁹⁻]+)", text)
    return 10.0 ** int(m.group(1).translate(SUPERSCRIPT)) if m else float(text)


def same(a, b):
    return a == b or abs(a - b) <= 1e-12 * max(abs(a), abs(b))


def check_default(o, text, where):
    """text: how `where` writes o's default."""
    d = o["default"]
    if o["type"] == "flag" or d is None:
        return
    if isinstance(d, str):
        assert text.strip().strip("`") == d, (where, o["name"], text, d)
    else:
        assert same(number(text.split()[0]), d), (where, o["name"], text, d)


@test
def cli_help_lists_every_option_with_range_and_default():
    opts = options()
    r = run(["train", "--help"], ndjson=False)
    assert r.rc == 0
    lines = {}
    for line in r.stderr.decode().splitlines():
        m = re.match(r"^  --(\S+)\s+(.*)$", line)
        if m:
            lines[m.group(1)] = m.group(2)
    assert set(lines) == {o["name"] for o in opts}, set(lines) ^ {o["name"] for o in opts}
    for o in opts:
        text = lines[o["name"]]
        assert o["help"] in text, (o["name"], text)
        if o["type"] in ("int", "float"):
            m = re.search(r"range (\S+)\.\.([^;)\s]+)", text)
            assert m and same(number(m.group(1)), o["min"]) and same(number(m.group(2)), o["max"]), (o, text)
        if o["type"] == "choice":
            assert "|".join(o["choices"]) in text, (o, text)
        m = re.search(r"default (.+)\)$", text)
        if o["default"] is None and o.get("default_text"):
            assert m and m.group(1) == o["default_text"], (o, text)
        elif o["default"] is not None and o["type"] != "flag":
            assert m, (o, text)
            check_default(o, m.group(1), "train --help")
        else:
            assert not m, (o, text)


def settable_value(o):
    """A value train takes for o on its own (with lora_rank 1 for the LoRA ones)."""
    if o["type"] == "flag":
        return True
    if o["default"] is not None:
        return o["default"]
    return o["min"] if o["type"] in ("int", "float") else "x"


def serve_with_model(d):
    for sub, name in (("models", "stories260K.bin"), ("tokenizers", "tok512.bin")):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
        shutil.copy(shared(name), os.path.join(d, sub, name))
    return Serve(d)


def project(s, options, lora=False):
    body = {"name": "p", "options": options}
    body.update({"model": "stories260K.bin", "tokenizer": "tok512.bin"} if lora else {"tokenizer": "builtin:bytes"})
    return s.request("POST", "/api/projects", body)


@test
def server_accepts_exactly_the_dashboard_options():
    opts = options()
    s = serve_with_model(tmpdir())
    try:
        served = s.ok("GET", "/api/options")["options"]
        assert served == opts, "GET /api/options differs from train --options-json"
        code, _ = s.request("GET", "/api/options", token=False)
        assert code == 401, code
        for o in opts:
            key, lora = o["key"], o["group"] == "lora"
            extra = {"lora_rank": 1} if lora and key != "lora_rank" else {}
            code, body = project(s, {**extra, key: settable_value(o)}, lora=lora)
            if not o["dashboard"]:
                assert code == 400 and f"unknown option '{key}'" in body["error"], (key, code, body)
                continue
            assert code == 201, (key, code, body)
            assert body["options"][key] == settable_value(o), (key, body)
            # what train refuses, the server refuses, naming the flag
            bad = []
            if o["type"] in ("int", "float"):
                step = 1 if o["type"] == "int" else abs(o["max"]) or 1
                bad = [o["max"] + step, o["min"] - (1 if o["type"] == "int" else (o["min"] / 2 if o["min"] > 0 else 1))]
            elif o["type"] == "choice":
                bad = ["no-such-choice"]
            elif o.get("syntax") == "lora_targets":
                bad = ["no-such-target"]
            for v in bad:
                code, body = project(s, {**extra, key: v}, lora=lora)
                assert code == 400 and f"--{o['name']}" in body["error"], (key, v, code, body)
            wrong = 1 if o["type"] == "flag" else [1]
            code, body = project(s, {**extra, key: wrong}, lora=lora)
            assert code == 400 and key in body["error"], (key, code, body)
        for o in opts:  # a key is the flag's name with '_' for '-', never the name itself
            if "-" in o["name"]:
                code, body = project(s, {o["name"]: settable_value(o)}, lora=o["group"] == "lora")
                assert code == 400 and "unknown option" in body["error"], (o["name"], code, body)
        code, body = project(s, {"no_such_option": 1})
        assert code == 400 and "no_such_option" in body["error"], body
        # the shape is a from-scratch project's only
        for o in opts:
            if o["group"] == "shape" and o["dashboard"]:
                code, body = project(s, {o["key"]: settable_value(o)}, lora=True)
                assert code == 400 and "shape" in body["error"], (o["key"], code, body)
    finally:
        s.stop()


def doc_rows():
    text = open(DOC, encoding="utf-8").read()
    assert BEGIN in text and END in text, "docs/dashboard.md lost its train-options markers"
    section = text.split(BEGIN, 1)[1].split(END, 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    return rows


@test
def dashboard_doc_lists_the_same_options():
    opts = options()
    rows = doc_rows()
    dash = [o for o in opts if o["dashboard"]]
    assert set(rows) == {o["key"] for o in dash}, set(rows) ^ {o["key"] for o in dash}
    words = {"shape": "model shape", "batches": "steps, batches", "optimizer": "optimizer",
             "validation": "validation", "lora": "LoRA"}
    for o in dash:
        _, group, values, default, meaning = rows[o["key"]]
        assert group.startswith(words[o["group"]]), (o["key"], group)
        assert meaning == o["help"], (o["key"], meaning)
        if o["type"] in ("int", "float"):
            lo, hi = values.split(" … ")
            assert same(number(lo), o["min"]) and same(number(hi), o["max"]), (o["key"], values)
        elif o["type"] == "choice":
            assert re.findall(r"`([^`]+)`", values) == o["choices"], (o["key"], values)
        if o.get("dashboard_default") is not None:
            assert same(number(default.split()[0]), o["dashboard_default"]), (o["key"], default)
            assert re.search(r"`train`: (\S+)\)", default) and same(
                number(re.search(r"`train`: (\S+)\)", default).group(1)), o["default"]), (o["key"], default)
        elif o["default"] is None:
            assert default == o.get("default_text", "—"), (o["key"], default)
        else:
            check_default(o, default, "docs/dashboard.md")


@test
def readme_train_flags_have_the_same_ranges_and_defaults():
    opts = options()
    text = open(README, encoding="utf-8").read()
    section = text.split("\n### `train`\n", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]  # not on an escaped \|
        if len(cells) == 5 and re.fullmatch(r"`--[a-z0-9-]+`", cells[0]):
            rows[cells[0].strip("`")[2:]] = cells
    for o in opts:
        assert o["name"] in rows, f"README's train flags lack --{o['name']}"
        _, _, default, values, _ = rows[o["name"]]
        if o["type"] in ("int", "float"):
            lo, hi = values.split(" … ")
            assert same(number(lo), o["min"]) and same(number(hi), o["max"]), (o["name"], values)
        check_default(o, default, "README")


@test
def the_config_form_has_no_list_of_its_own():
    """The Config form's rows come from GET /api/options: no option list, range or LoRA target name in
    web/app.js (the browser test compares the page's fields with the table)."""
    app = open(APP, encoding="utf-8").read()
    assert "'/api/options'" in app
    opts = options()
    for o in opts:
        assert not re.search(rf"key:\s*'{o['key']}'", app), f"web/app.js lists the option {o['key']} again"
    targets = next(o for o in opts if o.get("syntax") == "lora_targets")["targets"]
    for t in targets:
        assert not re.search(rf"\b{t['alias']}:\s*\d", app), f"web/app.js names the LoRA target {t['alias']}"


if __name__ == "__main__":
    run_all()
