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
  chromium             # the dashboard's browser tests (headless)
  python3              # /usr/bin/python3 runs the reference tests
  python3-torch        # PyTorch: the independent reference for every op
  python3-numpy
  python3-sentencepiece  # SentencePiece: the reference for the tokenizer
  fortunes             # the main job's built-in corpus (make demo)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm run the independent readers of the tests (tests/js). A
# Node.js that is already there (Debian's, or another packaging) is used.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# npm packages, at the versions package-lock.json pins, into tests/js/node_modules
cd "$(dirname "$0")/.."
if [ ! -f tests/js/node_modules/.package-lock.json ] ||
   [ tests/js/package-lock.json -nt tests/js/node_modules/.package-lock.json ]; then
  echo "setup: installing the npm packages of tests/js" >&2
  npm ci --prefix tests/js --no-audit --no-fund --loglevel=error >&2
fi
