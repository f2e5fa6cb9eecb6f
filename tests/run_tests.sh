#!/usr/bin/env bash
# Runs every test: the cmocka unit tests (normal and ASan/UBSan builds) and
# the end-to-end CLI tests, then prints one summary line: "N passed, N failed".
set -u
cd "$(dirname "$0")/.."

passed=0
failed=0
failures=()

# cmocka prints "[  PASSED  ] N test(s)." and "[  FAILED  ] N test(s), listed below:".
run_cmocka() {
  local bin=$1 label=$2 out p f
  out=$(ASAN_OPTIONS=detect_leaks=1 "$bin" 2>&1)
  local rc=$?
  echo "$out" | grep -E '^\[ *(RUN|OK|FAILED|PASSED|SKIPPED) *\]|ERROR|runtime error|Sanitizer' | sed "s|^|[$label] |"
  p=$(echo "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
  f=$(echo "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
  p=${p:-0}; f=${f:-0}
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi   # crashed or sanitizer abort
  if echo "$out" | grep -qE 'runtime error|ERROR: AddressSanitizer|ERROR: LeakSanitizer'; then f=$((f + 1)); fi
  passed=$((passed + p)); failed=$((failed + f))
  [ "$f" -eq 0 ] || failures+=("$label")
}

for bin in build/tests/test_*; do
  [ -x "$bin" ] && run_cmocka "$bin" "unit $(basename "$bin")"
done
for bin in build/asan/tests/test_*; do
  [ -x "$bin" ] && run_cmocka "$bin" "asan $(basename "$bin")"
done

# End-to-end tests: each script prints "PASS name" / "FAIL name" lines.
for script in tests/e2e/test_*.py; do
  out=$(/usr/bin/python3 "$script" 2>&1)
  rc=$?
  echo "$out" | sed "s|^|[e2e $(basename "$script")] |"
  p=$(echo "$out" | grep -c '^PASS ')
  f=$(echo "$out" | grep -c '^FAIL ')
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  passed=$((passed + p)); failed=$((failed + f))
  [ "$f" -eq 0 ] || failures+=("e2e $(basename "$script")")
done

if [ ${#failures[@]} -gt 0 ]; then
  echo "failing: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
