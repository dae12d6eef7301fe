#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine with Swift: system libraries first, then swift test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Formatting is part of the build: the committed .swift-format, checked with the toolchain's swift-format.
swift format lint --strict --recursive Package.swift Sources Tests FuzzTesting/Package.swift FuzzTesting/Sources
# ONNX exports are checked in ONNX Runtime itself: a virtual environment with onnxruntime, onnx, numpy.
bash scripts/onnx-venv.sh > /dev/null
swift test
# The runtime again on its portable BLAS path (the packed AVX2 kernel is chosen per process).
MMOE_KERNEL=blas swift test --skip-build --filter MMoERuntimeTests
# bfloat16 products without AMX tiles (VDPBF16PS only), where the CPU has AMX (elsewhere the same run again).
MMOE_NO_AMX=1 swift test --skip-build --filter KernelPathTests
# A separate package embedding the runtime (import MMoE): built, run, compared with the CLI.
bash scripts/example-embed.sh
# DocC for the public modules (swift-docc-plugin), warnings refused.
bash scripts/docs.sh
