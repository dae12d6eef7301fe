import Foundation
import MMoECore

/// DeepCTR (TensorFlow/Keras) multi-task models (`MMOE`, `PLE`, `ESMM`, `SharedBottom`) from
/// legacy Keras HDF5 weights.
///
/// Conventions (see `Docs/guides/deepctr.md`): one table per `embedding_name`, stored by the
/// last feature that names it (`sparse_emb_<embedding_name>` for a SparseFeat,
/// `sparse_seq_emb_<feature>` for a VarLenSparseFeat); input = sparse embeddings, pooled
/// sequences, dense values; DNN kernels are `[in, out]` (transposed here); BatchNormalization
/// eps 1e-3; PReLU per unit; DeepCTR's Dice (non-affine BN eps 1e-9, per-unit alpha); gate
/// and tower final Dense layers have no bias; PredictionLayer adds `global_bias`.
struct DeepCTRImporter {
    let conversion: ConversionSpec
    let path: String

    static func unnamed(_ prefix: String, in keys: CheckpointKeys) -> [String] {
        var layers: [String] = []
        for name in keys.order {
            let layer = String(name.prefix { $0 != "/" })
            guard layer == prefix || (layer.hasPrefix(prefix + "_") && layer.dropFirst(prefix.count + 1).allSatisfy(\.isNumber)) else {
                continue
            }
            if !layers.contains(layer) { layers.append(layer) }
        }
        return layers
    }

    /// Distinct sub-layer prefixes (`<layer>/<kind>`, `<layer>/<kind>_1`, ...) in file order.
    static func sublayers(_ layer: String, kind: String, keys: CheckpointKeys) -> [String] {
        var found: [String] = []
        for name in keys.order where name.hasPrefix(layer + "/" + kind) {
            let rest = name.dropFirst(layer.count + 1)
            let component = String(rest.prefix { $0 != "/" })
            guard component == kind || (component.hasPrefix(kind + "_") && component.dropFirst(kind.count + 1).allSatisfy(\.isNumber))
            else { continue }
            let prefix = layer + "/" + component
            if !found.contains(prefix) { found.append(prefix) }
        }
        return found
    }

    func transposed(_ key: String, keys: inout CheckpointKeys) throws(ImportError) -> Tensor {
        try NativeMappingImporter.transposed(try keys.take(key), name: key)
    }

    /// A DeepCTR DNN layer: `kernel{i}`, `bias{i}`, then per hidden layer a batch norm, a PReLU
    /// or Dice when their sub-layers exist, else the named activation.
    func dnn(_ layer: String, activation: String, dims: [Int]?, keys: inout CheckpointKeys) throws(ImportError) -> [LayerPart] {
        let count = keys.count { "\(layer)/kernel\($0)" }
        let norms = DeepCTRImporter.sublayers(layer, kind: "batch_normalization", keys: keys)
        let prelus = DeepCTRImporter.sublayers(layer, kind: "p_re_lu", keys: keys)
        let dices = DeepCTRImporter.sublayers(layer, kind: "dice", keys: keys)
        guard norms.isEmpty || norms.count == count else {
            throw .mismatch(path: path, reason: "\(layer): \(norms.count) batch norms for \(count) layers")
        }
        let useBN = try conversion.args.bool("dnn_use_bn")
        if useBN == false, !norms.isEmpty {
            throw .mismatch(
                path: path,
                reason:
                    "\(layer): the conversion spec says dnn_use_bn false but the checkpoint has \(norms.count) BatchNormalization layers")
        }
        if count > 0, norms.isEmpty, useBN == true {
            throw .mismatch(
                path: path,
                reason:
                    "\(layer): the conversion spec says dnn_use_bn but the checkpoint has no BatchNormalization weights for it "
                    + "(a TF checkpoint written by Keras 3 loses the weights DeepCTR keeps in Python lists; "
                    + "convert the .weights.h5 or .keras file instead)"
            )
        }
        var parts: [LayerPart] = []
        for i in 0..<count {
            let weight = try transposed("\(layer)/kernel\(i)", keys: &keys)
            let width = weight.shape[0]
            parts.append(.linear(weight: weight, bias: try keys.take("\(layer)/bias\(i)", shape: [width])))
            if i < norms.count {
                let n = norms[i]
                parts.append(
                    .batchNorm(
                        eps: 1e-3, weight: try keys.take("\(n)/gamma", shape: [width]), bias: try keys.take("\(n)/beta", shape: [width]),
                        mean: try keys.take("\(n)/moving_mean", shape: [width]),
                        variance: try keys.take("\(n)/moving_variance", shape: [width])))
            }
            if i < prelus.count {
                parts.append(.prelu(try keys.take("\(prelus[i])/alpha", shape: [width])))
            } else if i < dices.count {
                let d = dices[i]
                parts.append(
                    .dice(
                        .deepctr, eps: 1e-9, alpha: try keys.take("\(d)/dice_alpha", shape: [width]),
                        normalization: (
                            weight: nil, bias: nil, mean: try keys.take("\(d)/batch_normalization/moving_mean", shape: [width]),
                            variance: try keys.take("\(d)/batch_normalization/moving_variance", shape: [width])
                        )))
            } else {
                switch activation.lowercased() {
                case "relu": parts.append(.plain(.relu))
                case "sigmoid": parts.append(.plain(.sigmoid))
                case "tanh": parts.append(.plain(.tanh))
                case "linear": break
                case "prelu", "dice":
                    throw .mismatch(
                        path: path,
                        reason:
                            "\(layer): activation \(activation) but the checkpoint has no \(activation) weights for hidden layer \(i) "
                            + "(a TF checkpoint written by Keras 3 loses the weights DeepCTR keeps in Python lists; "
                            + "convert the .weights.h5 or .keras file instead)"
                    )
                default: throw .unsupported(path: conversion.file, reason: "DeepCTR activation '\(activation)'")
                }
            }
        }
        try checkDims(dims, parts, dropLast: false, what: layer, path: path)
        return parts
    }

    mutating func build(keys: inout CheckpointKeys, builder: inout CanonicalBuilder, notes: inout [ImportNote]) throws(ImportError)
        -> ModelSpec
    {
        // The table of each embedding name belongs to the last feature naming it (sparse
        // features are created first, sequences after and override them).
        var ownerLayer: [String: String] = [:]
        for feature in conversion.features where feature.kind == .sparse {
            ownerLayer[feature.embeddingName ?? feature.name] = "sparse_emb_" + (feature.embeddingName ?? feature.name)
        }
        for feature in conversion.features where feature.kind == .sequence {
            ownerLayer[feature.embeddingName ?? feature.name] = "sparse_seq_emb_" + feature.name
        }
        let owners = ownerLayer
        let convention = CheckpointConverter.InputConvention(
            tableKey: { "\($0)/embeddings" }, owner: { owners[$0.embeddingName ?? $0.name] ?? $0.name }, defaultPooling: "mean",
            defaultPadding: 0,
            meanEpsilon: 1e-8, emptyMax: -1e9, defaultMaxLength: 256)
        let (tables, features) = try CheckpointConverter.buildInputs(
            conversion.features, convention: convention, keys: &keys, builder: &builder, notes: &notes, path: path)
        let concat =
            features.filter { $0.kind == .sparse }.map(\.name) + features.filter { $0.kind == .sequence }.map(\.name)
            + features.filter { $0.kind == .dense }.map(\.name)
        let args = conversion.args
        let activation = try args.string("dnn_activation") ?? "relu"
        if keys.format == "tf-checkpoint-keras3" {
            throw .unsupported(
                path: path,
                reason:
                    "a TF checkpoint written by Keras 3 lacks every weight DeepCTR keeps in Python lists (DNN kernels and biases, "
                    + "batch norms, PReLU, Dice); convert the model's .weights.h5 or .keras file instead"
            )
        }
        let expertDims = try args.ints("expert_dnn_hidden_units")
        let gateDims = try args.ints("gate_dnn_hidden_units")
        let towerDims = try args.ints("tower_dnn_hidden_units")
        let model = conversion.model.lowercased()
        let names = try args.strings("task_names") ?? ["ctr", "ctcvr"]
        var tasks = try CheckpointConverter.tasks(conversion, names: names, types: try args.strings("task_types"), count: nil, path: path)
        let finals = DeepCTRImporter.unnamed("dense", in: keys)
        func tower(_ t: Int, _ layer: String) throws(ImportError) -> MLP {
            var parts = try dnn(layer, activation: activation, dims: towerDims, keys: &keys)
            guard t < finals.count else { throw .mismatch(path: path, reason: "no final Dense layer for task \(t) (found \(finals))") }
            parts.append(.linear(weight: try transposed("\(finals[t])/kernel", keys: &keys), bias: nil))
            return try builder.mlp("towers.\(t)", parts)
        }
        func gate(_ path: String, dnnLayer: String, softmax: String) throws(ImportError) -> MLP {
            var parts = try dnn(dnnLayer, activation: activation, dims: gateDims, keys: &keys)
            parts.append(.linear(weight: try transposed("\(softmax)/kernel", keys: &keys), bias: nil))
            return try builder.mlp(path, parts)
        }
        var outputs: [OutputSpec]? = nil
        var biasKeys = tasks.map { "\($0.name)/global_bias" }
        let architecture: Architecture
        switch model {
        case "mmoe":
            let experts = keys.count { "expert_\($0)/kernel0" }
            try CheckpointConverter.checkCount(args, "num_experts", experts, path: path)
            var expertMLPs: [MLP] = []
            for e in 0..<experts {
                expertMLPs.append(
                    try builder.mlp("experts.\(e)", try dnn("expert_\(e)", activation: activation, dims: expertDims, keys: &keys)))
            }
            var gates: [MLP] = []
            for (t, task) in tasks.enumerated() {
                gates.append(try gate("gates.\(t)", dnnLayer: "gate_\(task.name)", softmax: "gate_softmax_\(task.name)"))
            }
            var towers: [MLP] = []
            for (t, task) in tasks.enumerated() { towers.append(try tower(t, "tower_\(task.name)")) }
            architecture = Architecture(type: .mmoe, experts: expertMLPs, gates: gates, towers: towers)
            notes.append(ImportNote(.inferred, "\(experts) experts, \(tasks.count) tasks"))
        case "ple":
            let levels = keys.count { "level_\($0)_gate_softmax_specific_\(tasks[0].name)/kernel" }
            let specific = keys.count { "level_0_task_\(tasks[0].name)_expert_specific_\($0)/kernel0" }
            let shared = keys.count { "level_0_expert_shared_\($0)/kernel0" }
            try CheckpointConverter.checkCount(args, "num_levels", levels, path: path)
            try CheckpointConverter.checkCount(args, "specific_expert_num", specific, path: path)
            try CheckpointConverter.checkCount(args, "shared_expert_num", shared, path: path)
            var pleLevels: [PLELevel] = []
            for l in 0..<levels {
                var specificExperts: [[MLP]] = []
                for (t, task) in tasks.enumerated() {
                    var list: [MLP] = []
                    for j in 0..<specific {
                        list.append(
                            try builder.mlp(
                                "levels.\(l).specific_experts.\(t).\(j)",
                                try dnn(
                                    "level_\(l)_task_\(task.name)_expert_specific_\(j)", activation: activation, dims: expertDims,
                                    keys: &keys)))
                    }
                    specificExperts.append(list)
                }
                var sharedExperts: [MLP] = []
                for k in 0..<shared {
                    sharedExperts.append(
                        try builder.mlp(
                            "levels.\(l).shared_experts.\(k)",
                            try dnn("level_\(l)_expert_shared_\(k)", activation: activation, dims: expertDims, keys: &keys)))
                }
                var gates: [MLP] = []
                for (t, task) in tasks.enumerated() {
                    gates.append(
                        try gate(
                            "levels.\(l).specific_gates.\(t)", dnnLayer: "level_\(l)_gate_specific_\(task.name)",
                            softmax: "level_\(l)_gate_softmax_specific_\(task.name)"))
                }
                var sharedGate: MLP? = nil
                if keys.has("level_\(l)_gate_softmax_shared/kernel") {
                    sharedGate = try gate(
                        "levels.\(l).shared_gate", dnnLayer: "level_\(l)_gate_shared", softmax: "level_\(l)_gate_softmax_shared")
                }
                pleLevels.append(
                    PLELevel(specificExperts: specificExperts, sharedExperts: sharedExperts, specificGates: gates, sharedGate: sharedGate))
            }
            var towers: [MLP] = []
            for (t, task) in tasks.enumerated() { towers.append(try tower(t, "tower_\(task.name)")) }
            architecture = Architecture(type: .ple, levels: pleLevels, towers: towers)
            notes.append(ImportNote(.inferred, "\(levels) levels, \(specific) specific experts per task, \(shared) shared experts"))
        case "sharedbottom", "shared_bottom":
            guard let bottomLayer = DeepCTRImporter.unnamed("dnn", in: keys).first else {
                throw .mismatch(path: path, reason: "no bottom DNN layer ('dnn')")
            }
            let bottom = try builder.mlp(
                "bottom", try dnn(bottomLayer, activation: activation, dims: try args.ints("bottom_dnn_hidden_units"), keys: &keys))
            var towers: [MLP] = []
            for (t, task) in tasks.enumerated() { towers.append(try tower(t, "tower_\(task.name)")) }
            architecture = Architecture(type: .sharedBottom, bottom: bottom, towers: towers)
        case "esmm":
            let esmm = try CheckpointConverter.esmmTasks(names, conversion: conversion)
            let dnns = DeepCTRImporter.unnamed("dnn", in: keys)
            guard dnns.count == 2 else { throw .mismatch(path: path, reason: "ESMM needs two tower DNNs, found \(dnns)") }
            tasks = esmm.tasks
            let ctr = try tower(0, dnns[0])
            let cvr = try tower(1, dnns[1])
            architecture = Architecture(type: .esmm, towers: [ctr, cvr])
            outputs = esmm.outputs
            guard let cvrBias = DeepCTRImporter.unnamed("prediction_layer", in: keys).first else {
                throw .mismatch(path: path, reason: "no PredictionLayer for the cvr task ('prediction_layer')")
            }
            biasKeys = ["\(names[0])/global_bias", "\(cvrBias)/global_bias"]
        default:
            throw .unsupported(path: conversion.file, reason: "DeepCTR model '\(conversion.model)' (MMOE, PLE, ESMM, SharedBottom)")
        }
        for (t, key) in biasKeys.enumerated() { try builder.put(try keys.take(key, shape: [1]), TensorNames.headBias(t)) }
        return ModelSpec(
            name: conversion.model, tables: tables, features: features, concat: concat, architecture: architecture,
            tasks: tasks.map { TaskHead(name: $0.name, head: $0.head, predictionBias: true) }, outputs: outputs,
            metadata: ["source_framework": "deepctr", "source_model": conversion.model])
    }
}
