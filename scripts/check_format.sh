#!/usr/bin/env bash
# The house style's check: every C file of src/ and tests/ is as clang-format
# (.clang-format, Debian 12's clang-format 14) leaves it. Prints "PASS format",
# or "FAIL format" after the files that differ; `make format` fixes them.
# --list only prints the files, for `make format`.
set -u
cd "$(dirname "$0")/.."
files=$(find src tests -name node_modules -prune -o -type f \( -name '*.c' -o -name '*.h' \) -print | sort)
if [ "${1:-}" = "--list" ]; then
  echo "$files"
  exit 0
fi
if ! command -v clang-format >/dev/null; then
  echo "FAIL format (clang-format is not installed: make setup)"
  exit 1
fi
# one clang-format for every file (a process per file took 14 s); its warnings name the files that differ
if report=$(clang-format --dry-run -Werror $files 2>&1); then
  echo "PASS format"
else
  echo "$report" | grep -o '^[^:]*\.[ch]:' | tr -d ':' | sort -u | sed 's/^/not formatted: /'
  echo "FAIL format (make format)"
  exit 1
fi
