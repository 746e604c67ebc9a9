#!/usr/bin/env bash
# Builds deltaslice and runs every test: the suite in a release build, the
# suite again under AddressSanitizer + UBSan, then each libFuzzer target
# briefly (DS_FUZZ_SECONDS each, default 15).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

jobs=$(nproc)
fuzz_seconds=${DS_FUZZ_SECONDS:-15}

echo "== release build + tests"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure

echo "== AddressSanitizer + UBSan build + tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDS_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp ctest --test-dir build-asan --output-on-failure

echo "== libFuzzer targets, ${fuzz_seconds} s each"
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDS_FUZZ=ON -DDS_TESTS=OFF >/dev/null
cmake --build build-fuzz -j"$jobs"
for fuzzer in build-fuzz/fuzz/fuzz_*; do
  name=$(basename "$fuzzer")
  work=$(mktemp -d)
  # New inputs go to a scratch folder; the committed seed corpus stays small.
  "$fuzzer" -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 -print_final_stats=0 \
    "$work" "fuzz/corpus/$name" 2>"$work.log" || { tail -50 "$work.log"; echo "fuzz: $name FAILED"; exit 1; }
  echo "fuzz: $name ok"
  rm -rf "$work" "$work.log"
done
echo "all tests passed"
