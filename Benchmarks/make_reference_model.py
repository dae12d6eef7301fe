#!/usr/bin/env python3
"""The reference "standard MMoE" of the performance harness, built in PyTorch.

10 sparse features (vocab 10000, dim 16) + 10 dense features -> concat width 170 ->
8 experts MLP [256, 128] ReLU -> 2 gates Linear(170 -> 8) + softmax -> 2 towers [64] ReLU ->
Linear(64 -> 1) -> sigmoid.

Writes to OUTDIR: model.pt (state_dict), model.onnx (torch.onnx.export), conversion.json
(native spec + key mapping for mmoe-convert), inputs_<B>.npz for the benchmark batch sizes,
and outputs_4096.npz (PyTorch's outputs, for the drift checks).
Usage: python3 Benchmarks/make_reference_model.py OUTDIR
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn

SPARSE, VOCAB, DIM, DENSE = 10, 10000, 16, 10
EXPERTS, HIDDEN, TASKS, TOWER = 8, (256, 128), 2, 64
WIDTH = SPARSE * DIM + DENSE


class StandardMMoE(nn.Module):
    def __init__(self):
        super().__init__()
        self.tables = nn.ModuleList([nn.Embedding(VOCAB, DIM) for _ in range(SPARSE)])
        self.experts = nn.ModuleList([nn.Sequential(nn.Linear(WIDTH, HIDDEN[0]), nn.ReLU(), nn.Linear(HIDDEN[0], HIDDEN[1]), nn.ReLU())
                                      for _ in range(EXPERTS)])
        self.gates = nn.ModuleList([nn.Linear(WIDTH, EXPERTS) for _ in range(TASKS)])
        self.towers = nn.ModuleList([nn.Sequential(nn.Linear(HIDDEN[1], TOWER), nn.ReLU(), nn.Linear(TOWER, 1)) for _ in range(TASKS)])

    def forward(self, ids, dense):
        x = torch.cat([t(ids[:, i]) for i, t in enumerate(self.tables)] + [dense], 1)
        e = torch.stack([m(x) for m in self.experts], 1)
        outs = []
        for g, t in zip(self.gates, self.towers):
            w = torch.softmax(g(x), 1)
            outs.append(torch.sigmoid(t(torch.bmm(w.unsqueeze(1), e).squeeze(1))))
        return torch.cat(outs, 1)


def spec():
    expert = {"layers": [{"type": "linear", "units": HIDDEN[0]}, {"type": "relu"}, {"type": "linear", "units": HIDDEN[1]}, {"type": "relu"}]}
    tower = {"layers": [{"type": "linear", "units": TOWER}, {"type": "relu"}, {"type": "linear", "units": 1}]}
    features = [{"name": f"s{i}", "kind": "sparse", "table": f"t{i}"} for i in range(SPARSE)]
    features += [{"name": f"d{i}", "kind": "dense", "width": 1} for i in range(DENSE)]
    return {"format": "mmoe-spec", "version": 1, "name": "standard-mmoe",
            "tables": [{"name": f"t{i}", "vocab_size": VOCAB, "dim": DIM} for i in range(SPARSE)],
            "features": features, "concat": [f["name"] for f in features],
            "architecture": {"type": "mmoe", "experts": [expert] * EXPERTS,
                             "gates": [{"layers": [{"type": "linear", "units": EXPERTS}]}] * TASKS, "towers": [tower] * TASKS},
            "tasks": [{"name": "ctr"}, {"name": "cvr"}]}


def batch(rng, rows):
    ids = rng.integers(0, VOCAB, size=(rows, SPARSE)).astype(np.int64)
    dense = rng.normal(size=(rows, DENSE)).astype(np.float32)
    named = {f"s{i}": ids[:, i].copy() for i in range(SPARSE)}
    named.update({f"d{i}": dense[:, i].copy() for i in range(DENSE)})
    return ids, dense, named


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = StandardMMoE().eval()
    with torch.no_grad():  # weights away from init so the outputs are not all 0.5
        for p in model.parameters():
            p.mul_(1.5)
    torch.save(model.state_dict(), os.path.join(out, "model.pt"))
    conversion = {"framework": "native", "spec": spec(), "mapping": [
        {"from": r"^tables\.(\d+)\.weight$", "to": "embeddings.t$1.weight"},
        {"from": r"^experts\.(\d+)\.(\d+)\.(weight|bias)$", "to": "experts.$1.layers.$2.$3"},
        {"from": r"^gates\.(\d+)\.(weight|bias)$", "to": "gates.$1.layers.0.$2"},
        {"from": r"^towers\.(\d+)\.(\d+)\.(weight|bias)$", "to": "towers.$1.layers.$2.$3"}]}
    with open(os.path.join(out, "conversion.json"), "w") as f:
        json.dump(conversion, f)
    rng = np.random.default_rng(1)
    ids, dense, _ = batch(rng, 2)
    torch.onnx.export(model, (torch.from_numpy(ids), torch.from_numpy(dense)), os.path.join(out, "model.onnx"),
                      input_names=["ids", "dense"], output_names=["probs"], opset_version=17, dynamo=False,
                      dynamic_axes={"ids": {0: "batch"}, "dense": {0: "batch"}, "probs": {0: "batch"}})
    for rows in (1, 256, 4096):
        ids, dense, named = batch(rng, rows)
        np.savez(os.path.join(out, f"inputs_{rows}.npz"), **named)
        np.savez(os.path.join(out, f"packed_{rows}.npz"), ids=ids, dense=dense)
        if rows == 4096:
            with torch.no_grad():
                y = model(torch.from_numpy(ids), torch.from_numpy(dense)).numpy()
            np.savez(os.path.join(out, "outputs_4096.npz"), ctr=y[:, 0], cvr=y[:, 1])
    print("wrote", out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/swift-mmoe-bench")
