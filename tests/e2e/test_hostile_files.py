"""The hostile files of tests/fuzz/hostile.py (sizes of 2^63, overflowing
products, offsets past the end, nesting 10^6 deep, truncations) through
`info`, `eval`, `generate`, `train`, `import` and `ingest`: each must give one
clean NDJSON `error` line and a non-zero exit, with no sanitizer report under
the ASan/UBSan build and no huge allocation (4 GiB address-space limit on the
normal build; `out_of_memory` is not an accepted answer). docs/reliability.md
has the table of what each one answers."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz"))
import hostile  # noqa: E402

from harness import NF, NF_ASAN, run_all, test  # noqa: E402

def check_kind(kind):
    env = hostile.Env()
    seen = 0
    for name, _what, k, data in hostile.cases():
        if k.split(":")[0] != kind:
            continue
        for argv in hostile.commands(env, k, data):
            for binary in (NF, NF_ASAN):
                try:
                    hostile.check(binary, argv)
                except AssertionError as e:
                    build = "asan" if binary == NF_ASAN else "normal"
                    raise AssertionError(f"{name}: {build} build, {argv[0]}: {e}") from None
            seen += 1
    assert seen > 0, kind


@test
def hostile_model_files_give_one_clean_error():
    check_kind("model")


@test
def hostile_gguf_files_give_one_clean_error():
    check_kind("gguf")


@test
def hostile_safetensors_files_give_one_clean_error():
    check_kind("safetensors")


@test
def hostile_checkpoints_give_one_clean_error():
    check_kind("checkpoint")


@test
def hostile_tokenizers_give_one_clean_error():
    check_kind("tokenizer")


@test
def hostile_config_files_give_one_clean_error():
    check_kind("config")


@test
def hostile_ingest_sources_give_one_clean_error():
    check_kind("ingest")


@test
def hostile_manifests_give_one_clean_error():
    check_kind("manifest")


@test
def hostile_token_data_gives_one_clean_error():
    check_kind("tokens")


if __name__ == "__main__":
    run_all()
