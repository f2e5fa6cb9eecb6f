# NeuralForge build. `make` builds build/neuralforge; `make test` runs every
# test; `make demo` runs the main job end to end. Both install what they
# need first (scripts/setup.sh, idempotent).

CC      ?= cc
CSTD    := -std=c11 -D_POSIX_C_SOURCE=200809L
WARN    := -Wall -Wextra -Wshadow -Wno-unknown-pragmas
# One binary for every x86-64 machine (SSE4.2 and up): the AVX-512, VNNI and
# BF16 kernels, and the AVX2 + FMA ones, are compiled for those instructions
# on their own (src/kernels_avx512.c, src/kernels_avx2.c) and chosen at run
# time when the CPU has them. Built on an ARM64 machine: one binary for every
# ARMv8-A CPU (NEON; DotProd chosen at run time, src/kernels_neon.c).
ifneq ($(filter aarch64 arm64,$(shell uname -m)),)
OPT     ?= -O3 -march=armv8-a -mtune=native
else
OPT     ?= -O3 -march=x86-64-v2 -mtune=native
endif
# -fno-math-errno: no errno from expf and friends, so `omp simd` loops call glibc's vector versions
# Open MPI (src/dist.c): data-parallel training under mpirun; its compiler wrapper knows the paths.
# Without mpicc the build has no MPI (NF_NO_MPI: one process, launchers refused).
MPI_CFLAGS := $(shell mpicc --showme:compile 2>/dev/null || echo -DNF_NO_MPI)
MPI_LIBS   := $(shell mpicc --showme:link 2>/dev/null)
CFLAGS  := $(CSTD) $(WARN) $(OPT) -fopenmp -fno-math-errno -g $(MPI_CFLAGS)
# PCRE2 (pre-tokenizer regexes) and utf8proc (Unicode normalization): tokenizer.json (src/pretok.c)
LDLIBS  := -ldnnl -lxxhash -lmicrohttpd -lsqlite3 -ljansson -lpcre2-8 -lutf8proc -lpthread -lm -fopenmp $(MPI_LIBS)
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

SRC      := $(filter-out src/main.c,$(wildcard src/*.c))
HDR      := $(wildcard src/*.h)
UNIT     := $(wildcard tests/unit/test_*.c)
FUZZ     := $(wildcard tests/fuzz/fuzz_*.c)

OBJ      := $(SRC:src/%.c=build/obj/%.o)
ASAN_OBJ := $(SRC:src/%.c=build/asan/obj/%.o)
UNIT_BIN := $(UNIT:tests/unit/%.c=build/tests/%)
ASAN_BIN := $(UNIT:tests/unit/%.c=build/asan/tests/%)
FUZZ_OBJ := $(SRC:src/%.c=build/fuzz/obj/%.o)
FUZZ_BIN := $(FUZZ:tests/fuzz/%.c=build/fuzz/%)

# The libFuzzer harnesses (tests/fuzz): clang, every object instrumented for
# coverage and built with ASan/UBSan (UB aborts, so the fuzzer sees it). The
# objects go into an archive, so each harness links only the modules its
# parser references. No -fopenmp: a harness runs serially, so a crash replays
# the same way; libgomp only answers backend_cpu.c's and block_claims.c's omp_*
# calls, where a parser's module pulls the backend in (model.c's quantizer,
# LoRA merging).
# `make fuzz FUZZ_SECONDS=N` fuzzes each harness N seconds.
FUZZ_CC      ?= clang
FUZZ_CFLAGS  := $(CSTD) $(WARN) -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
                -fno-sanitize-recover=undefined $(MPI_CFLAGS)
FUZZ_LDLIBS  := -ljansson -lxxhash -lpcre2-8 -lutf8proc -ldnnl -lmicrohttpd -lsqlite3 -lgomp -lpthread -lm $(MPI_LIBS)
FUZZ_SECONDS ?= 60

.PHONY: all setup test demo clean unit asan fuzz fuzz-build fuzz-regress format arm64 test-arm64 llamacpp-peer
all: build/neuralforge

build/obj/%.o: src/%.c $(HDR) | build/obj
	$(CC) $(CFLAGS) -c $< -o $@
build/asan/obj/%.o: src/%.c $(HDR) | build/asan/obj
	$(CC) $(CFLAGS) -O1 $(SAN) -c $< -o $@

build/neuralforge: build/obj/main.o $(OBJ)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)
build/asan/neuralforge: build/asan/obj/main.o $(ASAN_OBJ)
	$(CC) $(CFLAGS) -O1 $(SAN) $^ -o $@ $(LDLIBS)

build/tests/%: tests/unit/%.c $(OBJ) tests/unit/testutil.h | build/tests
	$(CC) $(CFLAGS) -Isrc $< $(OBJ) -o $@ $(LDLIBS) -lcmocka
build/asan/tests/%: tests/unit/%.c $(ASAN_OBJ) tests/unit/testutil.h | build/asan/tests
	$(CC) $(CFLAGS) -O1 $(SAN) -Isrc $< $(ASAN_OBJ) -o $@ $(LDLIBS) -lcmocka

build/fuzz/obj/%.o: src/%.c $(HDR) | build/fuzz/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_EXTRA) -fsanitize=fuzzer-no-link -c $< -o $@
# clang ignores the file's `#pragma GCC target`: the same instructions as flags
# (still called only where cpu_has() finds them)
build/fuzz/obj/kernels_avx512.o: FUZZ_EXTRA := -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni \
                                               -mavx512bf16 -mfma -mf16c
build/fuzz/obj/kernels_avx2.o: FUZZ_EXTRA := -mavx2 -mfma -mf16c
build/fuzz/libnf.a: $(FUZZ_OBJ)
	rm -f $@ && ar rcs $@ $^
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h build/fuzz/libnf.a $(HDR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Isrc $< build/fuzz/libnf.a -o $@ $(FUZZ_LDLIBS)

build/obj build/asan/obj build/tests build/asan/tests build/fuzz/obj:
	mkdir -p $@

build/tests/nf_probe: tests/tools/nf_probe.c $(OBJ) | build/tests
	$(CC) $(CFLAGS) -Isrc $< $(OBJ) -o $@ $(LDLIBS)
build/tests/json_probe: tests/tools/json_probe.c $(OBJ) | build/tests
	$(CC) $(CFLAGS) -Isrc $< $(OBJ) -o $@ $(LDLIBS)
build/tests/chat_probe: tests/tools/chat_probe.c $(OBJ) | build/tests
	$(CC) $(CFLAGS) -Isrc $< $(OBJ) -o $@ $(LDLIBS)

# the failing-write shim of the disk-full tests (LD_PRELOAD; a plain build, whatever the binary under test)
build/tests/libnf_enospc.so: tests/tools/enospc_shim.c | build/tests
	$(CC) -std=gnu11 $(WARN) -O2 -g -fPIC -shared $< -o $@ -ldl -lpthread

unit: $(UNIT_BIN) build/tests/nf_probe build/tests/json_probe build/tests/chat_probe build/tests/libnf_enospc.so
asan: build/asan/neuralforge $(ASAN_BIN)
fuzz-build: $(FUZZ_BIN)
# Each harness FUZZ_SECONDS seconds from its seeds (tests/fuzz/run.sh has the details).
fuzz: fuzz-build
	@tests/fuzz/run.sh fuzz $(FUZZ_SECONDS)
# Every corpus file once through its harness: what the test suite runs.
fuzz-regress: fuzz-build
	@tests/fuzz/run.sh regress

setup:
	@scripts/setup.sh

# The house style (.clang-format) applied to every C file; the suite checks it (scripts/check_format.sh).
format:
	clang-format -i $$(scripts/check_format.sh --list)

test: setup
	$(MAKE) all unit asan fuzz-build
	@tests/run_tests.sh

demo: setup
	$(MAKE) all
	@scripts/demo.sh

# The aarch64 cross build (build/arm64/), run under qemu's user-mode emulator:
# `make test-arm64` installs what it needs (scripts/setup-arm64.sh), builds the
# binary and the unit tests, and runs them and the e2e subset under
# qemu-aarch64 (tests/run_arm64.sh). Baseline ARMv8-A (NEON is part of it), so a
# Raspberry Pi 4 runs it; the dot-product instructions are chosen at run time
# (kernels_neon.c). No MPI: Debian's arm64 Open MPI cannot sit beside the
# amd64 one, so the build is without it (NF_NO_MPI: dist.c). oneDNN's headers
# are the amd64 package's (the arm64 -dev package clashes with it on one file,
# dnnl_config.h, which differs only in the GPU runtime); its library the arm64
# one, named by soname as the arm64 -dev package's libdnnl.so link is absent.
# On an ARM64 Linux machine itself, plain `make` builds natively (with MPI
# where mpicc is installed).
ARM64_CC     ?= aarch64-linux-gnu-gcc
ARM64_CFLAGS := $(CSTD) $(WARN) -O3 -march=armv8-a -fopenmp -fno-math-errno -g -DNF_NO_MPI
ARM64_LDLIBS := -l:libdnnl.so.2 -lxxhash -lmicrohttpd -lsqlite3 -ljansson -lpcre2-8 -lutf8proc -lpthread -lm -fopenmp
ARM64_OBJ    := $(SRC:src/%.c=build/arm64/obj/%.o)
ARM64_UNIT   := $(UNIT:tests/unit/%.c=build/arm64/tests/%)

build/arm64/obj/%.o: src/%.c $(HDR) | build/arm64/obj
	$(ARM64_CC) $(ARM64_CFLAGS) -c $< -o $@
build/arm64/neuralforge: build/arm64/obj/main.o $(ARM64_OBJ)
	$(ARM64_CC) $(ARM64_CFLAGS) $^ -o $@ $(ARM64_LDLIBS)
# the tests' own loops unvectorized: gcc 12's aarch64 vectorizer crashes (an internal compiler error in
# vect_transform_reduction) on test_backend.c's fmax reduction; the modules under test keep -O3's
build/arm64/tests/%: tests/unit/%.c $(ARM64_OBJ) tests/unit/testutil.h | build/arm64/tests
	$(ARM64_CC) $(ARM64_CFLAGS) -fno-tree-vectorize -Isrc $< $(ARM64_OBJ) -o $@ $(ARM64_LDLIBS) -lcmocka
build/arm64/tests/nf_probe: tests/tools/nf_probe.c $(ARM64_OBJ) | build/arm64/tests
	$(ARM64_CC) $(ARM64_CFLAGS) -Isrc $< $(ARM64_OBJ) -o $@ $(ARM64_LDLIBS)
# what the e2e tests run (NF_BINARY, NF_PROBE: tests/e2e/harness.py): the binaries under qemu-aarch64 (no
# binfmt_misc needed), which takes its CPU model from QEMU_CPU (tests/run_arm64.sh sets it)
build/arm64/%-qemu: build/arm64/%
	printf '#!/bin/sh\nexec qemu-aarch64 "$$(dirname "$$0")/%s" "$$@"\n' $(<F) > $@ && chmod +x $@
build/arm64/obj build/arm64/tests:
	mkdir -p $@

arm64: build/arm64/neuralforge $(ARM64_UNIT) build/arm64/neuralforge-qemu build/arm64/tests/nf_probe-qemu
test-arm64:
	@scripts/setup-arm64.sh
	$(MAKE) arm64
	@tests/run_arm64.sh

# llama.cpp's llama-bench in build/peer/, the peer of bench/generate_vs_llamacpp.py: its source from npm
# (node-llama-cpp's bundle, pinned and checked), built for this CPU (scripts/setup-llamacpp.sh). Not run by `test`.
llamacpp-peer:
	@scripts/setup-llamacpp.sh

clean:
	rm -rf build
