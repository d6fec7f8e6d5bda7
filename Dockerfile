# syntax=docker/dockerfile:1
# Birkhoff in a container: an NVIDIA CUDA development image (Ubuntu 24.04, CUDA 13.0, the
# toolkit this project builds with; its sm_80/sm_90a targets need CUDA >= 12), the Debian/Ubuntu
# packages of tools/setup.sh, the build, and the CPU test suite run during the build (a failing
# test fails the image). GPU tests skip themselves during `docker build` (no GPU there).
#
#   docker build -t birkhoff .
#   docker run --rm --gpus all birkhoff birkhoff plan configs/paper-3b-mhc.yaml
#   docker run --rm --gpus all --shm-size=16g --ipc=host -v "$PWD/runs:/opt/birkhoff/runs" birkhoff \
#       launch/mpirun.sh -n 8 -- train configs/paper-3b-mhc.yaml --set parallel.dp=8
#
# More (multi-node, data volumes, build arguments): docs/cluster-guide.md.
# Build arguments:
#   CUDA_IMAGE   the base image (default below; any nvidia/cuda *-devel-ubuntu24.04 tag >= 12.8)
#   CUDA_ARCHS   CMAKE_CUDA_ARCHITECTURES (default 80;90a: A100, H100/H200)
#   CTEST_ARGS   arguments of the ctest run (default: all but the minutes-long learning runs;
#                "" runs everything, "-L unit" only the unit tests)
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-devel-ubuntu24.04
FROM ${CUDA_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PATH=/usr/local/cuda/bin:${PATH} \
    OMPI_ALLOW_RUN_AS_ROOT=1 \
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# The packages of tools/setup.sh, read from its PACKAGES=( ... ) list so the two cannot drift.
COPY tools/setup.sh /tmp/setup.sh
RUN set -eux; \
    eval "$(sed -n '/^PACKAGES=(/,/^)/p' /tmp/setup.sh)"; \
    test "${#PACKAGES[@]}" -gt 10; \
    apt-get update; \
    apt-get install -y --no-install-recommends "${PACKAGES[@]}"; \
    rm -rf /var/lib/apt/lists/* /tmp/setup.sh

WORKDIR /opt/birkhoff
COPY . .

ARG CUDA_ARCHS="80;90a"
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DBIRKHOFF_CUDA=ON \
          -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS}" \
 && cmake --build build -j"$(nproc)"

# The CPU tests, in the build (tools/test.sh runs the same ctest).
ARG CTEST_ARGS="-E ^(learning_tiny|moe_balance|compare_real_runs)"
RUN cd build && ctest --output-on-failure -j"$(nproc)" ${CTEST_ARGS}

ENV PATH=/opt/birkhoff/build/bin:${PATH}
CMD ["birkhoff", "--help"]
