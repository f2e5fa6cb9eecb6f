#!/usr/bin/env bash
# Runs the aarch64 build (make arm64: build/arm64/) under qemu's user-mode
# emulator: every unit test, and the end-to-end subset (generate, the
# forward and backward references against PyTorch, and the build without
# MPI), then prints one summary line: "N passed, N failed". Correctness only:
# nothing here measures speed.
#
# CPUs: QEMU_CPU=max has DotProd (the NEON tier's sdot Q8 kernel);
# cortex-a72 (a Raspberry Pi 4) has none, so test_backend (the NEON kernels
# against their portable twins) and the forward reference run again there
# for the widening-multiply path. qemu-aarch64 is called explicitly (no
# binfmt_misc needed) and finds the arm64 loader and libraries where
# Debian's multiarch packages put them (scripts/setup-arm64.sh).
#
# Two lanes side by side (CI has 2 cores): the unit tests, and the e2e
# tests. OMP_WAIT_POLICY=passive: emulated threads spinning at a barrier
# made the run 2-7x slower (test_generate 253 s against 40 s).
set -u
cd "$(dirname "$0")/.."

export OMP_WAIT_POLICY=passive
export NF_BINARY=$PWD/build/arm64/neuralforge-qemu NF_PROBE=$PWD/build/arm64/tests/nf_probe-qemu
for f in "$NF_BINARY" "$NF_PROBE"; do
  [ -x "$f" ] || { echo "$f missing: make arm64 builds it"; echo "0 passed, 1 failed"; exit 1; }
done
. tests/suite_tmp.sh
log=$(mktemp -d /tmp/nf_arm64_lanes_XXXXXX) # beside the suite's folder, not in it
trap 'rm -rf "$log" "$suite_tmp"' EXIT

# Each line of a lane's log: "P <n>" passed, "F <n> <label>" failed, or output to show.
unit() { # binary, cpu, label
  local out rc p f
  out=$(QEMU_CPU=$2 qemu-aarch64 "$1" 2>&1)
  rc=$?
  echo "$out" | grep -E '^\[ *(FAILED|PASSED|SKIPPED) *\]|ERROR' | sed "s|^|[$3] |"
  p=$(echo "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
  f=$(echo "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
  p=${p:-0}; f=${f:-0}
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi # crashed
  echo "P $p"
  echo "F $f $3"
}

e2e() { # script, cpu, label
  local out rc p f
  out=$(QEMU_CPU=$2 /usr/bin/python3 "tests/e2e/$1" 2>&1)
  rc=$?
  echo "$out" | sed "s|^|[$3] |"
  p=$(echo "$out" | grep -c '^PASS ')
  f=$(echo "$out" | grep -c '^FAIL ')
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  echo "P $p"
  echo "F $f $3"
}

start=$(date +%s)
(
  for bin in build/arm64/tests/test_*; do
    case $bin in *-qemu) continue ;; esac
    unit "$bin" max "arm64 $(basename "$bin")"
  done
  unit build/arm64/tests/test_backend cortex-a72 "arm64 cortex-a72 test_backend"
) >"$log/unit" &
(
  for script in test_generate.py test_forward_reference.py test_backward_reference.py test_no_mpi.py; do
    e2e "$script" max "arm64 $script"
  done
  e2e test_forward_reference.py cortex-a72 "arm64 cortex-a72 test_forward_reference.py"
) >"$log/e2e" &
wait

passed=0
failed=0
failures=()
for lane in unit e2e; do
  while IFS= read -r line; do
    case $line in
      "P "*) passed=$((passed + ${line#P })) ;;
      "F "*)
        rest=${line#F }
        n=${rest%% *}
        failed=$((failed + n))
        [ "$n" -eq 0 ] || failures+=("${rest#* }")
        ;;
      *) echo "$line" ;;
    esac
  done <"$log/$lane"
done
if out=$(suite_tmp_check); then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
  failures+=("arm64 temporary folder")
fi
echo "$out" | sed 's|^|[arm64 tmp] |'
echo "arm64 under qemu: $(($(date +%s) - start)) s"
[ ${#failures[@]} -eq 0 ] || printf 'failed: %s\n' "${failures[@]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
