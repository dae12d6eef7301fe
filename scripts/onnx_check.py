"""Checks an ONNX file written by `mmoe-convert convert ... -o model.onnx` in ONNX Runtime.

    python scripts/onnx_check.py MODEL.onnx INPUTS.npz EXPECTED.npz [OURS.npz ...]

Runs `onnx.checker.check_model(full_check=True)`, then the model in ONNX Runtime on the
inputs (dense [N] arrays become [N, 1], ids [N, 1] become [N]) and compares every output
found in each expected file within |got - want| <= 1e-5 + 1e-4 |want|. Prints one JSON line
with the largest errors; exits 1 when anything is outside the tolerance.
Needs numpy, onnx and onnxruntime (scripts/test.sh installs them in a virtual environment).
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main():
    model_path, inputs_path, *expected_paths = sys.argv[1:]
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
            report["outputs"][key] = {"max_abs_err": float(np.nanmax(error)) if error.size else 0.0, "ok": ok}
    print(json.dumps(report))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
