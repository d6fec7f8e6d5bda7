#!/usr/bin/env bash
# Runs every GPU test of the bundle and prints a summary table, then the mHC kernel benchmark
# (bin/mhc_kernels; its table and bench-logs/mhc_kernels.json; BK_SKIP_BENCH=1 skips it); exit
# status 0 only if all tests passed. Each gtest case runs in its own process (a CUDA fault cannot take the other tests
# down with it), with a per-test time limit.
#   ./run_gpu_tests.sh [gtest filter, default *] 
# Environment: BK_TEST_TIMEOUT (seconds per test, default 300), BK_SYSTEM_MPI (see run.sh),
# MPIRUN (default mpirun) for the multi-GPU NCCL test, which runs when there are 2+ GPUs.
set -uo pipefail
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
filter="${1:-*}"
limit="${BK_TEST_TIMEOUT:-300}"
logs="$here/test-logs"
mkdir -p "$logs"

echo "== host"
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader 2>/dev/null ||
  echo "nvidia-smi not available"
cat "$here/BUILD_INFO" 2>/dev/null
echo

declare -a names=() results=() times=()
pass=0 fail=0 skip=0

mapfile -t tests < <("$here/run.sh" test_cuda --gtest_list_tests --gtest_filter="$filter" |
  awk '/^[^ ]/ { suite = $1 } /^  / { print suite $1 }')
if [[ ${#tests[@]} -eq 0 ]]; then
  echo "no tests match '$filter' (or test_cuda failed to start: try ./run.sh test_cuda)" >&2
  exit 1
fi
echo "== test_cuda: ${#tests[@]} tests"
for t in "${tests[@]}"; do
  log="$logs/${t//\//_}.log"
  start=$(date +%s.%N)
  timeout "$limit" "$here/run.sh" test_cuda --gtest_filter="$t" >"$log" 2>&1
  rc=$?
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
  case $rc in
    0) r=PASS; pass=$((pass + 1)) ;;
    77) r=SKIP; skip=$((skip + 1)) ;;
    124) r=TIMEOUT; fail=$((fail + 1)) ;;
    *) r="FAIL($rc)"; fail=$((fail + 1)) ;;
  esac
  names+=("$t"); results+=("$r"); times+=("$secs")
  printf '  %-8s %7ss  %s\n' "$r" "$secs" "$t"
  [[ $r == PASS || $r == SKIP ]] || sed -n '/Failure\|error\|Error\|what()/p' "$log" | head -8 | sed 's/^/           /'
done

gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
if [[ -x "$here/bin/test_cuda_nccl_mpi" ]]; then
  t="nccl_mpi_np$gpus"
  if [[ "$gpus" -ge 2 ]] && command -v "${MPIRUN:-mpirun}" >/dev/null; then
    log="$logs/$t.log"
    start=$(date +%s.%N)
    timeout "$limit" "${MPIRUN:-mpirun}" --allow-run-as-root -np "$gpus" \
      "$here/run.sh" test_cuda_nccl_mpi >"$log" 2>&1
    rc=$?
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    if [[ $rc -eq 0 ]]; then r=PASS; pass=$((pass + 1)); else r="FAIL($rc)"; fail=$((fail + 1)); fi
  else
    r=SKIP; secs=0; skip=$((skip + 1))
  fi
  names+=("$t (needs 2+ GPUs and mpirun)"); results+=("$r"); times+=("$secs")
  printf '  %-8s %7ss  %s\n' "$r" "$secs" "$t"
fi

echo
echo "== summary"
printf '%-8s  %8s  %s\n' RESULT SECONDS TEST
printf '%-8s  %8s  %s\n' ------ ------- ----
for i in "${!names[@]}"; do printf '%-8s  %8s  %s\n' "${results[$i]}" "${times[$i]}" "${names[$i]}"; done
echo
echo "passed $pass, failed $fail, skipped $skip (logs: $logs)"
if [[ -x "$here/bin/mhc_kernels" && -z "${BK_SKIP_BENCH:-}" && $pass -gt 0 ]]; then
  mkdir -p "$here/bench-logs"
  echo
  echo "== benchmark: mhc_kernels (docs/performance.md)"
  timeout 1800 "$here/run.sh" mhc_kernels --json "$here/bench-logs/mhc_kernels.json" \
    >"$here/bench-logs/mhc_kernels.log" 2>&1 || echo "mhc_kernels failed: see $here/bench-logs/mhc_kernels.log"
  tail -n 40 "$here/bench-logs/mhc_kernels.log"
fi
if [[ $pass -eq 0 && $fail -eq 0 ]]; then
  echo "nothing ran: is a GPU visible to this process (nvidia-smi, CUDA_VISIBLE_DEVICES)?" >&2
  exit 2
fi
[[ $fail -eq 0 ]]
