#!/usr/bin/env bash
# tests/gpu/run.sh: on a machine with an NVIDIA GPU, one command that builds with the cuda
# preset, runs the GPU tests (then once more under compute-sanitizer when it is installed),
# runs seqboat-server --device cuda against the CPU reference (tests/e2e/test_cuda_server.py),
# runs the GPU benchmark on the paper's enwik8 configuration and prints a report.
#
#   tests/gpu/run.sh                      # configure + build build-cuda, then test and bench
#   tests/gpu/run.sh --prebuilt DIR       # use binaries already built into DIR (no build)
#       [--libs DIR]                      # extra shared libraries (prepended to LD_LIBRARY_PATH)
#       [--out DIR]                       # logs, JSON and report (default build-cuda/gpu-report)
#       [--no-sanitizer] [--quick-bench]
set -uo pipefail
cd "$(dirname "$0")/../.."

bin=build-cuda/bin
out=build-cuda/gpu-report
prebuilt=0
sanitizer=1
bench_steps=50
while [[ $# -gt 0 ]]; do
  case "$1" in
    --prebuilt) bin="$2"; prebuilt=1; shift 2 ;;
    --libs) export LD_LIBRARY_PATH="$2${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --no-sanitizer) sanitizer=0; shift ;;
    --quick-bench) bench_steps=10; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
report="$out/report.md"
: >"$report"
say() { echo "$@" | tee -a "$report"; }

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "no NVIDIA GPU here (nvidia-smi fails): nothing to run" >&2
  exit 77
fi
say "# GPU report ($(date -u +%FT%TZ))"
say ""
say "device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"

if [[ $prebuilt -eq 0 ]]; then
  cmake --preset cuda >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
  cmake --build build-cuda -j"$(nproc)" >"$out/build.log" 2>&1 || { tail -50 "$out/build.log"; exit 1; }
fi

tests=(cuda_kernels_test cuda_backend_api_test cuda_backend_test cuda_prefix_cache_test cuda_device_loss_test)
# cuda_device_loss_test faults the device on purpose: not under memcheck.
sanitized=(cuda_kernels_test cuda_backend_api_test cuda_backend_test)
status=0
say ""
say "## GPU tests"
for t in "${tests[@]}"; do
  start=$(date +%s)
  timeout "${SEQBOAT_GPU_TEST_TIMEOUT:-600}" "$bin/$t" --gtest_brief=1 >"$out/$t.log" 2>&1
  rc=$?
  summary=$(grep -E "^\[  (PASSED|FAILED)  \]|tests ran" "$out/$t.log" | tr '\n' ' ')
  say "- $t: exit $rc in $(( $(date +%s) - start )) s. $summary"
  grep -E "^bf16" "$out/$t.log" | sed 's/^/  - /' | tee -a "$report"
  if [[ $rc -ne 0 ]]; then
    status=1
    grep -E "Failure|FAILED|error" "$out/$t.log" | head -20 | sed 's/^/    /' | tee -a "$report"
  fi
done

say ""
say "## seqboat-server --device cuda (tests/e2e/test_cuda_server.py)"
if /usr/bin/python3 -c "import grpc, numpy" 2>/dev/null && command -v protoc >/dev/null && [[ -x /usr/bin/grpc_python_plugin ]]; then
  start=$(date +%s)
  SEQBOAT_BIN_DIR="$bin" SEQBOAT_FIXTURES_DIR=tests/fixtures SEQBOAT_PROTO_DIR=proto PYTHONDONTWRITEBYTECODE=1 \
    timeout "${SEQBOAT_GPU_TEST_TIMEOUT:-600}" /usr/bin/python3 tests/e2e/test_cuda_server.py >"$out/e2e_cuda_server.log" 2>&1
  rc=$?
  say "- e2e_cuda_server: exit $rc in $(( $(date +%s) - start )) s. $(grep -E "^(Ran|OK|FAILED)" "$out/e2e_cuda_server.log" | tr '\n' ' ')"
  if [[ $rc -ne 0 ]]; then
    status=1
    grep -E "^(FAIL|ERROR|AssertionError)" "$out/e2e_cuda_server.log" | head -20 | sed 's/^/    /' | tee -a "$report"
  fi
else
  say "- skipped: needs /usr/bin/python3 with grpc and numpy, protoc and /usr/bin/grpc_python_plugin"
fi

say ""
say "## Benchmark (seqboat-bench-cuda)"
for dtype in bf16 f32; do
  timeout "${SEQBOAT_BENCH_TIMEOUT:-300}" "$bin/seqboat-bench-cuda" --dtype "$dtype" --steps "$bench_steps" \
    --json "$out/bench_$dtype.json" >"$out/bench_$dtype.log" 2>&1
  rc=$?
  [[ $rc -ne 0 ]] && status=1
  sed -n '/^seqboat-bench-cuda/,$p' "$out/bench_$dtype.log" | tee -a "$report"
  [[ $rc -ne 0 ]] && tail -5 "$out/bench_$dtype.log" | tee -a "$report"
done
if [[ $sanitizer -eq 1 ]]; then
  say ""
  say "## compute-sanitizer (memcheck)"
  if command -v compute-sanitizer >/dev/null; then
    # The kernel tests whole, the backend on a few models (the full sweep takes too long there).
    declare -A filters=(
      [cuda_kernels_test]='*'
      [cuda_backend_api_test]='*'
      [cuda_backend_test]='*/odd_sizes:*/random_all_on:*/enwik8_tiny'
    )
    for t in "${sanitized[@]}"; do
      timeout "${SEQBOAT_SANITIZER_TIMEOUT:-400}" compute-sanitizer --tool memcheck --error-exitcode 9 "$bin/$t" --gtest_brief=1 \
        --gtest_filter="${filters[$t]}" >"$out/$t.memcheck.log" 2>&1
      rc=$?
      say "- $t under memcheck: exit $rc; $(grep -E "ERROR SUMMARY" "$out/$t.memcheck.log" | tail -1)"
      [[ $rc -ne 0 ]] && status=1
    done
  else
    say "- compute-sanitizer is not installed here: skipped"
  fi
fi

say ""
say "overall: $([[ $status -eq 0 ]] && echo PASS || echo FAIL)"
exit $status
