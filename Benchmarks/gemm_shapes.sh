#!/usr/bin/env bash
# Builds and runs Benchmarks/gemm_shapes.cpp: swift-mmoe's packed kernels against oneDNN's matmul,
# shape by shape, one thread, in one process (Docs/PERFORMANCE.md, "Own kernels or oneDNN").
# Needs Debian's libdnnl-dev (apt-get install -y libdnnl-dev); not part of the test suite.
# Usage: bash Benchmarks/gemm_shapes.sh [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/include/dnnl.hpp ]; then
    echo "gemm_shapes: needs libdnnl-dev (apt-get install -y libdnnl-dev)" >&2
    exit 2
fi
CC=${CC:-clang}
CXX=${CXX:-clang++}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for source in Sources/CMMoEKernels/*.c; do
    "$CC" -O3 -I Sources/CMMoEKernels/include -c "$source" -o "$out/$(basename "$source" .c).o"
done
"$CXX" -O3 -std=c++17 -I Sources/CMMoEKernels/include Benchmarks/gemm_shapes.cpp "$out"/*.o -ldnnl -o "$out/gemm_shapes"
grep -m1 'model name' /proc/cpuinfo | sed 's/.*: /CPU: /'
echo "ISA: $(grep -o 'avx512[a-z_0-9]*\|amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
OMP_NUM_THREADS=1 DNNL_MAX_CPU_ISA=${DNNL_MAX_CPU_ISA:-ALL} "$out/gemm_shapes" "${1:-3}"
