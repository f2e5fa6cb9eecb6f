#!/usr/bin/env bash
# Builds llama.cpp's llama-bench for bench/generate_vs_llamacpp.py, the same-run peer of `benchmark --generate`
# (`make llamacpp-peer`; not part of `make test`, ~7 minutes on 2 cores).
#
# The source comes from npm, pinned: node-llama-cpp ships the llama.cpp release it binds as a git bundle
# (llama/gitRelease.bundle; 3.22.1 holds llama.cpp of 2026-09-28, ggml 0.25.1). `npm pack` fetches that one
# package (no dependencies, no install scripts), its integrity is checked against the hash below, and
# llama-bench is built from the bundle as upstream's CMake builds it for this CPU (GGML_NATIVE: the same
# -march=native a user's own build gets). Everything lands in build/peer/; a second run with the same
# version is instant.
set -euo pipefail

VERSION=3.22.1
INTEGRITY=sha512-bltIipuWmc123H7tMIgDGKSsSrhmhlQYeVUC48XTjVW7XGJJiJJyCdlTMzQ/LiWoPkGDpcL4FviDpgw7qfTiDw==

cd "$(dirname "$0")/.."
PEER=build/peer
BIN=$PEER/llama.cpp/build/bin/llama-bench
STAMP=$PEER/llama.cpp/.node-llama-cpp-version
if [ -x "$BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$VERSION" ]; then
  echo "setup-llamacpp: $BIN (from node-llama-cpp $VERSION) is built" >&2
  exit 0
fi

# what the fetch and the build run (a Node.js of another packaging serves, as for scripts/setup.sh)
. scripts/apt_install.sh
missing=()
for tool in cmake g++ git; do command -v $tool >/dev/null || missing+=("$tool"); done
mapfile -t -O ${#missing[@]} missing < <(node_missing)
apt_install setup-llamacpp "${missing[@]}"

rm -rf "$PEER"
mkdir -p "$PEER"
echo "setup-llamacpp: fetching node-llama-cpp $VERSION from npm" >&2
got=$(npm pack "node-llama-cpp@$VERSION" --pack-destination "$PEER" --json --loglevel=error |
  node -e 'let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
    const p = JSON.parse(s)[0]; console.log(p.integrity + " " + p.filename); })')
read -r integrity tarball <<<"$got"
if [ "$integrity" != "$INTEGRITY" ]; then
  echo "setup-llamacpp: node-llama-cpp $VERSION has integrity $integrity, expected $INTEGRITY" >&2
  exit 1
fi
tar -xzf "$PEER/$tarball" -C "$PEER" package/llama/gitRelease.bundle package/llama/llama.cpp.info.json
git clone --quiet "$PEER/package/llama/gitRelease.bundle" "$PEER/llama.cpp"

echo "setup-llamacpp: building llama-bench (several minutes)" >&2
cmake -S "$PEER/llama.cpp" -B "$PEER/llama.cpp/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF >"$PEER/cmake.log" 2>&1 ||
  { tail -20 "$PEER/cmake.log" >&2; exit 1; }
cmake --build "$PEER/llama.cpp/build" --target llama-bench -j "$(nproc)" >"$PEER/build.log" 2>&1 ||
  { tail -20 "$PEER/build.log" >&2; exit 1; }
echo "$VERSION" >"$STAMP"
rm -rf "$PEER/$tarball" "$PEER/package"
echo "setup-llamacpp: $BIN" >&2
