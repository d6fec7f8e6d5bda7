#!/usr/bin/env bash
# Runs the abort test program under mpirun; passes when the job exits non-zero and the failing
# rank's "rank 1:" message is in the output. Usage: check_abort.sh MPIRUN PROGRAM
set -u
out=$("$1" -np 2 "$2" 2>&1)
rc=$?
echo "$out"
echo "exit code: $rc"
if [ "$rc" -eq 0 ]; then echo "FAIL: the job exited 0"; exit 1; fi
if ! grep -q "rank 1:" <<<"$out"; then echo "FAIL: no 'rank 1:' message"; exit 1; fi
echo "PASS"
