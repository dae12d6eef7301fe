#!/usr/bin/env bash
# Makes the virtual environment in which the tests check exported ONNX files with ONNX Runtime
# itself (pip: onnxruntime, onnx, numpy) and prints its python. Reused when it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.build/onnx-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import onnxruntime, onnx, numpy" 2>/dev/null; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >&2; then
        # Debian's python3 needs python3-venv for ensurepip.
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y python3-venv >&2
        rm -rf "$venv"
        python3 -m venv "$venv" >&2
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check onnxruntime onnx numpy >&2
fi
echo "$PWD/$venv/bin/python"
