#!/usr/bin/env python3
"""ONNX Runtime on swift-mmoe's ONNX export against ONNX Runtime on PyTorch's own export of
the same model (the standard MMoE of Benchmarks/), interleaved in one run, as ratios.

Usage (from the repository root):
    python3 Benchmarks/onnx_export.py [--rounds 3] [--seconds 1.0] [--opset 17]
Needs: torch, onnx, onnxruntime, numpy; builds the release mmoe-convert.
"""
import argparse
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402  (shared helpers: sh, timed, ort_sessions, cpu_description)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "swift-mmoe-bench"))
    args = parser.parse_args()
    work = args.workdir
    subprocess.run(["swift", "build", "-c", "release", "--product", "mmoe-convert"], cwd=run.ROOT, check=True, capture_output=True)
    if not os.path.exists(os.path.join(work, "model.onnx")):
        run.sh(sys.executable, os.path.join(HERE, "make_reference_model.py"), work)
    model = os.path.join(work, "model.mmoe")
    run.sh(run.TOOL, "convert", os.path.join(work, "model.pt"), "--spec", os.path.join(work, "conversion.json"), "-o", model)
    ours = os.path.join(work, "model.swift-mmoe.onnx")
    run.sh(run.TOOL, "convert", model, "-o", ours, "--opset", str(args.opset))
    theirs = run.ort_sessions(os.path.join(work, "model.onnx"))
    exported = run.ort_sessions(ours)
    packed = {b: dict(np.load(os.path.join(work, f"packed_{b}.npz"))) for b in run.BATCHES}
    named = {b: dict(np.load(os.path.join(work, f"inputs_{b}.npz"))) for b in run.BATCHES}
    feeds = {}
    for b in run.BATCHES:
        feed = {}
        for info in exported[1].get_inputs():
            value = named[b][info.name]
            feed[info.name] = value.astype(np.float32)[:, None] if info.type == "tensor(float)" and value.ndim == 1 else value
        feeds[b] = feed
    # Same model, same answers.
    for b in run.BATCHES:
        want = theirs[1].run(None, {"ids": packed[b]["ids"], "dense": packed[b]["dense"]})[0]
        got = exported[1].run(None, feeds[b])
        got = np.stack(got, 1) if len(got) > 1 else got[0]
        assert np.allclose(got, want, atol=1e-5, rtol=1e-4), float(np.abs(got - want).max())
    results = {}
    for _ in range(args.rounds):
        for b in run.BATCHES:
            for threads in (1, 2):
                p = {"ids": packed[b]["ids"], "dense": packed[b]["dense"]}
                results.setdefault(("pytorch export", threads, b), []).append(run.timed(lambda: theirs[threads].run(None, p), args.seconds))
                results.setdefault(("swift-mmoe export", threads, b), []).append(run.timed(lambda: exported[threads].run(None, feeds[b]), args.seconds))
    median = {k: float(np.median(v)) for k, v in results.items()}
    cpu, isa = run.cpu_description()
    import onnxruntime as ort
    print(f"machine: {os.cpu_count()} cores, {cpu}; ISA flags: {' '.join(isa)}; onnxruntime {ort.__version__}; opset {args.opset}")
    print("| batch | threads | ORT on PyTorch's export | ORT on swift-mmoe's export | ours / theirs time |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    worst = 0.0
    for b in run.BATCHES:
        for threads in (1, 2):
            a, o = median[("pytorch export", threads, b)], median[("swift-mmoe export", threads, b)]
            worst = max(worst, o / a)
            print(f"| {b} | {threads} | {a * 1e3:.3f} ms | {o * 1e3:.3f} ms | {o / a:.2f} |")
    print(f"slowest ratio {worst:.2f} (goal: within 10 %, <= 1.10)")


if __name__ == "__main__":
    main()
