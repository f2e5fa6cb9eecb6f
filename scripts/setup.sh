#!/usr/bin/env bash
# Installs what NeuralForge needs on Debian 12, with apt-get. Idempotent:
# packages already present are left alone, so a second run is instant.
set -euo pipefail

PACKAGES=(
  build-essential      # gcc, make
  libdnnl-dev          # oneDNN: the GEMM behind the CPU backend
  libcmocka-dev        # the C unit-test framework
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
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
