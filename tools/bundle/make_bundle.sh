#!/usr/bin/env bash
# Builds the GPU bundle: a self-contained directory with birkhoff, the GPU test binaries and
# the non-system shared libraries they load, to copy to a GPU host and run there
# (docs/cuda.md, "The GPU bundle").
#
#   tools/bundle/make_bundle.sh [--archs "80;90a"] [--jobs N] [--build-dir DIR] [--out DIR]
#
# Result: dist/birkhoff-gpu/ and dist/birkhoff-gpu.tar.gz
#   bin/                 birkhoff, prepare_data, test_cuda, test_cuda_nccl_mpi, mhc_kernels (benchmark)
#   lib/                 yaml-cpp, fmt, spdlog, OpenBLAS, gfortran, libstdc++, cudart,
#                        cuBLASLt, NCCL, ... (everything ldd resolves outside glibc and the driver)
#   lib/compat/          the compiler runtime (libstdc++, libgcc_s, libgomp, gfortran): on the
#                        path only if the host's glibc is new enough for it
#   lib/mpi/             Open MPI's libraries (left out of the path with BK_SYSTEM_MPI=1)
#   configs/             the run configurations (bench-1b-moe.yaml, tiny-*.yaml, paper-*.yaml, ...)
#   tools/bench/         connector_overhead.py (baseline vs hc vs mhc end to end) and
#                        torch_reference.py (the same model in PyTorch), docs/performance.md
#   tests/oracle/, tests/bk_safetensors.py   the PyTorch model torch_reference.py imports
#   data/kjv/            train.bin, val.bin, tokenizer.json when data/kjv has been prepared here
#                        (tools/prepare_corpus.sh); without them the bundle trains on random tokens
#   run.sh               ./run.sh <binary> [args]: runs bin/<binary> with lib/ on LD_LIBRARY_PATH
#   run_gpu_tests.sh     runs every GPU test, one process per test, then the benchmarks and two
#                        training runs on the GPU, and prints a summary table
#   BUILD_INFO           commit, compiler, CUDA version, architectures
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
archs="80;90a"
jobs="$(nproc)"
build="$root/build-bundle"
out="$root/dist/birkhoff-gpu"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --archs) archs="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --build-dir) build="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "make_bundle.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
command -v nvcc >/dev/null || { echo "make_bundle.sh: nvcc not found (CUDA toolkit)" >&2; exit 1; }

echo "== configure $build (CUDA architectures $archs)"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBIRKHOFF_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES="$archs" >"$build.configure.log" 2>&1 ||
  { cat "$build.configure.log"; exit 1; }
grep -q "BIRKHOFF_CUDA:BOOL=ON" "$build/CMakeCache.txt" ||
  { echo "make_bundle.sh: CUDA is not enabled in $build" >&2; exit 1; }

targets=(birkhoff test_cuda)
known="$(make -C "$build" help 2>/dev/null)"  # (grep -q on a pipe would SIGPIPE make)
for t in prepare_data test_cuda_nccl_mpi mhc_kernels; do
  if grep -qx "\.\.\. $t" <<<"$known"; then targets+=("$t"); fi
done
echo "== build ${targets[*]} (-j$jobs)"
make -C "$build" -j"$jobs" "${targets[@]}"

echo "== collect into $out"
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib/compat" "$out/lib/mpi"
for t in "${targets[@]}"; do
  f="$(find "$build" -type f -name "$t" -perm -u+x | head -1)"
  [[ -n "$f" ]] || { echo "make_bundle.sh: built $t but cannot find it" >&2; exit 1; }
  cp "$f" "$out/bin/"
done

# Libraries that must come from the GPU host: glibc and the loader (ABI of the host's
# kernel and libc), and the CUDA driver (libcuda, libnvidia-*: they match the host's driver).
is_system() {
  case "$(basename "$1")" in
    linux-vdso*|ld-linux*|libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libutil.so*|\
    libresolv.so*|libcuda.so*|libnvidia-*|libcrypt.so*) return 0 ;;
  esac
  return 1
}
declare -A seen=()
for b in "$out"/bin/*; do
  while read -r lib; do
    [[ -n "$lib" && -f "$lib" ]] || continue
    is_system "$lib" && continue
    [[ -n "${seen[$lib]:-}" ]] && continue
    seen[$lib]=1
    case "$(basename "$lib")" in
      libmpi*|libopen-*|libpmix*|libhwloc*|libevent*|libfabric*|libucp*|libucs*|libuct*|libucm*|libpsm*)
        cp -L "$lib" "$out/lib/mpi/" ;;
      # The compiler's runtime: used only where the host's glibc is new enough for it (run.sh).
      libstdc++*|libgcc_s*|libgomp*|libgfortran*|libquadmath*)
        cp -L "$lib" "$out/lib/compat/" ;;
      *) cp -L "$lib" "$out/lib/" ;;
    esac
  done < <(ldd "$b" | awk '/=> \// { print $3 } /^\s*\// { print $1 }')
done
# The newest glibc symbol version each directory needs; run.sh skips a directory whose need
# the host's glibc does not meet (the host's own libstdc++ / Open MPI are used instead).
glibc_need() {
  for b in "$@"; do objdump -T "$b" 2>/dev/null; done | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' |
    sort -Vu | tail -1
}
for d in lib lib/compat lib/mpi; do
  glibc_need "$out/$d"/*.so* >"$out/$d/GLIBC_NEEDED"
done
glibc_need "$out"/bin/* >"$out/bin/GLIBC_NEEDED"
# ldd shows what is linked; the NCCL test and birkhoff load nothing else dynamically except
# Open MPI's plugins, which come from the host's Open MPI when mpirun is used.

cp -r "$root/configs" "$out/configs"
# The end-to-end benchmark and its PyTorch peer (docs/performance.md) with what they import:
# torch_reference.py puts <root>/tests/oracle on sys.path for torch_oracle.py, which imports
# <root>/tests/bk_safetensors.py; the bundle keeps those relative paths.
mkdir -p "$out/tools/bench" "$out/tests/oracle"
cp "$root/tools/bench/connector_overhead.py" "$root/tools/bench/torch_reference.py" "$out/tools/bench/"
cp "$root/tests/oracle/torch_oracle.py" "$out/tests/oracle/"
cp "$root/tests/bk_safetensors.py" "$out/tests/"
chmod +x "$out/tools/bench/connector_overhead.py" "$out/tools/bench/torch_reference.py"
# The tiny configs' corpus (data.train: data/kjv/train.bin), when it has been prepared here.
if [[ -f "$root/data/kjv/train.bin" && -f "$root/data/kjv/val.bin" ]]; then
  mkdir -p "$out/data/kjv"
  for f in train.bin val.bin tokenizer.json stats.json; do
    if [[ -f "$root/data/kjv/$f" ]]; then cp "$root/data/kjv/$f" "$out/data/kjv/"; fi
  done
else
  echo "== note: no data/kjv/{train,val}.bin here (tools/prepare_corpus.sh): the bundle's training runs use random tokens"
fi
cp "$root/tools/bundle/run.sh" "$root/tools/bundle/run_gpu_tests.sh" "$out/"
[[ -f "$root/docs/cuda.md" ]] && cp "$root/docs/cuda.md" "$out/README-cuda.md"
chmod +x "$out/run.sh" "$out/run_gpu_tests.sh"
{
  echo "commit:  $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"
  echo "built:   $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
  echo "archs:   $archs"
  echo "nvcc:    $(nvcc --version | tail -1)"
  echo "cxx:     $(grep CMAKE_CXX_COMPILER:FILEPATH "$build/CMakeCache.txt" | cut -d= -f2) $(c++ -dumpfullversion 2>/dev/null)"
  echo "glibc:   built with $(ldd --version | head -1 | awk '{print $NF}'); binaries need >= $(cat "$out/bin/GLIBC_NEEDED"), lib/ >= $(cat "$out/lib/GLIBC_NEEDED"), lib/compat/ >= $(cat "$out/lib/compat/GLIBC_NEEDED"), lib/mpi/ >= $(cat "$out/lib/mpi/GLIBC_NEEDED")"
  echo "targets: ${targets[*]}"
} >"$out/BUILD_INFO"

tar -C "$(dirname "$out")" -czf "$out.tar.gz" "$(basename "$out")"
echo "== done: $out ($(du -sh "$out" | cut -f1)), $out.tar.gz"
echo "   on the GPU host: tar xzf $(basename "$out").tar.gz && cd $(basename "$out") && ./run_gpu_tests.sh"
