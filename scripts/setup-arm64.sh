#!/usr/bin/env bash
# Installs what `make test-arm64` needs on Debian 12 (x86-64), with apt-get:
# the aarch64 cross compiler, qemu's user-mode emulator, and the arm64 builds
# of the libraries NeuralForge links (Debian multiarch, /usr/lib/aarch64-linux-gnu;
# with them libc6:arm64, whose loader qemu-aarch64 then finds without -L).
# Idempotent like scripts/setup.sh: what is present is left alone, so a second
# run is instant. No MPI: libopenmpi-dev:arm64 conflicts with the amd64 one
# (apt would remove openmpi-bin), so the arm64 build is made without it (NF_NO_MPI).
set -euo pipefail

PACKAGES=(
  gcc-aarch64-linux-gnu  # the cross compiler (and its libgomp, libc for linking)
  qemu-user              # qemu-aarch64: runs the arm64 unit tests and binary (called explicitly: no binfmt_misc needed)
  libdnnl2:arm64         # oneDNN's arm64 library: the GEMM behind the CPU backend. Not libdnnl-dev:arm64: it
                         # cannot be installed beside the amd64 libdnnl-dev (one header differs, dnnl_config.h,
                         # in the GPU runtime only); the build uses the amd64 package's headers (the Makefile)
  libdnnl-dev            # (amd64) those headers; scripts/setup.sh installs it too
  libcmocka-dev:arm64    # the C unit-test framework
  libmicrohttpd-dev:arm64
  libsqlite3-dev:arm64
  libjansson-dev:arm64
  libpcre2-dev:arm64
  libutf8proc-dev:arm64
  libxxhash-dev:arm64
)

. "$(dirname "$0")/apt_install.sh"

# the arm64 packages need the architecture known to dpkg (apt_install then updates apt's lists for it)
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "setup-arm64: adding the arm64 architecture" >&2
  as_root dpkg --add-architecture arm64
fi

mapfile -t missing < <(apt_missing "${PACKAGES[@]}")
apt_install setup-arm64 "${missing[@]}" # its apt-get update fetches the arm64 indexes too
