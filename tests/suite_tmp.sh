# Sourced by tests/run_tests.sh and tests/run_arm64.sh: one temporary folder for the whole suite run, so that
# what the tests leave behind cannot fill the machine's /tmp run after run (it did: 74 GB of e2e folders once,
# and CI then failed with "No space left on device"). Every test's scratch files go there (TMPDIR: Python's
# tempfile, the unit tests' temp_template, mktemp); suite_tmp_check counts as one test that fails where the
# suite left anything there, and the folder is removed on exit whatever happened.
suite_tmp=$(mktemp -d /tmp/nf_suite_XXXXXX)
export TMPDIR=$suite_tmp
trap 'rm -rf "$suite_tmp"' EXIT

# Prints PASS or FAIL with what was left (the first few entries and the total size).
suite_tmp_check() {
  local left
  left=$(find "$suite_tmp" -mindepth 1 -maxdepth 1 | sort)
  if [ -z "$left" ]; then
    echo "PASS the suite left its temporary folder empty"
  else
    echo "FAIL the suite left $(echo "$left" | wc -l) entries ($(du -sh "$suite_tmp" | cut -f1)) in its temporary folder:"
    echo "$left" | head -20
    return 1
  fi
}
