#!/usr/bin/env bash
# Runs a binary of the GPU bundle with the bundle's libraries:  ./run.sh <binary> [args...]
#   ./run.sh birkhoff train configs/<name>.yaml
#   ./run.sh test_cuda --gtest_filter='Dtypes/LinearCuda*'
# BK_SYSTEM_MPI=1 uses the host's Open MPI libraries instead of the bundled ones (needed when
# mpirun comes from a different Open MPI than the bundle was built with).
set -euo pipefail
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
[[ $# -ge 1 ]] || { echo "usage: $0 <binary> [args...]; binaries: $(ls "$here/bin" | tr '\n' ' ')" >&2; exit 2; }
bin="$1"
shift
[[ -x "$here/bin/$bin" ]] || { echo "run.sh: no binary $bin in $here/bin" >&2; exit 2; }
# A library directory is used when the host's glibc is at least what its libraries need
# (GLIBC_NEEDED, written by make_bundle.sh); otherwise the host's own copies must serve.
host_glibc="$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')"
usable() {
  local need
  need="$(cat "$1/GLIBC_NEEDED" 2>/dev/null)"
  [[ -z "$need" || -z "$host_glibc" ]] && return 0
  [[ "$(printf '%s\n%s\n' "$need" "$host_glibc" | sort -V | head -1)" == "$need" ]] && return 0
  echo "run.sh: host glibc $host_glibc < $need needed by $1; using the host's libraries instead" >&2
  return 1
}
libs=""
for d in "$here/lib" "$here/lib/compat"; do usable "$d" && libs="$libs:$d"; done
[[ "${BK_SYSTEM_MPI:-0}" == 1 ]] || { usable "$here/lib/mpi" && libs="$libs:$here/lib/mpi"; }
libs="${libs#:}"
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$here/bin/$bin" "$@"
