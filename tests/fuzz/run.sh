#!/usr/bin/env bash
# tests/fuzz/run.sh — runs the libFuzzer harnesses built by `make fuzz-build`
# (build/fuzz/fuzz_<name>, seeds in tests/fuzz/corpus/<name>/).
#
#   run.sh regress          every file of each corpus once through its harness
#   run.sh fuzz SECONDS     each harness SECONDS seconds of fuzzing, one after
#                           the other, from its seeds plus what earlier runs
#                           found (build/fuzz/corpus/<name>/, kept: new inputs
#                           go there, never into the repository's seeds)
#
# FUZZ_ONLY="model json" limits the run to those harnesses. Crashing inputs
# are written to build/fuzz/crashes/<name>-crash-<sha1>; the log of each run
# is build/fuzz/logs/<name>.<mode>.log. Prints one "PASS <mode> <name>" or
# "FAIL <mode> <name>" line per harness (with libFuzzer's final executions,
# cov and ft when fuzzing), and exits 1 if any failed.
#
# The limits make a hang, a huge allocation and a leak failures too: 10 s per
# input, 1 GiB of RSS, no single allocation over 256 MiB (no input here is
# over 64 KiB: a parser that asks for more has trusted a forged size).
set -u
cd "$(dirname "$0")/../.."

mode=${1:-}
seconds=${2:-60}
case "$mode" in
  regress|fuzz) ;;
  *) echo "usage: $0 regress | fuzz SECONDS" >&2; exit 2 ;;
esac
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || { echo "$0: SECONDS must be a positive integer" >&2; exit 2; }

mkdir -p build/fuzz/crashes build/fuzz/logs
# the harnesses' scratch files (fuzz.h), removed even after a crash
shm=/dev/shm; [ -w "$shm" ] || shm=${TMPDIR:-/tmp}
NF_FUZZ_TMP=$(mktemp -d "$shm/nf_fuzz_run.XXXXXX") || exit 1
export NF_FUZZ_TMP
trap 'rm -rf "$NF_FUZZ_TMP"' EXIT
limits=(-timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=256 -max_len=65536)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
failed=0

for src in tests/fuzz/fuzz_*.c; do
  name=$(basename "$src" .c)
  name=${name#fuzz_}
  if [ -n "${FUZZ_ONLY:-}" ] && [[ " $FUZZ_ONLY " != *" $name "* ]]; then continue; fi
  bin=build/fuzz/fuzz_$name
  seeds=tests/fuzz/corpus/$name
  log=build/fuzz/logs/$name.$mode.log
  if [ ! -x "$bin" ]; then
    echo "FAIL $mode $name: $bin is not built (make fuzz-build)"
    failed=1
    continue
  fi
  if [ "$mode" = regress ]; then
    files=("$seeds"/*)
    "$bin" "${limits[@]}" "${files[@]}" >"$log" 2>&1
    rc=$?
    detail="${#files[@]} files"
  else
    work=build/fuzz/corpus/$name
    mkdir -p "$work"
    "$bin" "${limits[@]}" -max_total_time="$seconds" -print_final_stats=1 \
      -artifact_prefix="build/fuzz/crashes/$name-" "$work" "$seeds" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 | sed -E 's/.* cov: ([0-9]+) ft: ([0-9]+).*/cov \1, ft \2/')
    detail="$seconds s: ${runs:-?} executions, ${cov:-cov ?}"
  fi
  if [ $rc -eq 0 ]; then
    echo "PASS $mode $name ($detail)"
  else
    echo "FAIL $mode $name ($detail; exit $rc; log $log)"
    grep -E 'ERROR: |SUMMARY: |runtime error|Test unit written' "$log" | head -5 | sed 's/^/    /'
    failed=1
  fi
done
exit $failed
