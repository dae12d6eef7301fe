import MMoECore

/// torch-rechub multi-task models (`MMOE`, `PLE`, `ESMM`, `SharedBottom`).
///
/// Conventions (see `Docs/guides/torch-rechub.md`): tables `embedding.embed_dict.<feature>`;
/// input = every sparse/sequence embedding in feature order, then every dense value; MLPs are
/// `Linear → BatchNorm1d(eps 1e-5) → activation → Dropout` at `mlp.<4i>..<4i+3>`, a final
/// `Linear(., 1)` at `mlp.<4n>`; gates are `Linear → BatchNorm1d → Softmax`; sequence masks
/// compare with `padding_idx` (or -1), mean pooling divides by count + 1e-16.
struct RechubImporter {
    let conversion: ConversionSpec
    let path: String

    /// An MLP at `<prefix>.mlp.*` whose hidden dims must equal `dims` when given.
    func mlp(_ prefix: String, params: JSONObject?, outputLayer: Bool, keys: inout CheckpointKeys, notes: inout [ImportNote])
        throws(ImportError) -> [LayerPart]
    {
        params?.acceptUnused(["dropout"])
        let parts = try mlp(
            prefix, activation: try params?.string("activation") ?? "relu", outputLayer: outputLayer, keys: &keys, notes: &notes)
        try checkDims(try params?.ints("dims"), parts, dropLast: outputLayer, what: prefix, path: path)
        return parts
    }

    /// An MLP at `<prefix>.mlp.*`. `activation` is the args' name; parameters found in the
    /// checkpoint (PReLU weight, Dice alpha) decide where they exist.
    func mlp(_ prefix: String, activation: String, outputLayer: Bool, keys: inout CheckpointKeys, notes: inout [ImportNote])
        throws(ImportError) -> [LayerPart]
    {
        var parts: [LayerPart] = []
        var i = 0
        func key(_ index: Int, _ name: String) -> String { "\(prefix).mlp.\(index).\(name)" }
        // A hidden layer has its BatchNorm1d at mlp.<4i+1>, unless an ONNX exporter folded the
        // batch norm into the linear: then every linear is hidden except a last output layer.
        func isHidden(_ i: Int, keys: CheckpointKeys) -> Bool {
            guard keys.has(key(4 * i, "weight")) else { return false }
            if keys.has(key(4 * i + 1, "running_mean")) { return true }
            return keys.format == "onnx" && (!outputLayer || keys.has(key(4 * (i + 1), "weight")))
        }
        while isHidden(i, keys: keys) {
            let weight = try keys.take(key(4 * i, "weight"))
            let width = weight.shape[0]
            parts.append(.linear(weight: weight, bias: try keys.take(key(4 * i, "bias"), shape: [width])))
            if keys.has(key(4 * i + 1, "running_mean")) {
                parts.append(
                    .batchNorm(
                        eps: 1e-5, weight: try keys.take(key(4 * i + 1, "weight"), shape: [width]),
                        bias: try keys.take(key(4 * i + 1, "bias"), shape: [width]),
                        mean: try keys.take(key(4 * i + 1, "running_mean"), shape: [width]),
                        variance: try keys.take(key(4 * i + 1, "running_var"), shape: [width])))
            }
            if keys.has(key(4 * i + 2, "weight")) {
                parts.append(.prelu(try keys.take(key(4 * i + 2, "weight"), shape: [1])))
            } else if keys.has(key(4 * i + 2, "alpha")) {
                parts.append(.dice(.rechub, eps: 1e-3, alpha: try keys.take(key(4 * i + 2, "alpha"), shape: [1]), normalization: nil))
            } else {
                switch activation.lowercased() {
                case "relu": parts.append(.plain(.relu))
                case "sigmoid": parts.append(.plain(.sigmoid))
                case "leakyrelu": parts.append(.plain(.leakyRelu(slope: 0.01)))
                case "softmax": break  // gates: the mixture applies the softmax
                case "prelu", "dice":
                    throw .mismatch(
                        path: path,
                        reason: "\(prefix): activation \(activation) but the checkpoint has no parameters for it at mlp.\(4 * i + 2)")
                default:
                    throw .unsupported(path: conversion.file, reason: "torch-rechub activation '\(activation)'")
                }
            }
            i += 1
        }
        if keys.has(key(4 * i, "weight")) {
            guard outputLayer else {
                throw .mismatch(path: path, reason: "\(prefix) has an output layer at mlp.\(4 * i) where none was expected")
            }
            let weight = try keys.take(key(4 * i, "weight"))
            parts.append(.linear(weight: weight, bias: try keys.take(key(4 * i, "bias"), shape: [weight.shape[0]])))
        } else if outputLayer {
            throw .mismatch(path: path, reason: "\(prefix) has no output layer at mlp.\(4 * i)")
        }
        guard !parts.isEmpty else { throw .mismatch(path: path, reason: "no layers found under '\(prefix).mlp'") }
        return parts
    }

    mutating func build(keys: inout CheckpointKeys, builder: inout CanonicalBuilder, notes: inout [ImportNote]) throws(ImportError)
        -> ModelSpec
    {
        let convention = CheckpointConverter.InputConvention(
            tableKey: { "embedding.embed_dict.\($0).weight" }, owner: { $0.sharedWith ?? $0.name }, defaultPooling: "mean",
            defaultPadding: -1,
            meanEpsilon: 1e-16, emptyMax: 0, defaultMaxLength: 256)
        let (tables, features) = try CheckpointConverter.buildInputs(
            conversion.features, convention: convention, keys: &keys, builder: &builder, notes: &notes, path: path)
        // Embeddings first (feature order), then dense values.
        let concat = features.filter { $0.kind != .dense }.map(\.name) + features.filter { $0.kind == .dense }.map(\.name)
        let args = conversion.args
        let expertParams = try args.object("expert_params")
        let towerParams = try args.objects("tower_params_list")
        let model = conversion.model.lowercased()
        let architecture: Architecture
        var tasks: [(name: String, head: HeadKind)]
        var outputs: [OutputSpec]? = nil
        switch model {
        case "mmoe":
            let experts = keys.count { "experts.\($0).mlp.0.weight" }
            if let n = try args.int("n_expert"), n != experts {
                throw .mismatch(path: path, reason: "n_expert is \(n) but the checkpoint has \(experts) experts")
            }
            tasks = try CheckpointConverter.tasks(
                conversion, names: nil, types: try args.strings("task_types"), count: keys.count { "towers.\($0).mlp.0.weight" }, path: path
            )
            var expertMLPs: [MLP] = []
            for e in 0..<experts {
                expertMLPs.append(
                    try builder.mlp(
                        "experts.\(e)", try mlp("experts.\(e)", params: expertParams, outputLayer: false, keys: &keys, notes: &notes)))
            }
            var gates: [MLP] = []
            for t in tasks.indices {
                gates.append(
                    try builder.mlp(
                        "gates.\(t)", try mlp("gates.\(t)", activation: "softmax", outputLayer: false, keys: &keys, notes: &notes)))
            }
            var towers: [MLP] = []
            for t in tasks.indices {
                towers.append(
                    try builder.mlp(
                        "towers.\(t)", try mlp("towers.\(t)", params: towerParams?[safe: t], outputLayer: true, keys: &keys, notes: &notes))
                )
            }
            architecture = Architecture(type: .mmoe, experts: expertMLPs, gates: gates, towers: towers)
            notes.append(ImportNote(.inferred, "\(experts) experts, \(tasks.count) tasks"))
        case "ple":
            let levels = keys.count { "cgc_layers.\($0).gates_specific.0.mlp.0.weight" }
            tasks = try CheckpointConverter.tasks(
                conversion, names: nil, types: try args.strings("task_types"), count: keys.count { "towers.\($0).mlp.0.weight" }, path: path
            )
            let shared = keys.count { "cgc_layers.0.experts_shared.\($0).mlp.0.weight" }
            let specific = keys.count { "cgc_layers.0.experts_specific.\($0).mlp.0.weight" } / max(tasks.count, 1)
            for (name, value) in [("n_level", levels), ("n_expert_shared", shared), ("n_expert_specific", specific)] {
                if let given = try args.int(name), given != value {
                    throw .mismatch(path: path, reason: "\(name) is \(given) but the checkpoint has \(value)")
                }
            }
            var pleLevels: [PLELevel] = []
            for l in 0..<levels {
                let base = "cgc_layers.\(l)"
                var specificExperts: [[MLP]] = []
                for t in tasks.indices {
                    var list: [MLP] = []
                    for j in 0..<specific {
                        let index = t * specific + j
                        list.append(
                            try builder.mlp(
                                "levels.\(l).specific_experts.\(t).\(j)",
                                try mlp(
                                    "\(base).experts_specific.\(index)", params: expertParams, outputLayer: false, keys: &keys,
                                    notes: &notes)))
                    }
                    specificExperts.append(list)
                }
                var sharedExperts: [MLP] = []
                for k in 0..<shared {
                    sharedExperts.append(
                        try builder.mlp(
                            "levels.\(l).shared_experts.\(k)",
                            try mlp("\(base).experts_shared.\(k)", params: expertParams, outputLayer: false, keys: &keys, notes: &notes)))
                }
                var gates: [MLP] = []
                for t in tasks.indices {
                    gates.append(
                        try builder.mlp(
                            "levels.\(l).specific_gates.\(t)",
                            try mlp("\(base).gates_specific.\(t)", activation: "softmax", outputLayer: false, keys: &keys, notes: &notes)))
                }
                var sharedGate: MLP? = nil
                if l < levels - 1 {
                    sharedGate = try builder.mlp(
                        "levels.\(l).shared_gate",
                        try mlp("\(base).gate_shared", activation: "softmax", outputLayer: false, keys: &keys, notes: &notes))
                }
                pleLevels.append(
                    PLELevel(specificExperts: specificExperts, sharedExperts: sharedExperts, specificGates: gates, sharedGate: sharedGate))
            }
            var towers: [MLP] = []
            for t in tasks.indices {
                towers.append(
                    try builder.mlp(
                        "towers.\(t)", try mlp("towers.\(t)", params: towerParams?[safe: t], outputLayer: true, keys: &keys, notes: &notes))
                )
            }
            architecture = Architecture(type: .ple, levels: pleLevels, towers: towers)
            notes.append(ImportNote(.inferred, "\(levels) levels, \(specific) specific experts per task, \(shared) shared experts"))
        case "sharedbottom", "shared_bottom":
            tasks = try CheckpointConverter.tasks(
                conversion, names: nil, types: try args.strings("task_types"), count: keys.count { "towers.\($0).mlp.0.weight" }, path: path
            )
            let bottom = try builder.mlp(
                "bottom", try mlp("bottom_mlp", params: try args.object("bottom_params"), outputLayer: false, keys: &keys, notes: &notes))
            var towers: [MLP] = []
            for t in tasks.indices {
                towers.append(
                    try builder.mlp(
                        "towers.\(t)", try mlp("towers.\(t)", params: towerParams?[safe: t], outputLayer: true, keys: &keys, notes: &notes))
                )
            }
            architecture = Architecture(type: .sharedBottom, bottom: bottom, towers: towers)
        case "esmm":
            tasks = [("ctr", .sigmoid), ("cvr", .sigmoid)]
            let ctr = try builder.mlp(
                "towers.0", try mlp("tower_ctr", params: try args.object("ctr_params"), outputLayer: true, keys: &keys, notes: &notes))
            let cvr = try builder.mlp(
                "towers.1", try mlp("tower_cvr", params: try args.object("cvr_params"), outputLayer: true, keys: &keys, notes: &notes))
            architecture = Architecture(type: .esmm, towers: [ctr, cvr])
            outputs = [OutputSpec(name: "cvr"), OutputSpec(name: "ctr"), OutputSpec(name: "ctcvr", product: ["ctr", "cvr"])]
            if features.contains(where: { $0.kind == .dense }) {
                throw .unsupported(
                    path: conversion.file, reason: "torch-rechub ESMM embeds user and item features only; dense features are not part of it"
                )
            }
        case "aitm":
            // Every AITM task is binary (its forward applies a sigmoid to each tower).
            let count = keys.count { "bottoms.\($0).mlp.0.weight" }
            try CheckpointConverter.checkCount(args, "n_task", count, path: path)
            tasks = try CheckpointConverter.tasks(conversion, names: nil, types: nil, count: count, path: path)
            guard tasks.count == count, tasks.allSatisfy({ $0.head == .sigmoid }) else {
                throw .mismatch(
                    path: conversion.file,
                    reason:
                        "AITM has \(count) binary tasks in the checkpoint; the spec lists \(tasks.count) "
                        + "(\(tasks.map(\.name).joined(separator: ", ")))"
                )
            }
            let bottomParams = try args.object("bottom_params")
            var bottoms: [MLP] = []
            for t in 0..<count {
                bottoms.append(
                    try builder.mlp(
                        "bottoms.\(t)", try mlp("bottoms.\(t)", params: bottomParams, outputLayer: false, keys: &keys, notes: &notes)))
            }
            var infoGates: [MLP] = []
            for t in 0..<(count - 1) {
                // MLP(d, output_layer=False, dims=[d]): torch-rechub's defaults, ReLU and batch norm.
                infoGates.append(
                    try builder.mlp(
                        "info_gates.\(t)", try mlp("info_gates.\(t)", activation: "relu", outputLayer: false, keys: &keys, notes: &notes)))
                for (part, layer) in zip(TensorNames.attentionParts, ["q_layer", "k_layer", "v_layer"]) {
                    try builder.put(try keys.take("aits.\(t).\(layer).weight"), TensorNames.attention(t, part))
                }
            }
            var towers: [MLP] = []
            for t in 0..<count {
                towers.append(
                    try builder.mlp(
                        "towers.\(t)", try mlp("towers.\(t)", params: towerParams?[safe: t], outputLayer: true, keys: &keys, notes: &notes))
                )
            }
            architecture = Architecture(type: .aitm, bottoms: bottoms, infoGates: infoGates, towers: towers)
            notes.append(ImportNote(.inferred, "\(count) tasks, \(count - 1) attention transfers"))
        default:
            throw .unsupported(
                path: conversion.file, reason: "torch-rechub model '\(conversion.model)' (MMOE, PLE, ESMM, SharedBottom, AITM)")
        }
        return ModelSpec(
            name: conversion.model, tables: tables, features: features, concat: concat, architecture: architecture,
            tasks: tasks.map { TaskHead(name: $0.name, head: $0.head) }, outputs: outputs,
            metadata: ["source_framework": "torch-rechub", "source_model": conversion.model])
    }
}
