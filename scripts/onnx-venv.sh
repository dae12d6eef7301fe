#!/usr/bin/env bash
# Makes the virtual environment in which the tests check exported ONNX files with ONNX Runtime
# itself (pip: onnxruntime, onnx, numpy) and prints its python. Reused when it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.build/onnx-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import onnxruntime, onnx, numpy" 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check onnxruntime onnx numpy >&2
fi
echo "$PWD/$venv/bin/python"
