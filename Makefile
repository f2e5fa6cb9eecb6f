# NeuralForge build. `make` builds build/neuralforge; `make test` runs every
# test; `make demo` runs the main job end to end. Both install what they
# need first (scripts/setup.sh, idempotent).

CC      ?= cc
CSTD    := -std=c11 -D_POSIX_C_SOURCE=200809L
WARN    := -Wall -Wextra -Wshadow -Wno-unknown-pragmas
# One binary for every x86-64 machine (SSE4.2 and up): the AVX-512, VNNI and
# BF16 kernels are compiled for those instructions on their own
# (src/kernels_avx512.c) and chosen at run time when the CPU has them.
OPT     ?= -O3 -march=x86-64-v2 -mtune=native
# -fno-math-errno: no errno from expf and friends, so `omp simd` loops call glibc's vector versions
CFLAGS  := $(CSTD) $(WARN) $(OPT) -fopenmp -fno-math-errno -g
LDLIBS  := -ldnnl -lmicrohttpd -lsqlite3 -lpthread -lm -fopenmp
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

SRC      := $(filter-out src/main.c,$(wildcard src/*.c))
HDR      := $(wildcard src/*.h)
UNIT     := $(wildcard tests/unit/test_*.c)

OBJ      := $(SRC:src/%.c=build/obj/%.o)
ASAN_OBJ := $(SRC:src/%.c=build/asan/obj/%.o)
UNIT_BIN := $(UNIT:tests/unit/%.c=build/tests/%)
ASAN_BIN := $(UNIT:tests/unit/%.c=build/asan/tests/%)

.PHONY: all setup test demo clean unit asan
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

build/obj build/asan/obj build/tests build/asan/tests:
	mkdir -p $@

build/tests/nf_probe: tests/tools/nf_probe.c $(OBJ) | build/tests
	$(CC) $(CFLAGS) -Isrc $< $(OBJ) -o $@ $(LDLIBS)

# the failing-write shim of the disk-full tests (LD_PRELOAD; a plain build, whatever the binary under test)
build/tests/libnf_enospc.so: tests/tools/enospc_shim.c | build/tests
	$(CC) -std=gnu11 $(WARN) -O2 -g -fPIC -shared $< -o $@ -ldl -lpthread

unit: $(UNIT_BIN) build/tests/nf_probe build/tests/libnf_enospc.so
asan: build/asan/neuralforge $(ASAN_BIN)

setup:
	@scripts/setup.sh

test: setup
	$(MAKE) all unit asan
	@tests/run_tests.sh

demo: setup
	$(MAKE) all
	@scripts/demo.sh

clean:
	rm -rf build
