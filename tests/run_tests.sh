#!/usr/bin/env bash
# Runs every test: the cmocka unit tests (normal and ASan/UBSan builds), the
# fuzz harnesses (corpus regressions and a short fuzz budget) and the
# end-to-end CLI tests, then prints one summary line: "N passed, N failed".
# The unit tests and the numeric end-to-end tests run again with
# NF_CPU=baseline and with NF_CPU=avx2, so the portable twins and the AVX2
# tier of the AVX-512 kernels are tested on this machine too.
set -u
cd "$(dirname "$0")/.."
. tests/suite_tmp.sh

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
for bin in build/tests/test_*; do
  [ -x "$bin" ] && NF_CPU=baseline run_cmocka "$bin" "baseline $(basename "$bin")"
done
for bin in build/tests/test_*; do
  [ -x "$bin" ] && NF_CPU=avx2 run_cmocka "$bin" "avx2 $(basename "$bin")"
done
for bin in build/asan/tests/test_*; do
  [ -x "$bin" ] && run_cmocka "$bin" "asan $(basename "$bin")"
done

# Runs a command whose output has "PASS name" / "FAIL name" lines, prefixed
# with its label, and adds them up (a non-zero exit without a FAIL line is one).
run_counted() {
  local label=$1 out p f
  shift
  out=$("$@" 2>&1)
  local rc=$?
  echo "$out" | sed "s|^|[$label] |"
  p=$(echo "$out" | grep -c '^PASS ')
  f=$(echo "$out" | grep -c '^FAIL ')
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  passed=$((passed + p)); failed=$((failed + f))
  [ "$f" -eq 0 ] || failures+=("$label")
}

# The house style: every C file as clang-format (.clang-format) leaves it.
run_counted "format" scripts/check_format.sh

# The libFuzzer harnesses (tests/fuzz, built by `make fuzz-build`): every
# corpus file once as a regression test, then a short fuzz budget for each
# (NF_FUZZ_SECONDS, default 10; `make fuzz` is the long run). One PASS or FAIL
# per harness and mode; a harness that is not built fails.
run_fuzz() { run_counted "fuzz $1" tests/fuzz/run.sh "$@"; }
run_fuzz regress
run_fuzz fuzz "${NF_FUZZ_SECONDS:-10}"

# End-to-end tests: each script prints "PASS name" / "FAIL name" lines.
run_e2e() {
  local script=$1 label=$2
  shift 2
  run_counted "$label" /usr/bin/python3 "$script" "$@"
}
for script in tests/e2e/test_*.py; do
  run_e2e "$script" "e2e $(basename "$script")"
done
for name in test_forward_reference test_backward_reference test_generate test_lora; do
  NF_CPU=baseline run_e2e "tests/e2e/$name.py" "baseline $name.py"
  NF_CPU=avx2 run_e2e "tests/e2e/$name.py" "avx2 $name.py"
done
# the dashboard's server under AddressSanitizer/UBSan (its threads and requests are where memory bugs
# hide); the tests whose runs train for long stay with the normal build, as the runs execute the server's binary
NF_SERVE_BINARY=build/asan/neuralforge ASAN_OPTIONS=detect_leaks=0 run_e2e tests/e2e/test_serve.py "asan test_serve.py" \
  every_api_call_needs_the_token no_request_reaches_a_path_outside_the_data_directory \
  bodies_are_validated_and_bounded a_project_trains_stops_resumes_generates_and_exports_through_the_api \
  a_forged_host_is_refused a_page_from_another_origin_cannot_change_anything the_url_token_becomes_a_session_cookie \
  every_response_carries_the_security_headers the_token_comes_from_the_environment_or_a_private_file \
  idle_half_open_connections_do_not_lock_out_a_request one_client_address_gets_at_most_its_share_of_the_connections \
  an_idle_connection_is_closed_after_the_timeout a_tokenizer_may_be_a_directory_holding_a_tokenizer_json \
  a_stop_that_outlasts_stop_wait_leaves_the_run_to_finish_and_the_next_server_records_it \
  a_second_server_over_the_data_directory_or_on_a_taken_port_starts_nothing
# the train --processes launcher (src/launch.c) under the same build: the dashboard's runs of two ranks
NF_SERVE_BINARY=build/asan/neuralforge ASAN_OPTIONS=detect_leaks=0 run_e2e tests/e2e/test_launch.py "asan test_launch.py" \
  the_dashboard_runs_a_project_on_two_processes_and_stops_it_cleanly \
  a_server_killed_mid_run_leaves_the_ranks_checkpoint_and_their_last_messages

# last: whatever a test above left in the suite's temporary folder (tests/suite_tmp.sh)
run_counted "tmp" suite_tmp_check

if [ ${#failures[@]} -gt 0 ]; then
  echo "failing: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
