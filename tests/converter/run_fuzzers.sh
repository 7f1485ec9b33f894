#!/bin/bash
# ctest -L fuzz: builds converter/fuzz (the checkpoint reader, the model file, a serialized
# GenerateRequest through the request path) with clang-14 (a separate CMake project; libFuzzer
# needs clang) and runs each fuzzer for a bounded time from the committed seeds. New corpus entries
# and any crash reproducer stay in the build folder. Exit 77 (skip) without clang-14.
#   run_fuzzers.sh REPO_ROOT BUILD_DIR SECONDS_PER_FUZZER
# With SEQBOAT_FUZZ_RUNS=N each fuzzer runs N executions instead (make fuzz-long).
set -euo pipefail
repo=$1
build=$2
seconds=${3:-60}
compiler=${SEQBOAT_FUZZ_CXX:-clang++-14}
if ! command -v "$compiler" >/dev/null; then
  echo "skipping: $compiler not found (Debian: clang-14 libclang-rt-14-dev)"
  exit 77
fi
cmake -S "$repo/converter/fuzz" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER="$compiler" >/dev/null
cmake --build "$build"
status=0
for fuzzer in checkpoint_fuzzer model_file_fuzzer generate_request_fuzzer; do
  seeds="$repo/converter/fuzz/corpus/${fuzzer%_fuzzer}"
  [[ -d "$seeds" ]] || seeds="$repo/server/fuzz/corpus/${fuzzer%_fuzzer}"
  corpus="$build/corpus/${fuzzer%_fuzzer}"
  artifacts="$build/artifacts/$fuzzer/"
  dict="$repo/converter/fuzz/${fuzzer%_fuzzer}.dict"
  mkdir -p "$corpus" "$artifacts"
  if [[ -n "${SEQBOAT_FUZZ_RUNS:-}" ]]; then
    budget="-runs=$SEQBOAT_FUZZ_RUNS"
    echo "== $fuzzer for $SEQBOAT_FUZZ_RUNS executions (seeds $seeds)"
  else
    budget="-max_total_time=$seconds"
    echo "== $fuzzer for ${seconds}s (seeds $seeds)"
  fi
  if ! "$build/$fuzzer" "$budget" -timeout=10 -rss_limit_mb=2048 \
      -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts" \
      $([ -f "$dict" ] && echo "-dict=$dict") "$corpus" "$seeds" 2>"$build/$fuzzer.log"; then
    echo "$fuzzer FAILED; reproducer in $artifacts, log $build/$fuzzer.log:"
    tail -n 60 "$build/$fuzzer.log"
    status=1
  else
    grep -E "^stat::(number_of_executed_units|peak_rss_mb)|cov:" "$build/$fuzzer.log" | tail -n 3
  fi
done
exit $status
