"""Checks an ONNX file written by `mmoe-convert convert ... -o model.onnx` in ONNX Runtime.

    python scripts/onnx_check.py MODEL.onnx INPUTS.npz EXPECTED.npz [OURS.npz ...]
    python scripts/onnx_check.py --manifest CASES.json

A manifest is a JSON list of {"model", "inputs", "expected": [...]}; one line per case.

Runs `onnx.checker.check_model(full_check=True)`, then the model in ONNX Runtime on the
inputs (dense [N] arrays become [N, 1], ids [N, 1] become [N]) and compares every output
found in each expected file within |got - want| <= 1e-5 + 1e-4 |want|. Prints one JSON line
with the largest absolute errors and the largest |got - want| / max(1, |want|); exits 1 when
anything is outside the tolerance.
Needs numpy, onnx and onnxruntime (scripts/test.sh installs them in a virtual environment).
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def check(model_path, inputs_path, expected_paths):
    onnx.checker.check_model(onnx.load(model_path), full_check=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    raw = dict(np.load(inputs_path))
    feeds = {}
    for info in session.get_inputs():
        value = raw[info.name]
        if info.type == "tensor(float)":
            value = value.astype(np.float32)
            if value.ndim == 1:
                value = value[:, None]
        else:
            value = value.astype(np.int64)
            if len(info.shape) == 1 and value.ndim == 2:
                value = value[:, 0]
        feeds[info.name] = value
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(names, feeds)))
    report = {"model": model_path, "outputs": {}, "ok": True}
    for path in expected_paths:
        expected = dict(np.load(path))
        for name, want in expected.items():
            if name not in got:
                continue
            have = got[name]
            want = want.astype(np.float32).reshape(have.shape) if want.size == have.size else want
            if want.shape != have.shape:
                report["ok"] = False
                report["outputs"][f"{path}:{name}"] = f"shape {list(have.shape)} vs {list(want.shape)}"
                continue
            error = np.abs(have - want)
            ok = bool(np.all((error <= 1e-5 + 1e-4 * np.abs(want)) | (np.isnan(have) & np.isnan(want))))
            report["ok"] &= ok
            key = f"{path.split('/')[-1]}:{name}"
            scaled = error / np.maximum(1.0, np.abs(want))  # |err| / max(1, |want|)
            report["outputs"][key] = {
                "max_abs_err": float(np.nanmax(error)) if error.size else 0.0,
                "max_scaled_err": float(np.nanmax(scaled)) if scaled.size else 0.0,
                "ok": ok,
            }
    return report


def main():
    if sys.argv[1] == "--manifest":
        with open(sys.argv[2]) as f:
            cases = json.load(f)
    else:
        cases = [{"model": sys.argv[1], "inputs": sys.argv[2], "expected": sys.argv[3:]}]
    ok = True
    for case in cases:
        try:
            report = check(case["model"], case["inputs"], case["expected"])
        except Exception as error:  # a model ONNX Runtime or the checker refuses is a failure
            report = {"model": case["model"], "ok": False, "error": f"{type(error).__name__}: {error}"[:2000]}
        ok &= report["ok"]
        print(json.dumps(report), flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
