#!/usr/bin/env bash
# Runs every GPU test of the bundle, then the benchmarks and two training runs on the GPU, and
# prints a summary table last:
#   1. test_cuda, each gtest case in its own process (a CUDA fault cannot take the other tests
#      down with it) with a per-test time limit; test_cuda_nccl_mpi on all GPUs when there are 2+;
#   2. the mHC kernel benchmark (bin/mhc_kernels: bench-logs/mhc_kernels.{log,json});
#   3. a 200-step training run of configs/tiny-cpu-moe-mhc.yaml on the GPU (bench-logs/
#      train-tiny-moe-mhc/ holds its train.log and metrics.jsonl; its tokens/s, MFU and peak
#      memory are printed), on the bundled KJV shards (data/kjv) or, without them, random tokens;
#   4. the end-to-end connector benchmark: configs/bench-1b-moe.yaml (1.18B parameters) trained
#      with model.residual.mode baseline, hc and mhc by tools/bench/connector_overhead.py
#      (bench-logs/connector_overhead.{log,json}, every run's directory in
#      bench-logs/connector_overhead/); docs/performance.md.
# Exit status 0 only if everything that ran passed; 2 when nothing ran (no GPU visible).
#   ./run_gpu_tests.sh [gtest filter, default *]
# Environment:
#   BK_TEST_TIMEOUT  seconds per test (default 300)
#   BK_SKIP_TESTS=1  skip 1 (then 2-4 run when nvidia-smi lists a GPU)
#   BK_SKIP_BENCH=1  skip the benchmarks, 2 and 4
#   BK_SKIP_E2E=1    skip the training runs, 3 and 4
#   BK_E2E_TIMEOUT   seconds per training run in 3 and 4 (default 900)
#   BK_E2E_ARGS      more arguments for connector_overhead.py (split at whitespace, no quoting),
#                    e.g. "--rounds 2", "--torch",
#                    "--steps 10 --warmup 3", "--set training.global_batch_size=16"
#   PYTHON           interpreter for the Python tools (default python3; stdlib only, --torch
#                    needs torch in it)
#   BK_SYSTEM_MPI    see run.sh; MPIRUN (default mpirun) for the multi-GPU NCCL test
set -uo pipefail
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
filter="${1:-*}"
limit="${BK_TEST_TIMEOUT:-300}"
e2e_limit="${BK_E2E_TIMEOUT:-900}"
py="${PYTHON:-python3}"
logs="$here/test-logs"
bench="$here/bench-logs"
mkdir -p "$logs"

echo "== host"
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader 2>/dev/null ||
  echo "nvidia-smi not available"
cat "$here/BUILD_INFO" 2>/dev/null
echo
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)

declare -a names=() results=() times=()
pass=0 fail=0 skip=0
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
# record NAME RESULT SECONDS: one row of the summary table.
record() {
  names+=("$1"); results+=("$2"); times+=("$3")
  case $2 in
    PASS) pass=$((pass + 1)) ;;
    SKIP*) skip=$((skip + 1)) ;;
    *) fail=$((fail + 1)) ;;
  esac
}
# result RC: PASS, TIMEOUT (timeout's 124) or FAIL(rc).
result() {
  case $1 in
    0) echo PASS ;;
    124) echo TIMEOUT ;;
    *) echo "FAIL($1)" ;;
  esac
}
have_py() { command -v "$py" >/dev/null 2>&1; }

# ---- 1. tests -----------------------------------------------------------------------------------
if [[ -n "${BK_SKIP_TESTS:-}" ]]; then
  echo "== test_cuda: skipped (BK_SKIP_TESTS)"
else
  mapfile -t tests < <("$here/run.sh" test_cuda --gtest_list_tests --gtest_filter="$filter" |
    awk '/^[^ ]/ { suite = $1 } /^  / { print suite $1 }')
  if [[ ${#tests[@]} -eq 0 ]]; then
    echo "no tests match '$filter' (or test_cuda failed to start: try ./run.sh test_cuda)" >&2
    exit 1
  fi
  echo "== test_cuda: ${#tests[@]} tests"
  for t in "${tests[@]}"; do
    log="$logs/${t//\//_}.log"
    start=$(now)
    timeout "$limit" "$here/run.sh" test_cuda --gtest_filter="$t" >"$log" 2>&1
    rc=$?
    secs=$(since "$start")
    if [[ $rc -eq 77 ]]; then r=SKIP; else r=$(result "$rc"); fi
    record "$t" "$r" "$secs"
    printf '  %-8s %7ss  %s\n' "$r" "$secs" "$t"
    [[ $r == PASS || $r == SKIP ]] || sed -n '/Failure\|error\|Error\|what()/p' "$log" | head -8 | sed 's/^/           /'
  done

  if [[ -x "$here/bin/test_cuda_nccl_mpi" ]]; then
    t="nccl_mpi_np$gpus"
    if [[ "$gpus" -ge 2 ]] && command -v "${MPIRUN:-mpirun}" >/dev/null; then
      log="$logs/$t.log"
      start=$(now)
      timeout "$limit" "${MPIRUN:-mpirun}" --allow-run-as-root -np "$gpus" \
        "$here/run.sh" test_cuda_nccl_mpi >"$log" 2>&1
      rc=$?
      secs=$(since "$start")
      r=$(result "$rc")
    else
      r=SKIP; secs=0
    fi
    record "$t (needs 2+ GPUs and mpirun)" "$r" "$secs"
    printf '  %-8s %7ss  %s\n' "$r" "$secs" "$t"
  fi
fi

# The benchmarks and training runs need a working GPU: a passed test, or with BK_SKIP_TESTS one
# that nvidia-smi lists.
if [[ -n "${BK_SKIP_TESTS:-}" ]]; then gpu_ok=$([[ "$gpus" -ge 1 ]] && echo 1); else gpu_ok=$([[ $pass -gt 0 ]] && echo 1); fi

# ---- 2. mHC kernel benchmark --------------------------------------------------------------------
if [[ -x "$here/bin/mhc_kernels" && -z "${BK_SKIP_BENCH:-}" && -n "$gpu_ok" ]]; then
  mkdir -p "$bench"
  echo
  echo "== benchmark: mhc_kernels (docs/performance.md)"
  start=$(now)
  timeout 1800 "$here/run.sh" mhc_kernels --json "$bench/mhc_kernels.json" >"$bench/mhc_kernels.log" 2>&1
  rc=$?
  [[ $rc -eq 0 ]] || echo "mhc_kernels failed: see $bench/mhc_kernels.log"
  tail -n 40 "$bench/mhc_kernels.log"
  record "benchmark mhc_kernels (bench-logs/mhc_kernels.json)" "$(result "$rc")" "$(since "$start")"
fi

# ---- 3. a small MoE model trained for 200 steps on the GPU --------------------------------------
if [[ -z "${BK_SKIP_E2E:-}" && -n "$gpu_ok" ]]; then
  mkdir -p "$bench"
  echo
  echo "== training: configs/tiny-cpu-moe-mhc.yaml, 200 steps on the GPU"
  name="train tiny-cpu-moe-mhc, 200 steps (bench-logs/train-tiny-moe-mhc)"
  run="$bench/train-tiny-moe-mhc"
  data=()
  if [[ -f "$here/data/kjv/train.bin" && -f "$here/data/kjv/val.bin" ]]; then
    data=(--set "data.train=$here/data/kjv/train.bin" --set "data.val=$here/data/kjv/val.bin")
    echo "data: the bundled KJV shards (data/kjv)"
  elif have_py; then
    echo "data: no data/kjv in the bundle: random tokens (bench-logs/data)"
    "$py" "$here/tools/bench/connector_overhead.py" --write-shard "$bench/data/random-train-v2048.bin" \
      --vocab 2048 --tokens 1048576 --seed 1 &&
      "$py" "$here/tools/bench/connector_overhead.py" --write-shard "$bench/data/random-val-v2048.bin" \
        --vocab 2048 --tokens 65536 --seed 2 &&
      data=(--set "data.train=$bench/data/random-train-v2048.bin" --set "data.val=$bench/data/random-val-v2048.bin")
  fi
  if [[ ${#data[@]} -eq 0 ]]; then
    echo "no data/kjv in the bundle and no random shard written ($py): skipped"
    record "$name" "SKIP(no data)" 0
  else
    rm -rf "$run"  # no stale train.log from an earlier call
    start=$(now)
    timeout "$e2e_limit" "$here/run.sh" birkhoff train "$here/configs/tiny-cpu-moe-mhc.yaml" --overwrite \
      --set run.device=cuda --set "run.dir=$run" --set training.steps=200 "${data[@]}" 2>&1 |
      tee "$bench/train-tiny-moe-mhc.console.log"
    rc=${PIPESTATUS[0]}
    secs=$(since "$start")
    if [[ $rc -eq 0 ]]; then
      echo
      if have_py; then
        "$py" "$here/tools/bench/connector_overhead.py" --summarize "$run" --warmup 20 || rc=1
      else
        echo "($py not found: the per-step figures are in $run/metrics.jsonl)"
      fi
    else
      if [[ -f "$run/train.log" ]]; then
        echo "training failed ($(result "$rc")); the tail of $run/train.log:"
        tail -n 30 "$run/train.log"
      else
        echo "training failed ($(result "$rc")) before writing train.log: see the output above"
        echo "(bench-logs/train-tiny-moe-mhc.console.log)"
      fi
    fi
    record "$name" "$(result "$rc")" "$secs"
  fi
fi

# ---- 4. end to end: baseline vs hc vs mhc on the ~1B MoE model ----------------------------------
if [[ -z "${BK_SKIP_BENCH:-}" && -z "${BK_SKIP_E2E:-}" && -n "$gpu_ok" ]]; then
  mkdir -p "$bench"
  echo
  echo "== benchmark: connector_overhead, configs/bench-1b-moe.yaml baseline vs hc vs mhc (docs/performance.md)"
  name="benchmark connector_overhead (bench-logs/connector_overhead.json)"
  if ! have_py; then
    echo "$py not found (set PYTHON): skipped"
    record "$name" "SKIP(no python)" 0
  else
    read -r -a extra <<<"${BK_E2E_ARGS:-}"
    start=$(now)
    "$py" "$here/tools/bench/connector_overhead.py" --birkhoff "$(printf '%q' "$here/run.sh") birkhoff" \
      --config "$here/configs/bench-1b-moe.yaml" --work-dir "$bench/connector_overhead" \
      --json "$bench/connector_overhead.json" --timeout "$e2e_limit" ${extra[@]+"${extra[@]}"} 2>&1 |
      tee "$bench/connector_overhead.log"
    rc=${PIPESTATUS[0]}
    secs=$(since "$start")
    if [[ $rc -eq 0 ]]; then
      ratios=$("$py" -c 'import json, sys
r = json.load(open(sys.argv[1]))["step_time_ratios"]
print(", ".join(f"{k} {v:.3f}" for k, v in r.items()))' "$bench/connector_overhead.json" 2>/dev/null)
      [[ -n "$ratios" ]] && name="benchmark connector_overhead: step time $ratios"
    fi
    record "$name" "$(result "$rc")" "$secs"
  fi
fi

echo
echo "== summary"
printf '%-8s  %8s  %s\n' RESULT SECONDS TEST
printf '%-8s  %8s  %s\n' ------ ------- ----
for i in "${!names[@]}"; do printf '%-8s  %8s  %s\n' "${results[$i]}" "${times[$i]}" "${names[$i]}"; done
echo
echo "passed $pass, failed $fail, skipped $skip (logs: $logs${gpu_ok:+, $bench})"
if [[ $pass -eq 0 && $fail -eq 0 ]]; then
  echo "nothing ran: is a GPU visible to this process (nvidia-smi, CUDA_VISIBLE_DEVICES)?" >&2
  exit 2
fi
[[ $fail -eq 0 ]]
