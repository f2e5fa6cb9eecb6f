#!/usr/bin/env python3
"""Writes docs/dashboard.md's list of a project's training options from train's option table
(`neuralforge train --options-json`, src/train_options.c): the lines between the
`<!-- train-options begin -->` and `<!-- train-options end -->` markers.

    /usr/bin/python3 scripts/train_options_doc.py [--binary build/neuralforge]

tests/e2e/test_options.py checks the doc against the table, so a changed option fails there until
this is run again."""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "dashboard.md")
BEGIN = "<!-- train-options begin: written by scripts/train_options_doc.py; do not edit by hand -->"
END = "<!-- train-options end -->"
GROUPS = {"shape": "model shape (from scratch only)", "batches": "steps, batches and precision",
          "optimizer": "optimizer", "validation": "validation and checkpoints", "lora": "LoRA (with a base model only)"}


def fmt(x):
    """A number as JSON wrote it (2, 0.0005, 1e-12)."""
    return json.dumps(x)


def value_range(o):
    if o["type"] in ("int", "float"):
        return f"{fmt(o['min'])} … {fmt(o['max'])}"
    if o["type"] == "choice":
        return ", ".join(f"`{c}`" for c in o["choices"])
    if o["type"] == "flag":
        return "`true`, `false`"
    return "text"


def default(o):
    d = o.get("dashboard_default")
    if d is not None:
        return f"{fmt(d)} (`train`: {fmt(o['default'])})"
    if o["type"] == "flag":
        return "`false`"
    if o["default"] is None:
        return o.get("default_text") or "—"
    return f"`{o['default']}`" if isinstance(o["default"], str) else fmt(o["default"])


def render(options):
    lines = [BEGIN, "", "| key | group | values | default | meaning |", "|---|---|---|---|---|"]
    for o in options:
        if o["dashboard"]:
            lines.append(f"| `{o['key']}` | {GROUPS[o['group']]} | {value_range(o)} | {default(o)} | {o['help']} |")
    return "\n".join(lines + ["", END])


def options_of(binary):
    out = subprocess.run([binary, "train", "--options-json"], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["options"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "neuralforge"))
    args = ap.parse_args()
    text = open(DOC, encoding="utf-8").read()
    if BEGIN not in text or END not in text:
        sys.exit(f"{DOC}: the train-options markers are missing")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    new = head + render(options_of(args.binary)) + tail
    tmp = DOC + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:  # whole or not at all
        f.write(new)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, DOC)
    print(f"{DOC}: {'unchanged' if new == text else 'updated'}")


if __name__ == "__main__":
    main()
