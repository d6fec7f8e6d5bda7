#!/usr/bin/env bash
# Launch birkhoff under OpenMPI, one process per GPU.
#
#   launch/mpirun.sh [-n NP] [-H HOSTFILE] [-b BIRKHOFF] -- train C.yaml --set parallel.dp=8 ...
#
# NP defaults to the GPUs on this node (nvidia-smi -L), else 1. The hostfile uses OpenMPI's
# format ("node1 slots=8"). Ranks are placed by slot, consecutive ranks on the same node, which
# the process grid relies on (ep fastest, then dp, then pp: docs/parallelism.md). Each process
# is to select its GPU from its local rank (OMPI_COMM_WORLD_LOCAL_RANK; not wired into the
# trainer yet). MPI's own CPU binding is left off so OpenMP threads are not confined to one
# core. Everything after "--" goes to birkhoff.
set -euo pipefail

np=""
hostfile=""
bin="$(cd "$(dirname "$0")/.." && pwd)/build/bin/birkhoff"
while [ $# -gt 0 ]; do
  case "$1" in
    -n) np="$2"; shift 2 ;;
    -H) hostfile="$2"; shift 2 ;;
    -b) bin="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n 2,11p "$0"; exit 0 ;;
    *) break ;;
  esac
done
if [ -z "$np" ]; then
  np=$(nvidia-smi -L 2>/dev/null | wc -l || true)
  [ "${np:-0}" -gt 0 ] || np=1
fi

args=(-np "$np" --map-by slot --bind-to none)
[ -n "$hostfile" ] && args+=(--hostfile "$hostfile")
# Containers often run as root; OpenMPI refuses that unless told. Harmless otherwise.
for v in OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; do
  export "$v"
done
# Forward what the processes need on remote nodes.
for v in OMP_NUM_THREADS CUDA_VISIBLE_DEVICES NCCL_DEBUG; do
  [ -n "${!v:-}" ] && args+=(-x "$v")
done

exec mpirun "${args[@]}" "$bin" "$@"
