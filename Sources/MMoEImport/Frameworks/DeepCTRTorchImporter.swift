import MMoECore

/// DeepCTR-Torch multi-task models (`MMOE`, `PLE`, `ESMM`, `SharedBottom`).
///
/// Conventions (see `Docs/guides/deepctr-torch.md`): tables `embedding_dict.<embedding_name>`;
/// input = sparse embeddings, then pooled sequence embeddings, then dense values, each group
/// in feature order; DNNs are `linears.k` (+ `bn.k`, eps 1e-5) → activation; gate and tower
/// final layers have no bias; `out.t.bias` is a prediction bias; sequences mask id 0, mean
/// pooling divides by count + 1e-8, max pooling of an all-padding row gives -1e9.
struct DeepCTRTorchImporter {
    let conversion: ConversionSpec
    let path: String

    /// A DNN whose widths must equal `dims` when given (the args' `*_hidden_units`).
    func dnn(_ prefix: String, activation: String, dims: [Int]?, keys: inout CheckpointKeys) throws(ImportError) -> [LayerPart] {
        let parts = try dnn(prefix, activation: activation, keys: &keys)
        try checkDims(dims, parts, dropLast: false, what: prefix, path: path)
        return parts
    }

    func dnn(_ prefix: String, activation: String, keys: inout CheckpointKeys) throws(ImportError) -> [LayerPart] {
        var parts: [LayerPart] = []
        var k = 0
        while keys.has("\(prefix).linears.\(k).weight") {
            let weight = try keys.take("\(prefix).linears.\(k).weight")
            let width = weight.shape[0]
            parts.append(.linear(weight: weight, bias: try keys.take("\(prefix).linears.\(k).bias", shape: [width])))
            let bn = "\(prefix).bn.\(k)"
            switch (try conversion.args.bool("dnn_use_bn"), keys.has("\(bn).running_mean")) {
            // An ONNX exporter may have folded the batch norm into the linear.
            case (true, false) where keys.format != "onnx":
                throw .mismatch(path: path, reason: "\(prefix): the conversion spec says dnn_use_bn but the checkpoint has no \(bn)")
            case (false, true):
                throw .mismatch(path: path, reason: "\(prefix): the conversion spec says dnn_use_bn false but the checkpoint has \(bn)")
            default: break
            }
            if keys.has("\(bn).running_mean") {
                parts.append(
                    .batchNorm(
                        eps: 1e-5, weight: try keys.take("\(bn).weight", shape: [width]), bias: try keys.take("\(bn).bias", shape: [width]),
                        mean: try keys.take("\(bn).running_mean", shape: [width]),
                        variance: try keys.take("\(bn).running_var", shape: [width])))
            }
            let act = "\(prefix).activation_layers.\(k)"
            if keys.has("\(act).weight") {
                parts.append(.prelu(try keys.take("\(act).weight")))
            } else if keys.has("\(act).alpha") {
                throw .unsupported(
                    path: path, reason: "\(act): DeepCTR-Torch's Dice only runs on 3-D input and cannot appear in these models")
            } else {
                switch activation.lowercased() {
                case "relu": parts.append(.plain(.relu))
                case "sigmoid": parts.append(.plain(.sigmoid))
                case "linear": break
                case "tanh": parts.append(.plain(.tanh))
                case "prelu": throw .mismatch(path: path, reason: "\(act): activation prelu but the checkpoint has no PReLU weight")
                default: throw .unsupported(path: conversion.file, reason: "DeepCTR-Torch activation '\(activation)'")
                }
            }
            k += 1
        }
        return parts
    }

    /// A final `Linear(..., bias=False)`.
    func final(_ key: String, keys: inout CheckpointKeys) throws(ImportError) -> LayerPart {
        .linear(weight: try keys.take(key), bias: nil)
    }

    mutating func build(keys: inout CheckpointKeys, builder: inout CanonicalBuilder, notes: inout [ImportNote]) throws(ImportError)
        -> ModelSpec
    {
        let convention = CheckpointConverter.InputConvention(
            tableKey: { "embedding_dict.\($0).weight" }, owner: { $0.embeddingName ?? $0.name }, defaultPooling: "mean", defaultPadding: 0,
            meanEpsilon: 1e-8, emptyMax: -1e9, defaultMaxLength: 256)
        for feature in conversion.features where feature.kind == .sequence && feature.paddingIndex != nil && feature.paddingIndex != 0 {
            throw .unsupported(
                path: conversion.file, reason: "feature '\(feature.name)': DeepCTR-Torch masks id 0; padding_idx cannot be changed")
        }
        let (tables, features) = try CheckpointConverter.buildInputs(
            conversion.features, convention: convention, keys: &keys, builder: &builder, notes: &notes, path: path)
        let concat =
            features.filter { $0.kind == .sparse }.map(\.name) + features.filter { $0.kind == .sequence }.map(\.name)
            + features.filter { $0.kind == .dense }.map(\.name)
        let args = conversion.args
        let activation = try args.string("dnn_activation") ?? "relu"
        if try args.string("dnn_activation") == nil { notes.append(ImportNote(.assumed, "dnn_activation relu (DeepCTR-Torch default)")) }
        let model = conversion.model.lowercased()
        let expertDims = try args.ints("expert_dnn_hidden_units")
        let gateDims = try args.ints("gate_dnn_hidden_units")
        let towerDims = try args.ints("tower_dnn_hidden_units")
        // ESMM's two heads come from its task names (below).
        var tasks: [(name: String, head: HeadKind)] =
            model == "esmm"
            ? []
            : try CheckpointConverter.tasks(
                conversion, names: try args.strings("task_names") ?? ["ctr", "ctcvr"], types: try args.strings("task_types"), count: nil,
                path: path)
        var outputs: [OutputSpec]? = nil
        var biasKeys: [String] = tasks.indices.map { "out.\($0).bias" }

        func tower(_ t: Int, dnnPrefix: String, finalKey: String, keys: inout CheckpointKeys, builder: inout CanonicalBuilder)
            throws(ImportError) -> MLP
        {
            var parts = try dnn(dnnPrefix, activation: activation, dims: towerDims, keys: &keys)
            parts.append(try final(finalKey, keys: &keys))
            return try builder.mlp("towers.\(t)", parts)
        }

        let architecture: Architecture
        switch model {
        case "mmoe":
            let experts = keys.count { "expert_dnn.\($0).linears.0.weight" }
            try CheckpointConverter.checkCount(args, "num_experts", experts, path: path)
            var expertMLPs: [MLP] = []
            for e in 0..<experts {
                expertMLPs.append(
                    try builder.mlp("experts.\(e)", try dnn("expert_dnn.\(e)", activation: activation, dims: expertDims, keys: &keys)))
            }
            var gates: [MLP] = []
            for t in tasks.indices {
                var parts = try dnn("gate_dnn.\(t)", activation: activation, dims: gateDims, keys: &keys)
                parts.append(try final("gate_dnn_final_layer.\(t).weight", keys: &keys))
                gates.append(try builder.mlp("gates.\(t)", parts))
            }
            var towers: [MLP] = []
            for t in tasks.indices {
                towers.append(
                    try tower(t, dnnPrefix: "tower_dnn.\(t)", finalKey: "tower_dnn_final_layer.\(t).weight", keys: &keys, builder: &builder)
                )
            }
            architecture = Architecture(type: .mmoe, experts: expertMLPs, gates: gates, towers: towers)
            notes.append(ImportNote(.inferred, "\(experts) experts, \(tasks.count) tasks"))
        case "ple":
            let levels = keys.count { "specific_gate_dnn_final_layer.\($0).0.weight" }
            let specific = keys.count { "specific_experts.0.0.\($0).linears.0.weight" }
            let built = keys.count { "shared_experts.0.0.\($0).linears.0.weight" }
            guard let sharedGateShape = keys.shape("shared_gate_dnn_final_layer.0.weight") else {
                throw .mismatch(path: path, reason: "no shared_gate_dnn_final_layer.0.weight: not a DeepCTR-Torch PLE")
            }
            let shared = sharedGateShape[0] - tasks.count * specific
            guard shared >= 0, shared <= built else {
                throw .mismatch(
                    path: path,
                    reason: "the shared gate mixes \(sharedGateShape[0]) experts, which does not fit \(specific) specific experts per task")
            }
            try CheckpointConverter.checkCount(args, "num_levels", levels, path: path)
            try CheckpointConverter.checkCount(args, "specific_expert_num", specific, path: path)
            if let n = try args.int("shared_expert_num"), n != shared {
                throw .mismatch(path: path, reason: "shared_expert_num is \(n) but the shared gate implies \(shared)")
            }
            if built > shared {
                notes.append(
                    ImportNote(
                        .ignored,
                        "\(built - shared) unused shared experts per level (DeepCTR-Torch builds shared experts with the "
                            + "specific-expert count)"
                    ))
            }
            var pleLevels: [PLELevel] = []
            for l in 0..<levels {
                var specificExperts: [[MLP]] = []
                for t in tasks.indices {
                    var list: [MLP] = []
                    for j in 0..<specific {
                        list.append(
                            try builder.mlp(
                                "levels.\(l).specific_experts.\(t).\(j)",
                                try dnn("specific_experts.\(l).\(t).\(j)", activation: activation, dims: expertDims, keys: &keys)))
                    }
                    specificExperts.append(list)
                }
                var sharedExperts: [MLP] = []
                for k in 0..<built {
                    if k < shared {
                        sharedExperts.append(
                            try builder.mlp(
                                "levels.\(l).shared_experts.\(k)",
                                try dnn("shared_experts.\(l).0.\(k)", activation: activation, dims: expertDims, keys: &keys)))
                    } else {
                        _ = try dnn("shared_experts.\(l).0.\(k)", activation: activation, keys: &keys)
                    }
                }
                var gates: [MLP] = []
                for t in tasks.indices {
                    var parts = try dnn("specific_gate_dnn.\(l).\(t).0", activation: activation, dims: gateDims, keys: &keys)
                    parts.append(try final("specific_gate_dnn_final_layer.\(l).\(t).weight", keys: &keys))
                    gates.append(try builder.mlp("levels.\(l).specific_gates.\(t)", parts))
                }
                var sharedGate: MLP? = nil
                if l < levels - 1 {
                    var sharedParts = try dnn("shared_gate_dnn.\(l)", activation: activation, dims: gateDims, keys: &keys)
                    sharedParts.append(try final("shared_gate_dnn_final_layer.\(l).weight", keys: &keys))
                    sharedGate = try builder.mlp("levels.\(l).shared_gate", sharedParts)
                } else if keys.has("shared_gate_dnn_final_layer.\(l).weight") {
                    // Computed by DeepCTR-Torch, never used (ONNX exporters drop it altogether).
                    _ = try dnn("shared_gate_dnn.\(l)", activation: activation, keys: &keys)
                    _ = try final("shared_gate_dnn_final_layer.\(l).weight", keys: &keys)
                    notes.append(ImportNote(.ignored, "the last level's shared gate (computed by DeepCTR-Torch, never used)"))
                }
                pleLevels.append(
                    PLELevel(specificExperts: specificExperts, sharedExperts: sharedExperts, specificGates: gates, sharedGate: sharedGate))
            }
            var towers: [MLP] = []
            for t in tasks.indices {
                towers.append(
                    try tower(t, dnnPrefix: "tower_dnn.\(t)", finalKey: "tower_dnn_final_layer.\(t).weight", keys: &keys, builder: &builder)
                )
            }
            architecture = Architecture(type: .ple, levels: pleLevels, towers: towers)
            notes.append(ImportNote(.inferred, "\(levels) levels, \(specific) specific experts per task, \(shared) shared experts"))
        case "sharedbottom", "shared_bottom":
            let bottom = try builder.mlp(
                "bottom", try dnn("bottom_dnn", activation: activation, dims: try args.ints("bottom_dnn_hidden_units"), keys: &keys))
            var towers: [MLP] = []
            for t in tasks.indices {
                towers.append(
                    try tower(t, dnnPrefix: "tower_dnn.\(t)", finalKey: "tower_dnn_final_layer.\(t).weight", keys: &keys, builder: &builder)
                )
            }
            architecture = Architecture(type: .sharedBottom, bottom: bottom, towers: towers)
        case "esmm":
            let esmm = try CheckpointConverter.esmmTasks(try args.strings("task_names"), conversion: conversion)
            tasks = esmm.tasks
            let ctr = try tower(0, dnnPrefix: "ctr_dnn", finalKey: "ctr_dnn_final_layer.weight", keys: &keys, builder: &builder)
            let cvr = try tower(1, dnnPrefix: "cvr_dnn", finalKey: "cvr_dnn_final_layer.weight", keys: &keys, builder: &builder)
            architecture = Architecture(type: .esmm, towers: [ctr, cvr])
            outputs = esmm.outputs
            biasKeys = ["out.bias", "out.bias"]
            notes.append(
                ImportNote(
                    .inferred,
                    "one prediction bias (out.bias) shared by the ctr and cvr heads; outputs "
                        + "\(esmm.outputs.map(\.name).joined(separator: ", "))"
                ))
        default:
            throw .unsupported(path: conversion.file, reason: "DeepCTR-Torch model '\(conversion.model)' (MMOE, PLE, ESMM, SharedBottom)")
        }
        for (t, key) in biasKeys.enumerated() { try builder.put(try keys.take(key, shape: [1]), TensorNames.headBias(t)) }
        return ModelSpec(
            name: conversion.model, tables: tables, features: features, concat: concat, architecture: architecture,
            tasks: tasks.map { TaskHead(name: $0.name, head: $0.head, predictionBias: true) }, outputs: outputs,
            metadata: ["source_framework": "deepctr-torch", "source_model": conversion.model])
    }
}
