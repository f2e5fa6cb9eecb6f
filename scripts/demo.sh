#!/usr/bin/env bash
# The main job, end to end, on the built-in default:
#   1. a real corpus installed from Debian: the `fortunes` package (~2.7 MB of text),
#   2. tokenized with the built-in byte-level vocabulary (no files needed),
#   3. a small LLaMA trained from scratch for about a minute, through the dashboard's
#      server (`neuralforge serve`, as the browser drives it), with live progress,
#   4. evaluated over the whole corpus (the `val` lines of training measure the held-out 5 %),
#      exported as a llama2.c model, and sampled.
# NDJSON from every command goes to out/demo/*.ndjson; the terminal shows what a
# person reads. DEMO_STEPS changes the length of the training run.
set -euo pipefail
cd "$(dirname "$0")/.."

NF=build/neuralforge
OUT=out/demo
FORTUNES=/usr/share/games/fortunes
STEPS=${DEMO_STEPS:-600}
mkdir -p "$OUT"

step() { printf '\n== %s\n' "$*" >&2; }

step "corpus: every fortune in $FORTUNES, one document each"
for f in "$FORTUNES"/*; do
  case "$f" in *.dat|*.u8) continue ;; esac
  [ -f "$f" ] || continue
  sed 's/^%$/<|endoftext|>/' "$f"
  echo '<|endoftext|>'
done > "$OUT/fortunes.txt"
$NF tokenize --input "$OUT/fortunes.txt" --output "$OUT/fortunes.bin" --tokenizer builtin:bytes \
  | tee "$OUT/tokenize.ndjson"

step "train from scratch through the dashboard: 4 layers, dim 128, byte-level, $STEPS steps of 16 x 128 tokens"
rm -rf "$OUT/dashboard"
CKPT=$(/usr/bin/python3 scripts/demo_dashboard.py "$NF" "$OUT/dashboard" "$OUT/fortunes.txt" "$OUT/train.ndjson" "$STEPS")
cp "$CKPT" "$OUT/model.ckpt"
read -r PROJECT RUN < "$OUT/train.ndjson.ids"

step "evaluate the checkpoint: mean loss over evenly spaced windows of the corpus"
$NF eval --ckpt "$OUT/model.ckpt" --data "$OUT/fortunes.bin" --batch 8 --seq 128 --batches 10 \
  | tee "$OUT/eval.ndjson"

step "export as a llama2.c model file"
$NF export --ckpt "$OUT/model.ckpt" --format llama2c --output "$OUT/model.bin" | tee "$OUT/export.ndjson"

step "a sample from the exported model"
$NF generate --model "$OUT/model.bin" --tokenizer builtin:bytes --prompt "The meaning of life is" \
  --temperature 0.8 --top-p 0.9 --seed 7 --max-tokens 300 --text

step "done: checkpoint $OUT/model.ckpt, model $OUT/model.bin (tokenizer: builtin:bytes), logs in $OUT/"
echo "Watch this run in the dashboard: $NF serve --data-dir $OUT/dashboard, then open the URL it prints (project 'fortunes' #$PROJECT, run #$RUN)." >&2
