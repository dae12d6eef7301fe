#!/usr/bin/env bash
# The main job on a bundled example: convert a torch-rechub MMoE checkpoint (torch.save
# state_dict) to .mmoe, predict, verify against PyTorch's own outputs, draw the gates; then
# the same for an ONNX export of torch-rechub's ESMM, converted without a conversion spec.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
swift build -c release --product mmoe-convert
tool=.build/release/mmoe-convert
fixture=fixtures/torch/rechub_mmoe
out=${TMPDIR:-/tmp}/swift-mmoe-example
mkdir -p "$out"
$tool convert "$fixture/model.pt" --spec "$fixture/conversion.json" -o "$out/rechub_mmoe.mmoe"
$tool predict "$out/rechub_mmoe.mmoe" --inputs "$fixture/inputs.npz" -o "$out/predictions.npz" --gates
$tool verify "$out/rechub_mmoe.mmoe" --inputs "$fixture/inputs.npz" --expected "$fixture/outputs.npz"
$tool gates "$out/rechub_mmoe.mmoe" --inputs "$fixture/inputs.npz" --svg "$out/gates.svg"
onnx=fixtures/torch/rechub_esmm
$tool convert "$onnx/model.rechub.onnx" -o "$out/rechub_esmm_from_onnx.mmoe"
$tool verify "$out/rechub_esmm_from_onnx.mmoe" --inputs "$onnx/inputs.npz" --expected "$onnx/outputs.npz"
echo "files in $out"
