#!/usr/bin/env bash
# The main job on a bundled example: convert a torch-rechub MMoE checkpoint (torch.save
# state_dict) to .mmoe, inspect it, predict, and verify against PyTorch's own outputs.
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
echo "files in $out"
