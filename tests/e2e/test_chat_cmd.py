"""`neuralforge chat` and `generate --chat`, on tiny models (dim 32, one
layer) with the real Llama 3 and Qwen 3 vocabularies, trained for a few
steps on yes/no chats made by `ingest` (so that they answer, then emit the
template's end-of-turn token):
- each turn's prompt (the turn message's prompt_ids) equals the model's own
  chat_template rendered by @huggingface/jinja with add_generation_prompt,
  tokenized by Hugging Face tokenizers (chat_ref.py);
- a later turn runs only its new tokens through the model (the cache holds
  the earlier ones), and replies as a fresh run over the whole rendered
  conversation does (greedy);
- replies stop at end-of-turn ("eos"), or at --max-tokens / the context;
- errors: no template, a template the vocabulary cannot spell, a context
  that overflows, bad flags."""
import json
import os
import pty
import subprocess

from chat_ref import LLAMA3, QWEN3, reference, tokenizer_with_template
from harness import NF, assert_error, run, run_all, shared, test, tmpdir

SYSTEM = "Answer yes or no."
QUESTIONS = {"Is the sky blue?": "Yes.", "Is fire cold?": "No.", "Do fish swim?": "Yes.", "Can a rock fly?": "No.",
             "Is water wet?": "Yes.", "Do cats bark?": "No."}
# per model: its tokenizer directory, vocabulary, template (auto finds it), whether the test chats have a system
# message (Qwen 3's template has no default one; Llama 3's keeps it first)
MODELS = {
    "llama3": dict(dir=LLAMA3, vocab=128256, template="llama3", system=SYSTEM, eot=128009),
    "qwen3": dict(dir=QWEN3, vocab=151669, template="chatml", system=None, eot=151645),
}
TURNS = ["Is the sky blue?", "Do cats bark?", "Is water wet?"]
_trained = {}


def msg(role, content):
    return {"role": role, "content": content}


def trained(name):
    """A checkpoint of a tiny model on `name`'s vocabulary, trained on chats through its template (once a run)."""
    if name in _trained:
        return _trained[name]
    m = MODELS[name]
    d = tmpdir()
    src = os.path.join(d, "src")
    os.makedirs(src)
    qs = list(QUESTIONS)
    with open(os.path.join(src, "chats.jsonl"), "w") as f:
        for i in range(120):
            chat = [msg("system", SYSTEM)] if m["system"] else []
            for k in range(1 + i % 3):
                q = qs[(i * 5 + k * 3) % len(qs)]
                chat += [msg("user", q), msg("assistant", QUESTIONS[q])]
            f.write(json.dumps({"messages": chat}) + "\n")
    data, ckpt = os.path.join(d, "data"), os.path.join(d, "m.ckpt")
    r = run(["ingest", "--source", src, "--output", data, "--tokenizer", m["dir"]])
    assert r.rc == 0 and r.one("ingest_done")["chat_template"] == m["template"], r.stdout
    r = run(["train", "--init", "--dim", 32, "--n-layers", 1, "--n-heads", 2, "--vocab-size", m["vocab"],
             "--seq-len", 96, "--data", data, "--steps", 50, "--lr", 1e-2, "--batch", 4, "--tokenizer", m["dir"],
             "--ckpt", ckpt, "--val-every", 0], timeout=300)
    assert r.rc == 0, r.messages[-1:]
    _trained[name] = ckpt
    return ckpt


def chat(name, lines, *extra, stdin=None, ndjson=True):
    m = MODELS[name]
    args = ["chat", "--ckpt", trained(name), "--tokenizer", m["dir"], "--temperature", 0, *extra]
    if m["system"]:
        args += ["--system", m["system"]]
    return run(args, stdin=stdin if stdin is not None else "".join(line + "\n" for line in lines).encode(),
               ndjson=ndjson)


def turns_of(r):
    """Per turn: (its turn message, the ids of its token messages)."""
    return [(t, [m["token_id"] for m in tokens]) for t, tokens in turn_tokens(r)]


def turn_tokens(r):
    """Per turn: (its turn message, its token messages)."""
    out, tokens = [], []
    for message in r.messages:
        if message["type"] == "token":
            tokens.append(message)
        elif message["type"] == "turn":
            out.append((message, tokens))
            tokens = []
    assert not tokens, "token messages after the last turn"
    return out


def assert_same_logprobs(a, b):
    """Token messages with the same ids and log-probabilities (to float rounding: the runs batch differently)."""
    assert [m["token_id"] for m in a] == [m["token_id"] for m in b]
    for x, y in zip(a, b):
        assert abs(x["logprob"] - y["logprob"]) <= 1e-4 * max(1.0, abs(y["logprob"])), (x, y)


def conversation(name, lines, replies):
    """The messages of a chat whose user turns are lines and whose answers are replies (one fewer or as many)."""
    chat = [msg("system", SYSTEM)] if MODELS[name]["system"] else []
    for i, line in enumerate(lines):
        chat.append(msg("user", line))
        if i < len(replies):
            chat.append(msg("assistant", replies[i]))
    return chat


def reference_prompts(name, lines, replies):
    """The reference's rendering (with the generation prompt) of each turn's conversation, and its ids."""
    d = MODELS[name]["dir"]
    chats = [conversation(name, lines[:k + 1], replies[:k]) for k in range(len(lines))]
    rendered = [x["rendered"] for x in reference(d, [{"messages": c, "add_generation_prompt": True} for c in chats])]
    ids = [x["ids"] for x in reference(d, [{"text": t} for t in rendered])]
    assert len(rendered) == len(ids) == len(lines)
    return rendered, ids


def check_turns(name):
    r = chat(name, TURNS, "--prompt-ids", "--max-tokens", 12, "--logprobs")
    assert r.rc == 0, r.stdout
    turns = turns_of(r)
    assert len(turns) == len(TURNS), r.stdout
    replies = [t["text"] for t, _ in turns]
    rendered, want = reference_prompts(name, TURNS, replies)
    for k, ((t, reply_ids), ref) in enumerate(zip(turns, want)):
        # (a) the prompt is the model's own template's rendering, token for token
        assert t["prompt_ids"] == ref, (name, k, t["prompt_ids"], ref)
        assert t["turn"] == k + 1 and t["prompt_tokens"] == len(ref) and t["tokens"] == len(reply_ids)
        # (c) the trained model answers, then ends its turn with the template's end-of-turn token
        assert t["stop_reason"] == "eos" and 0 < t["tokens"] < 12 and MODELS[name]["eot"] not in reply_ids, t
        if k == 0:
            assert t["prompt_tokens_processed"] == len(ref)
            continue
        # (b) the cache kept the previous prompt and reply: only the rest of this one ran
        before, before_ids = turns[k - 1][0]["prompt_ids"], turns[k - 1][1]
        assert ref[:len(before) + len(before_ids)] == before + before_ids, (name, k)
        assert t["prompt_tokens_processed"] == len(ref) - len(before) - len(before_ids), (name, k, t)
    # (b) a fresh run over the whole last prompt replies the same, token for token, with the same log-probabilities
    fresh = run(["generate", "--ckpt", trained(name), "--tokenizer", MODELS[name]["dir"], "--temperature", 0,
                 "--max-tokens", 12, "--parse-special", "--logprobs", "--prompt", rendered[-1]])
    assert fresh.rc == 0, fresh.stdout
    done = fresh.one("generate_done")
    assert done["prompt_tokens"] == len(want[-1]) and done["stop_reason"] == "eos", done
    assert_same_logprobs(turn_tokens(r)[-1][1], fresh.of_type("token"))


@test
def llama3_turns_render_as_the_models_template_and_reuse_the_cache():
    check_turns("llama3")


@test
def qwen3_turns_render_as_the_models_template_and_reuse_the_cache():
    check_turns("qwen3")


@test
def max_tokens_stops_a_reply_and_the_next_turn_closes_it():
    r = chat("llama3", TURNS[:2], "--prompt-ids", "--max-tokens", 1)
    assert r.rc == 0, r.stdout
    (t1, ids1), (t2, _) = turns_of(r)
    assert t1["stop_reason"] == "max_tokens" and t1["tokens"] == 1 and len(ids1) == 1
    # the reply's one token was never run (nothing followed it): turn 2 runs it, the end-of-turn token and the rest
    assert t2["prompt_ids"][:t1["prompt_tokens"] + 2] == t1["prompt_ids"] + ids1 + [MODELS["llama3"]["eot"]]
    assert t2["prompt_tokens_processed"] == t2["prompt_tokens"] - t1["prompt_tokens"]
    # empty lines are no turns; a last line without a newline is one
    r = chat("llama3", [], stdin=b"\n\r\n" + TURNS[0].encode() + b"\n\n" + TURNS[1].encode())
    assert r.rc == 0 and [t["turn"] for t, _ in turns_of(r)] == [1, 2], r.stdout
    r = chat("llama3", [], stdin=b"")
    assert r.rc == 0 and r.messages == []


@test
def generate_chat_renders_one_user_message_as_chat_does():
    for name in ("llama3", "qwen3"):
        m = MODELS[name]
        first_run = chat(name, TURNS[:1], "--prompt-ids")
        first, first_tokens = turns_of(first_run)[0], turn_tokens(first_run)[0][1]
        args = ["generate", "--ckpt", trained(name), "--tokenizer", m["dir"], "--temperature", 0, "--chat",
                "--prompt", TURNS[0]]
        if m["system"]:
            args += ["--system", m["system"]]
        r = run(args + ["--logprobs"])
        assert r.rc == 0, r.stdout
        done = r.one("generate_done")
        assert done["prompt_tokens"] == first[0]["prompt_tokens"] and done["stop_reason"] == "eos", done
        assert [t["token_id"] for t in r.of_type("token")] == first[1]
        assert all(t["logprob"] <= 0 for t in r.of_type("token")) and "logprob" not in first_tokens[0]
        # plain text: the reply alone (not the rendered prompt), on its line
        r = run(args + ["--text"], ndjson=False)
        assert r.rc == 0 and r.stdout.decode() == first[0]["text"] + "\n", r.stdout
        # chat --text: a reply a line
        r = chat(name, TURNS[:2], "--text", ndjson=False)
        assert r.rc == 0 and r.stdout.decode().count("\n") == 2 and r.stdout.decode().startswith(first[0]["text"])


@test
def generate_chat_messages_continues_a_whole_conversation_as_chat_does():
    """generate --chat --messages (the dashboard's chat): the conversation so far from a file gives the reply
    chat gives at that turn, token for token, with the same log-probabilities."""
    for name in ("llama3", "qwen3"):
        m = MODELS[name]
        r = chat(name, TURNS, "--max-tokens", 12, "--logprobs")
        assert r.rc == 0, r.stdout
        turns = turn_tokens(r)
        path = os.path.join(tmpdir(), "messages.json")
        with open(path, "w") as f:
            json.dump(conversation(name, TURNS, [t["text"] for t, _ in turns[:-1]]), f)
        g = run(["generate", "--ckpt", trained(name), "--tokenizer", m["dir"], "--temperature", 0, "--chat",
                 "--messages", path, "--max-tokens", 12, "--logprobs"])
        assert g.rc == 0, g.stdout
        assert g.one("generate_done")["prompt_tokens"] == turns[-1][0]["prompt_tokens"]
        assert_same_logprobs(turns[-1][1], g.of_type("token"))
    base = ["generate", "--ckpt", trained("qwen3"), "--tokenizer", MODELS["qwen3"]["dir"], "--chat"]
    d = tmpdir()
    for name, content, mention in (("assistant_last", [msg("user", "a"), msg("assistant", "b")],
                                    "must end with the user's message"),
                                   ("object", {"messages": []}, "not a JSON array"),
                                   ("no_content", [{"role": "user"}], "content")):
        path = os.path.join(d, name + ".json")
        with open(path, "w") as f:
            json.dump(content, f)
        assert_error(run(base + ["--messages", path]), "usage", mention)
    assert_error(run(base[:-1] + ["--messages", path]), "usage", "--messages needs --chat")
    assert_error(run(base + ["--messages", path, "--prompt", "x"]), "usage", "excludes --prompt")


# A ChatML template that writes a system message of its own when a chat has none, as Qwen 2.5's and SmolLM2's do
# (written for this test in their shape; the real ones are not in our npm packages).
DEFAULT_SYSTEM_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\nYou are a careful assistant. "
    "Answer briefly.<|im_end|>\\n' }}{%- endif %}{%- for message in messages %}{{- '<|im_start|>' + "
    "message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


@test
def a_templates_default_system_message_is_rendered_when_a_chat_has_none():
    tok = tokenizer_with_template(DEFAULT_SYSTEM_TEMPLATE, source=QWEN3)
    lines = TURNS[:2]
    for system in (None, "Answer yes or no."):
        args = ["chat", "--ckpt", trained("qwen3"), "--tokenizer", tok, "--temperature", 0, "--max-tokens", 6,
                "--prompt-ids"] + (["--system", system] if system else [])
        r = run(args, stdin="".join(line + "\n" for line in lines).encode())
        assert r.rc == 0, r.stdout
        turns = r.of_type("turn")
        chats, replies = [], [t["text"] for t in turns]
        for k in range(len(lines)):
            chat = [msg("system", system)] if system else []
            for i in range(k + 1):
                chat.append(msg("user", lines[i]))
                if i < k:
                    chat.append(msg("assistant", replies[i]))
            chats.append({"messages": chat, "add_generation_prompt": True})
        rendered = [x["rendered"] for x in reference(tok, chats)]
        assert ("You are a careful assistant." in rendered[0]) == (system is None), rendered[0]
        want = [x["ids"] for x in reference(tok, [{"text": t} for t in rendered])]
        assert [t["prompt_ids"] for t in turns] == want, (system, turns, want)


@test
def a_conversation_past_the_context_is_refused():
    first = turns_of(chat("llama3", TURNS[:1], "--prompt-ids"))[0][0]
    n = first["prompt_tokens"]
    # room for the first prompt and its reply, not for the second turn: the first is answered, then the error
    r = chat("llama3", TURNS[:2], "--context", n + 4)
    err = assert_error(r, "usage", "turn 2: the conversation is")
    assert "--context" in err["message"] and r.rc == 2
    assert [t["turn"] for t, _ in turns_of(r)] == [1]
    # a reply that reaches the end of the cache stops there
    r = chat("llama3", TURNS[:1], "--context", n + 1)
    (t, ids), = turns_of(r)
    assert r.rc == 0 and t["stop_reason"] in ("context", "eos") and len(ids) <= 2, r.stdout
    r = chat("llama3", TURNS[:1], "--context", n)
    assert_error(r, "usage", f"turn 1: the conversation is {n} tokens with this message; the context holds {n}")


@test
def templates_that_cannot_be_used_are_refused_before_any_input():
    ckpt = trained("llama3")
    base = ["chat", "--ckpt", ckpt, "--temperature", 0]
    gemma = "{% for m in messages %}<start_of_turn>{{ m.role }}\n{{ m.content }}<end_of_turn>\n{% endfor %}"
    for template, why in ((None, "has no chat_template"), (gemma, "is none that --chat-template auto knows")):
        d = tokenizer_with_template(template)
        r = run(base + ["--tokenizer", d], stdin=b"hi\n")
        assert_error(r, "usage", why)
        assert "--chat-template" in r.one("error")["message"] and not r.of_type("token")
        r = run(["generate", "--ckpt", ckpt, "--tokenizer", d, "--chat", "--prompt", "hi"])
        assert_error(r, "usage", why)
        # naming the template works
        r = run(base + ["--tokenizer", d, "--chat-template", "llama3", "--max-tokens", 2], stdin=b"hi\n")
        assert r.rc == 0 and len(r.of_type("turn")) == 1, r.stdout
    # a template whose special tokens the vocabulary lacks: refused before stdin is read
    r = run(base + ["--tokenizer", LLAMA3, "--chat-template", "chatml"], stdin=b"")
    assert_error(r, "bad_tokenizer", "the tokenizer has no <|im_start|> token, which chat template chatml needs")


@test
def bad_flags_are_errors_naming_the_flag():
    ckpt, tok = trained("llama3"), LLAMA3
    base = ["chat", "--ckpt", ckpt, "--tokenizer", tok]
    for args, mention in (
            (["--context", 0], "--context"),
            (["--context", 97], "--context 97 is more than the model's seq_len 96"),
            (["--chat-template", "none"], "--chat-template"),
            (["--chat-template", "gemma"], "--chat-template"),
            (["--temperature", -1], "--temperature"),
            (["--max-tokens", 0], "--max-tokens"),
            (["--prompt-ids", "--text"], "--prompt-ids"),
            (["--logprobs", "--text"], "--logprobs is a field of the NDJSON token messages"),
            (["--prompt"], "--prompt"),
    ):
        r = run(base + args, stdin=b"hi\n")
        assert_error(r, "usage", mention)
        assert r.rc == 2
    assert_error(run(["chat", "--ckpt", ckpt], stdin=b"hi\n"), "usage", "chat needs --tokenizer")
    gen = ["generate", "--ckpt", ckpt, "--tokenizer", tok, "--prompt", "hi"]
    assert_error(run(gen + ["--system", "s"]), "usage", "--system needs --chat")
    assert_error(run(gen + ["--chat-template", "llama3"]), "usage", "--chat-template needs --chat")
    assert_error(run(gen + ["--chat", "--parse-special"]), "usage", "--parse-special does not apply to --chat")
    # a line past the limit
    r = run(base, stdin=b"x" * ((1 << 20) + 1) + b"\n")
    assert_error(r, "usage", "a message on stdin is longer than 1048576 bytes")


@test
def a_terminal_is_asked_for_each_message_on_stderr():
    """stdin a terminal (a pseudo-terminal here): "> " on stderr before each message, a newline at Ctrl-D;
    stdout, a pipe, still carries only NDJSON."""
    m = MODELS["llama3"]
    master, slave = pty.openpty()
    p = subprocess.Popen([NF, "chat", "--ckpt", trained("llama3"), "--tokenizer", m["dir"], "--temperature", "0",
                          "--system", m["system"]], stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(slave)
    try:
        os.write(master, TURNS[0].encode() + b"\n" + TURNS[1].encode() + b"\n\x04")  # \x04: Ctrl-D, end of input
        out, err = p.communicate(timeout=120)
    finally:
        os.close(master)
    assert p.returncode == 0, err
    turns = [json.loads(line) for line in out.decode().splitlines() if '"turn"' in line]
    assert [t["turn"] for t in turns] == [1, 2], out
    assert err.decode().count("> ") == 3 and err.decode().endswith("> \n"), err


@test
def tokenizer_bin_models_chat_in_llama2s_template():
    model, tok = shared("stories260K.bin"), shared("tok512.bin")
    r = run(["chat", "--model", model, "--tokenizer", tok, "--temperature", 0, "--max-tokens", 5, "--prompt-ids",
             "--system", "Be brief."], stdin=b"Hello there\nTell me a story\n")
    assert r.rc == 0, r.stdout
    (t1, ids1), (t2, _) = turns_of(r)
    # BOS [INST] <<SYS>> ... [/INST], then the answer and EOS and the next [INST] with its own BOS
    assert t1["prompt_ids"][0] == 1 and t2["prompt_ids"].count(1) == 2 and 2 in t2["prompt_ids"]
    assert t2["prompt_ids"][:len(t1["prompt_ids"])] == t1["prompt_ids"]
    # the same prompt as generate --chat gives
    r = run(["generate", "--model", model, "--tokenizer", tok, "--temperature", 0, "--max-tokens", 5, "--chat",
             "--system", "Be brief.", "--prompt", "Hello there"])
    assert r.one("generate_done")["prompt_tokens"] == t1["prompt_tokens"]
    assert [m["token_id"] for m in r.of_type("token")] == ids1


if __name__ == "__main__":
    run_all()
