#!/usr/bin/env python3
"""Writes two safetensors checkpoints of the same MMoE that differ only in the size of one
embedding table (about 1 MiB and about 1.1 GiB of tables in all) plus their native conversion
specs, for Benchmarks/open_time.sh.  Usage: make_open_time_models.py OUTDIR"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(0)
DIM = 64


def spec(vocab):
    mlp = lambda widths: {"layers": sum([[{"type": "linear", "units": w, "bias": True}, {"type": "relu"}] for w in widths], [])}
    tower = mlp([32])
    tower["layers"].append({"type": "linear", "units": 1, "bias": True})
    return {"format": "mmoe-spec", "version": 1, "name": f"open-time-{vocab}",
            "tables": [{"name": "item", "vocab_size": vocab, "dim": DIM}, {"name": "user", "vocab_size": 1000, "dim": DIM}],
            "features": [{"name": "item_id", "kind": "sparse", "table": "item"}, {"name": "user_id", "kind": "sparse", "table": "user"},
                         {"name": "price", "kind": "dense", "width": 1}],
            "concat": ["item_id", "user_id", "price"],
            "architecture": {"type": "mmoe", "experts": [mlp([128, 64]) for _ in range(4)],
                             "gates": [{"layers": [{"type": "linear", "units": 4, "bias": True}]} for _ in range(2)],
                             "towers": [tower, tower]},
            "tasks": [{"name": "ctr"}, {"name": "cvr"}]}


def weights(s):
    tensors = {}
    width = 2 * DIM + 1
    for t in s["tables"]:
        tensors[f"embeddings.{t['name']}.weight"] = None
    for e, expert in enumerate(s["architecture"]["experts"]):
        w = width
        for i, layer in enumerate(expert["layers"]):
            if layer["type"] == "linear":
                tensors[f"experts.{e}.layers.{i}.weight"] = rng.normal(size=(layer["units"], w)).astype(np.float32) / np.sqrt(w)
                tensors[f"experts.{e}.layers.{i}.bias"] = np.zeros(layer["units"], np.float32)
                w = layer["units"]
    for g in range(2):
        tensors[f"gates.{g}.layers.0.weight"] = rng.normal(size=(4, width)).astype(np.float32) / np.sqrt(width)
        tensors[f"gates.{g}.layers.0.bias"] = np.zeros(4, np.float32)
        tensors[f"towers.{g}.layers.0.weight"] = rng.normal(size=(32, 64)).astype(np.float32) / 8
        tensors[f"towers.{g}.layers.0.bias"] = np.zeros(32, np.float32)
        tensors[f"towers.{g}.layers.2.weight"] = rng.normal(size=(1, 32)).astype(np.float32) / 6
        tensors[f"towers.{g}.layers.2.bias"] = np.zeros(1, np.float32)
    return tensors


for label, vocab in [("small", 3000), ("large", 4_500_000)]:
    s = spec(vocab)
    tensors = weights(s)
    tensors["embeddings.user.weight"] = rng.normal(size=(1000, DIM)).astype(np.float32) * 0.1
    tensors["embeddings.item.weight"] = (rng.normal(size=(vocab, DIM)).astype(np.float32) * 0.1)
    save_file(tensors, os.path.join(out, f"{label}.safetensors"))
    with open(os.path.join(out, f"{label}.json"), "w") as f:
        json.dump({"framework": "native", "spec": s}, f)
    table = sum(t["vocab_size"] * t["dim"] * 4 for t in s["tables"])
    print(f"{label}: embedding tables {table / 2**20:.1f} MiB")
