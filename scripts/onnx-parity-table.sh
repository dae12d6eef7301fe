#!/usr/bin/env bash
# The ONNX export parity table: every framework fixture converted, exported to ONNX (opset
# ${OPSET:-17}), run in ONNX Runtime (scripts/onnx-venv.sh), compared with the framework's
# outputs and with swift-mmoe's. Prints a Markdown table (Docs/guides/serving.md holds one).
set -euo pipefail
cd "$(dirname "$0")/.."
python=$(bash scripts/onnx-venv.sh)
swift build --product mmoe-convert >&2
B=.build/debug/mmoe-convert
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
opset=${OPSET:-17}
echo "| fixture | file | outputs | max abs ORT vs framework | max abs ORT vs swift-mmoe | max scaled | ok |"
echo "| --- | --- | --- | ---: | ---: | ---: | --- |"
for dir in fixtures/torch/* fixtures/keras/* fixtures/keras3/*; do
    [ -f "$dir/conversion.json" ] || continue
    model=""
    for f in model.pt model.safetensors model.h5 model.weights.h5; do
        if [ -f "$dir/$f" ]; then model="$dir/$f"; break; fi
    done
    [ -n "$model" ] || continue
    $B convert "$model" --spec "$dir/conversion.json" -o "$tmp/m.onnx" --opset "$opset" > /dev/null 2>&1
    $B convert "$model" --spec "$dir/conversion.json" -o "$tmp/m.mmoe" > /dev/null 2>&1
    $B predict "$tmp/m.mmoe" --inputs "$dir/inputs.npz" -o "$tmp/ours.npz" > /dev/null
    "$python" scripts/onnx_check.py "$tmp/m.onnx" "$dir/inputs.npz" "$dir/outputs.npz" "$tmp/ours.npz" > "$tmp/report.json" || true
    "$python" - "$dir" "$(basename "$model")" "$tmp/report.json" <<'PY'
import json, sys
folder, file, path = sys.argv[1:]
report = json.load(open(path))
outs = report.get("outputs", {})
fw = [v for k, v in outs.items() if k.startswith("outputs.npz:")]
ours = [v for k, v in outs.items() if k.startswith("ours.npz:")]
names = sorted({k.split(":", 1)[1] for k in outs})
def worst(items, key):
    return max((i[key] for i in items), default=float("nan"))
print(f"| {folder.split('fixtures/')[1]} | {file} | {', '.join(names)} | {worst(fw, 'max_abs_err'):.1e} | {worst(ours, 'max_abs_err'):.1e} | "
      f"{max(worst(fw, 'max_scaled_err'), worst(ours, 'max_scaled_err')):.1e} | {'yes' if report.get('ok') else 'NO'} |")
PY
done
