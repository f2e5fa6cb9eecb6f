#!/usr/bin/env bash
# Installs what NeuralForge needs on Debian 12, with apt-get. Idempotent:
# packages already present are left alone, so a second run is instant.
set -euo pipefail

PACKAGES=(
  build-essential      # gcc, make
  libdnnl-dev          # oneDNN: the GEMM behind the CPU backend
  libcmocka-dev        # the C unit-test framework
  libmicrohttpd-dev    # serve: the dashboard's HTTP server
  libsqlite3-dev       # serve: projects, runs and their messages
  libjansson-dev       # the JSON reader (src/json_parse.c): config, manifests, JSONL, safetensors headers
  libpcre2-dev         # tokenizer.json's pre-tokenizer regexes (src/pretok.c): \p{L} and friends, JIT
  libutf8proc-dev      # tokenizer.json's Unicode normalizers (NFC ...) (src/pretok.c)
  libxxhash-dev        # XXH3: the checksum of checkpoints and LoRA base models (src/checkpoint.c)
  libopenmpi-dev       # MPI (src/dist.c): data-parallel train under mpirun; mpicc tells the build its paths
  openmpi-bin          # mpirun
  chromium             # the dashboard's browser tests (headless)
  python3              # /usr/bin/python3 runs the reference tests
  python3-torch        # PyTorch: the independent reference for every op
  libopenblas0-pthread # the BLAS PyTorch's products run on (else the reference BLAS, ~50x slower)
  python3-numpy
  python3-sentencepiece  # SentencePiece: the reference for the tokenizer
  fortunes             # the main job's built-in corpus (make demo)
  clang                # the fuzz harnesses (tests/fuzz): libFuzzer needs clang
  libclang-rt-14-dev   # clang 14's runtimes: libFuzzer, ASan and UBSan for clang
  clang-format         # the house style (.clang-format): make format, and the suite's format check
)

. "$(dirname "$0")/apt_install.sh"
# Node.js and npm run the independent readers of the tests (tests/js). A
# Node.js that is already there (Debian's, or another packaging) is used.
mapfile -t missing < <(apt_missing "${PACKAGES[@]}"; node_missing)
apt_install setup "${missing[@]}"

# npm packages, at the versions each package-lock.json pins: tests/js (the
# tests' readers and playwright-core) and web (uPlot, served by `serve`)
cd "$(dirname "$0")/.."
for dir in tests/js web; do
  if [ ! -f $dir/node_modules/.package-lock.json ] ||
     [ $dir/package-lock.json -nt $dir/node_modules/.package-lock.json ]; then
    echo "setup: installing the npm packages of $dir" >&2
    npm ci --prefix $dir --no-audit --no-fund --loglevel=error >&2
  fi
done
