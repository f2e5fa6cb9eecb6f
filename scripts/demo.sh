#!/usr/bin/env bash
# The main job, end to end, on the built-in default: describe the model,
# tokenize a corpus with its tokenizer, and generate a story with live
# output. Every command's NDJSON goes to out/demo/*.ndjson; what a person
# reads goes to the terminal.
set -euo pipefail
cd "$(dirname "$0")/.."

NF=build/neuralforge
DATA=${NF_SHARED_DATA:-../shared/data}
OUT=out/demo
mkdir -p "$OUT"

MODEL=$DATA/stories260K.bin
TOKENIZER=$DATA/tok512.bin
CORPUS=$DATA/tinyshakespeare.txt
for f in "$MODEL" "$TOKENIZER" "$CORPUS"; do
  if [ ! -r "$f" ]; then
    echo "demo: $f is missing; the demo reads the model and corpus from ../shared/data" >&2
    exit 1
  fi
done

step() { printf '\n== %s\n' "$*" >&2; }

step "model and tokenizer"
$NF info --model "$MODEL" --tokenizer "$TOKENIZER" | tee "$OUT/info.ndjson"

step "tokenize $CORPUS"
$NF tokenize --input "$CORPUS" --output "$OUT/corpus.bin" --tokenizer "$TOKENIZER" --split blank \
  | tee "$OUT/tokenize.ndjson"

step "generate (greedy, 200 tokens)"
$NF generate --model "$MODEL" --tokenizer "$TOKENIZER" --prompt "" --temperature 0 --max-tokens 200 --text

step "generate (sampled, streamed as NDJSON to $OUT/generate.ndjson)"
$NF generate --model "$MODEL" --tokenizer "$TOKENIZER" --prompt "Once upon a time, a little dog" \
  --temperature 0.8 --top-p 0.9 --seed 42 --max-tokens 120 > "$OUT/generate.ndjson"
tail -n 1 "$OUT/generate.ndjson"

step "done: token data in $OUT/corpus.bin, message logs in $OUT/"
